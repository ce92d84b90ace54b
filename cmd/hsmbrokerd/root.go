package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// globalFlags are the flags every command takes.
type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "hsmbrokerd",
		Short: "HSM-backed key service with a gRPC API and Raft replication",
		Long: `hsmbrokerd fronts a PKCS#11 HSM partition (SafeNet Luna, AWS CloudHSM,
SoftHSMv2, ...) and serves KMS-style keys over gRPC with mutual TLS. Nodes,
each with its own partition, form a Raft cluster that replicates key
metadata and wrapped key blobs; key material exists only inside the HSMs.

Every node also serves plain HTTP on its metrics address: /metrics
(Prometheus), /healthz (the process is up) and /readyz (the HSM answers and
a Raft leader is known).

Environment: unless set, GOGC defaults to 300 and GOMAXPROCS to half the
CPUs Go would use (at least one); docs/OPERATIONS.md says why and when to
change them.`,
		Example: `  # A local single-node broker on a SoftHSM token, for development:
  hsmbrokerd dev --data-dir ./.hsmbroker-dev

  # A production node:
  hsmbrokerd serve --config /etc/hsmbroker/hsmbrokerd.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "",
		"least severe log level written: debug, info, warn or error (default info, or log.level of the config file)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "",
		"log format: text or json (default text for dev, json for serve, or log.format of the config file)")
	root.AddCommand(newDevCommand(g, stderr), newServeCommand(g, stderr), newVersionCommand(stdout),
		newInitNodeCommand(g, stdout, stderr), newAccessKeyCommand(stdout), newRestoreCommand(g, stdout, stderr))
	return root
}

// newLogger makes the daemon's logger. level and format are the effective
// choices (flag, else config, else the command's default).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "", "info":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, usage(fmt.Errorf("--log-level %q: want debug, info, warn or error", level))
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, usage(fmt.Errorf("--log-format %q: want text or json", format))
	}
}

// firstSet returns the first non-empty value.
func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
