package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/drill"
	"github.com/spf13/cobra"
)

// drillFlags are the flags every drill takes.
type drillFlags struct {
	rounds, clients     int
	steady, hold, wait  time.Duration
	plotFile, traceFile string
	force               bool
}

func (f *drillFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.rounds, "rounds", 3, "how many times to take it away and bring it back")
	fl.IntVar(&f.clients, "clients", 4, "concurrent clients running the workload")
	fl.DurationVar(&f.steady, "steady", 5*time.Second, "load before each fault and after each recovery (the before and after windows)")
	fl.DurationVar(&f.hold, "hold", 2*time.Second, "how long a killed node or a lost HSM stays away once the cluster has noticed")
	fl.DurationVar(&f.wait, "wait", time.Minute, "longest wait for a new leader, a first write, a node to stop or resume serving, or a command")
	fl.StringVar(&f.plotFile, "plot", "", "draw latency and errors over time, fault windows marked, to this new SVG file (mode 0644; an existing file is refused unless --force)")
	fl.StringVar(&f.traceFile, "trace", "", "write every client operation (time, latency, operation, code) to this new file, one JSON object a line (mode 0644; an existing file is refused unless --force)")
	fl.BoolVar(&f.force, "force", false, "replace the --plot and --trace files if they exist")
}

func (f *drillFlags) check() error {
	switch {
	case f.rounds < 1:
		return usageErr("--rounds must be at least 1")
	case f.clients < 1:
		return usageErr("--clients must be at least 1")
	case f.steady <= 0 || f.hold <= 0 || f.wait <= 0:
		return usageErr("--steady, --hold and --wait must be positive")
	case f.plotFile != "" && !strings.EqualFold(filepath.Ext(f.plotFile), ".svg"):
		return usageErr(fmt.Sprintf("--plot %s: the plot is SVG; name a .svg file", f.plotFile))
	}
	// Refused now rather than after the drill has run.
	for _, file := range []string{f.plotFile, f.traceFile} {
		if file == "" {
			continue
		}
		if err := checkOutPath(file, f.force); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) drillCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "drill",
		Short: "Prove the cluster survives losing its leader or an HSM, under load",
		Long: `drill runs a steady mixed workload (key creation, encrypt and decrypt, ECDSA
signatures, data keys) from several clients against a live cluster, takes
something away, brings it back, and repeats. It reports, per round, how
long clients were affected, and at the end checks that every key and
ciphertext the cluster acknowledged during the drill still works on every
node.

Give one endpoint (or several) as usual; the drill finds the other members
from cluster status and spreads its clients over all of them. It needs an
admin client certificate, and a cluster of at least three nodes.

The drill creates keys with aliases alias/drill-<id>-..., and leaves them:
they are the evidence. Schedule their deletion afterwards if you like.`,
	}, a.drillFailoverCommand(), a.drillHSMLossCommand())
}

