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
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
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
		if hsm.PINRefused(err) {
			fmt.Fprintf(os.Stderr, "hsmbrokerd: the HSM refused the PIN: check hsm.pin_file (or hsm.pin_env); exiting with status %d, which deploy/hsmbrokerd.service does not restart, because repeated wrong PINs lock HSM partitions\n", exitPINRefused)
			os.Exit(exitPINRefused)
		}
		os.Exit(1)
	}
}

// exitPINRefused is the exit status of a daemon whose HSM refused its PIN
// (RestartPreventExitStatus in deploy/hsmbrokerd.service): every other
// failure exits 1 and is retried.
const exitPINRefused = 3

// run executes the command line args; the daemon commands return when ctx
// ends and the shutdown is complete.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
