// Command hsmbrokerd is the hsmbroker daemon: it fronts a PKCS#11 HSM
// partition and serves KMS-style keys over gRPC, replicating its state with
// Raft.
//
//	hsmbrokerd dev --data-dir DIR       # single node on a SoftHSM token it makes
//	hsmbrokerd serve --config FILE      # production, from a configuration file
//	hsmbrokerd version
//
// This package only wires: flags and files in, the broker, cluster and hsm
// packages do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/spf13/cobra"
)

func main() {
	tuneRuntime()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal starts a clean shutdown, a second one kills
	// the process the default way.
	go func() { <-ctx.Done(); stop() }()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hsmbrokerd: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(exitUsage)
		}
		if hsm.PINRefused(err) {
			fmt.Fprintf(os.Stderr, "hsmbrokerd: the HSM refused the PIN: check hsm.pin_file (or hsm.pin_env); exiting with status %d, which deploy/hsmbrokerd.service does not restart, because repeated wrong PINs lock HSM partitions\n", exitPINRefused)
			os.Exit(exitPINRefused)
		}
		os.Exit(1)
	}
}

// Exit statuses besides 0 and 1 (any other failure, which
// deploy/hsmbrokerd.service retries).
const (
	// exitUsage: a bad command line (an unknown command or flag, a missing
	// or malformed argument), as hsmctl's.
	exitUsage = 2
	// exitPINRefused: the HSM refused the PIN (RestartPreventExitStatus in
	// deploy/hsmbrokerd.service).
	exitPINRefused = 3
)

// usageError is a bad command line: exit status exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usage marks err as a bad command line.
func usage(err error) error { return &usageError{err} }

// run executes the command line args; the daemon commands return when ctx
// ends and the shutdown is complete. An error before the command's own
// work starts (cobra's parsing and checking of the command line) is a
// usage error, which names the command's --help.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	started := false
	// Cobra checks required flags after the PreRun hooks, so the start of
	// the work is marked in each command's RunE.
	var mark func(c *cobra.Command)
	mark = func(c *cobra.Command) {
		if f := c.RunE; f != nil {
			c.RunE = func(cmd *cobra.Command, args []string) error { started = true; return f(cmd, args) }
		}
		for _, sub := range c.Commands() {
			mark(sub)
		}
	}
	mark(root)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ue *usageError
	if err != nil && (!started || errors.As(err, &ue)) {
		return usage(fmt.Errorf("%w\nRun '%s --help' for usage", err, cmd.CommandPath()))
	}
	return err
}