func (a *app) drillFailoverCommand() *cobra.Command {
	var f drillFlags
	var mode, killCmd, startCmd string
	cmd := &cobra.Command{
		Use:   "failover --mode transfer|kill [--kill-cmd CMD --start-cmd CMD] [--rounds N]",
		Short: "Take the leader away, round after round, and measure the recovery",
		Long: `failover takes the leader away in each round and brings it back.

--mode transfer asks the leader to hand over (Raft leadership transfer), as
before planned maintenance. --mode kill runs --kill-cmd on the leader,
waits for a new leader and a first acknowledged write, keeps the node away
for --hold, then runs --start-cmd and waits until the node serves again.
Both commands are templates run with sh -c: {node} becomes the node's id,
{n} the number its id ends with, {addr} its gRPC address.

Per round the report gives: time to a new leader, time to the first write
the cluster acknowledged, time until the killed node served again, the
errors clients saw, and p50/p99 latency before, during and after the fault
(every operation, failures included, SDK retries counted in its latency).
Then the check: Lost is the number of acknowledged keys and ciphertexts
that no longer work on some node, and must be 0. Progress goes to
standard error while it runs.

With -o json: {"mode", "nodes", "clients", "startTime", "durationMs",
"rounds": [{"round", "node", "oldLeader", "newLeader", "faultStartMs",
"faultEndMs", "timeToNewLeaderMs", "timeToFirstWriteMs", "timeToRecoverMs",
"errors", "before"|"during"|"after": {"startMs", "endMs", "ops", "errors",
"p50Ms", "p99Ms", "maxMs"}}, ...], "ops", "errors", "errorKinds",
"check": {"keys", "ciphertexts", "nodes", "failures"}, "lost"}.

Exit status 1 when the drill could not finish (no new leader within --wait,
a command failed) or anything was lost.`,
		Example: `  hsmctl drill failover --mode transfer --rounds 5
  hsmctl drill failover --mode kill --rounds 3 \
      --kill-cmd 'deploy/local-cluster.sh kill /tmp/hsmc {n}' \
      --start-cmd 'deploy/local-cluster.sh start /tmp/hsmc {n}' --plot failover.svg
  hsmctl drill failover --mode kill --kill-cmd 'ssh {node} sudo systemctl kill -s KILL hsmbrokerd' \
      --start-cmd 'ssh {node} sudo systemctl start hsmbrokerd' -o json > drill.json`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if mode == "" {
				return usageErr("--mode is required: transfer (hand leadership over) or kill (with --kill-cmd and --start-cmd)")
			}
			cfg := drill.Config{Mode: drill.Mode(mode)}
			// Progress lines and the commands' output share standard error.
			progress := drill.SyncWriter(a.stderr)
			switch cfg.Mode {
			case drill.ModeTransfer:
				if killCmd != "" || startCmd != "" {
					return usageErr("--kill-cmd and --start-cmd go with --mode kill")
				}
			case drill.ModeKill:
				if killCmd == "" || startCmd == "" {
					return usageErr("--mode kill needs --kill-cmd and --start-cmd")
				}
				var err error
				if cfg.Take, err = drill.Command(killCmd, progress); err != nil {
					return usageErr("--kill-cmd: " + err.Error())
				}
				if cfg.Restore, err = drill.Command(startCmd, progress); err != nil {
					return usageErr("--start-cmd: " + err.Error())
				}
			default:
				return usageErr(fmt.Sprintf("invalid --mode %q: valid values are transfer, kill", mode))
			}
			return a.runDrill(cmd, cfg, f, progress)
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVar(&mode, "mode", "", "how the leader is taken away: transfer or kill (required)")
	cmd.Flags().StringVar(&killCmd, "kill-cmd", "", "with --mode kill: command template that kills a node ({node}, {n}, {addr})")
	cmd.Flags().StringVar(&startCmd, "start-cmd", "", "with --mode kill: command template that starts it again")
	return cmd
}

func (a *app) drillHSMLossCommand() *cobra.Command {
	var f drillFlags
	var offCmd, onCmd, node string
	cmd := &cobra.Command{
		Use:   "hsm-loss --hsm-off-cmd CMD --hsm-on-cmd CMD [--node ID] [--rounds N]",
		Short: "Take one node's HSM away, round after round, and measure the recovery",
		Long: `hsm-loss makes one node's HSM unavailable with --hsm-off-cmd, keeps it away
for --hold once the node has noticed, gives it back with --hsm-on-cmd and
waits until the node serves again. Without --node it takes a follower's
HSM, another one each round. The node itself keeps running: it must turn
unready (clients move to the other nodes) and come back by itself.

The commands are templates run with sh -c: {node} becomes the node's id,
{n} the number its id ends with, {addr} its gRPC address. What takes an
HSM away depends on the HSM: block the network path to a network HSM, stop
its client daemon, or, for a SoftHSM test cluster whose daemons run with
HSMBROKER_DRILL_HSM_FAULT_FILE set, create and remove that file
(docs/OPERATIONS.md).

Per round the report gives the time until the node reported itself not
ready, the time to the first acknowledged write, the time until it served
again, the errors clients saw and p50/p99 latency before, during and
after; then the check of everything acknowledged (Lost must be 0). -o json
gives the same object as drill failover, with "timeToNotReadyMs" instead
of the leader times. Exit status 1 when the drill could not finish or
anything was lost.`,
		Example: `  hsmctl drill hsm-loss --rounds 2 \
      --hsm-off-cmd 'touch /tmp/hsmc/{node}.hsm-down' \
      --hsm-on-cmd 'rm /tmp/hsmc/{node}.hsm-down' --plot hsm-loss.svg`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if offCmd == "" || onCmd == "" {
				return usageErr("hsm-loss needs --hsm-off-cmd and --hsm-on-cmd")
			}
			cfg := drill.Config{Mode: drill.ModeHSMLoss, Target: node}
			progress := drill.SyncWriter(a.stderr)
			var err error
			if cfg.Take, err = drill.Command(offCmd, progress); err != nil {
				return usageErr("--hsm-off-cmd: " + err.Error())
			}
			if cfg.Restore, err = drill.Command(onCmd, progress); err != nil {
				return usageErr("--hsm-on-cmd: " + err.Error())
			}
			return a.runDrill(cmd, cfg, f, progress)
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVar(&offCmd, "hsm-off-cmd", "", "command template that makes a node's HSM unavailable ({node}, {n}, {addr}) (required)")
	cmd.Flags().StringVar(&onCmd, "hsm-on-cmd", "", "command template that makes it available again (required)")
	cmd.Flags().StringVar(&node, "node", "", "the node whose HSM is taken (default: a follower, another each round)")
	return cmd
}

// errLost makes a drill that lost data exit 1 after printing its report.
var errLost = errors.New("the drill lost acknowledged data")

func (a *app) runDrill(cmd *cobra.Command, cfg drill.Config, f drillFlags, progress io.Writer) error {
	clientCfg, err := a.clientConfig()
	if err != nil {
		return err
	}
	cfg.Client = clientCfg
	if f := cmd.Flag("timeout"); f == nil || !f.Changed {
		cfg.Client.Timeout = 0 // the drill's own per-attempt default
	}
	cfg.Rounds, cfg.Clients, cfg.Steady, cfg.Hold, cfg.Timeout = f.rounds, f.clients, f.steady, f.hold, f.wait
	cfg.Progress = progress
	rep, runErr := drill.Run(a.ctx, cfg)
	if rep == nil {
		return runErr
	}
	if f.plotFile != "" {
		if err := writeWith(f.plotFile, f.force, rep.WriteSVG); err != nil {
			return fmt.Errorf("write the plot: %w", err)
		}
	}
	if f.traceFile != "" {
		if err := writeWith(f.traceFile, f.force, rep.WriteTrace); err != nil {
			return fmt.Errorf("write the trace: %w", err)
		}
	}
	if a.json() {
		err = printJSON(a.stdout, rep)
	} else {
		err = rep.WriteText(a.stdout)
	}
	if err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("drill: %w", runErr)
	}
	if rep.Lost > 0 {
		return errLost
	}
	return nil
}

// writeWith creates path (see outFile) and fills it with write.
func writeWith(path string, force bool, write func(w io.Writer) error) error {
	out, err := createOutFile(path, publicFileMode, force)
	if err != nil {
		return err
	}
	if err := write(out); err != nil {
		out.Abort()
		return err
	}
	return out.Commit()
}
