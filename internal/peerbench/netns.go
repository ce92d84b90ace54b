package peerbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvIsolated is set in a process that Isolated started.
const EnvIsolated = "HSMBROKER_PEERBENCH_NETNS"

// requireLoopbackOnly refuses to start local-kms where it could be reached
// from outside: it listens on every interface and has no setting for an
// address, so it runs only in a network namespace whose one interface is
// loopback (Isolated makes one).
func requireLoopbackOnly() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("local-kms listens on every interface and this process sees %s: run the comparison through peerbench.Isolated (a network namespace with loopback only)", i.Name)
		}
	}
	return nil
}

// Isolated returns a command that runs name with args in a new user and
// network namespace, whose only interface is loopback, with EnvIsolated
// set. The process must call LoopbackUp first.
func Isolated(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	cmd.Env = append(os.Environ(), EnvIsolated+"=1")
	return cmd
}

// LoopbackUp brings up the loopback interface of a fresh network namespace.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// ErrNoNamespace is returned when a network namespace cannot be made here.
var ErrNoNamespace = errors.New("peerbench: cannot create a user and network namespace (unprivileged user namespaces disabled?)")
