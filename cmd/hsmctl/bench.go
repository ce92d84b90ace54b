package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/bench"
	"github.com/spf13/cobra"
)

// defaultModule is where Debian's softhsm2 package installs SoftHSM.
const defaultModule = "/usr/lib/softhsm/libsofthsm2.so"

func (a *app) benchCommand() *cobra.Command {
	var (
		cfg                         bench.Config
		op                          string
		baseline, createDomainKey   bool
		module, label, serial       string
		pinFile, pinEnv             string
		metricsAddr                 string
		baselinePool                int
		concurrency, keyCount, size int
		duration, window            time.Duration
	)
	ops := make([]string, len(bench.Ops))
	for i, o := range bench.Ops {
		ops[i] = string(o)
	}
	cmd := &cobra.Command{
		Use:   "bench [--op OP] [--concurrency N] [--duration D] [--keys N] [--size BYTES] [--baseline-direct ...]",
		Short: "Measure throughput and latency of the broker, optionally against the token itself",
		Long: `bench runs --concurrency clients, each with a connection of its own, doing one
operation in a loop against the broker (the first endpoint that answers)
for --duration, and prints throughput and p50/p90/p99 latency of the
successful calls.

Operations: encrypt and decrypt (AES-256-GCM, --size bytes of plaintext),
sign-rsa (RSA-2048 PKCS#1 v1.5 over a SHA-256 digest), sign-p256 (ECDSA
P-256 over a digest), datakey (GenerateDataKey AES_256), and mix (the five
in turn). Setup creates --keys keys of each kind the operation needs, with
aliases alias/bench-<id>-..., and leaves them; each call picks one at
random. A run that fails once it has made keys schedules their deletion,
with the shortest waiting period the broker allows, and deletes their
aliases. bench needs a client certificate whose role may create and
delete keys.

--baseline-direct also runs the same operations directly on a PKCS#11
token, through the partition layer the broker itself uses (the same
mechanisms, key objects and session pool of --baseline-pool sessions;
no gRPC, TLS, validation, state lookup or ciphertext format), in the same
run: the two sides take turns in --window windows so that both see the
same machine, and the ratio of their throughputs is printed. The token is
named by --module and --token-label (or --token-serial); its PIN comes
from --pin-file (a file of mode 0600) or the environment variable named by
--pin-env, never from the command line. The token must hold an hsmbroker
domain key: a broker node's own token does (SoftHSM: set SOFTHSM2_CONF to
the node's softhsm2.conf), and the baseline adds only session objects to
it. For a scratch token, --baseline-create-domain-key makes one. The
token, its PIN and its domain key are checked before any broker key is
made.

CPU µs/op is the CPU time each side used per successful operation: this
process's (getrusage; for the baseline it includes the token's work when
the PKCS#11 library runs in-process, as SoftHSM does) plus, with
--metrics-addr (default $HSMBROKER_METRICS_ADDR, which dev.env and the
local cluster's env files set), the broker's, read from its
process_cpu_seconds_total. Where clients, broker and token share a
machine, the throughput ratio at high concurrency follows the ratio of
these figures.

With -o json: {"op", "size", "keys", "concurrency", "durationSeconds",
"windowMs", "broker": {"ops", "errors", "opsPerSecond", "p50Ms", "p90Ms",
"p99Ms", "firstError", "clientCpuUsPerOp", "brokerCpuUsPerOp"}, "direct":
{...}, "ratio"}; ratio is the broker's throughput over the baseline's.`,
		Example: `  hsmctl bench --op encrypt --concurrency 32 --duration 20s
  SOFTHSM2_CONF=$DIR/softhsm/softhsm2.conf hsmctl bench --op sign-rsa --concurrency 32 \
      --baseline-direct --token-label hsmbroker-dev --pin-file $DIR/softhsm/user.pin`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			cfg.Op = bench.Op(op)
			switch {
			case !strings.Contains(" "+strings.Join(ops, " ")+" ", " "+op+" "):
				return usageErr(fmt.Sprintf("invalid --op %q: valid values are %s", op, strings.Join(ops, ", ")))
			case concurrency < 1 || keyCount < 1:
				return usageErr("--concurrency and --keys must be at least 1")
			case size < 1 || size > 4096:
				return usageErr("--size must be from 1 to 4096 bytes")
			case duration <= 0:
				return usageErr("--duration must be positive")
			case window <= 0:
				return usageErr("--window must be positive")
			case window > duration:
				which := ""
				if !cmd.Flags().Changed("window") {
					which = " (the default)"
				}
				return usageErr(fmt.Sprintf("--duration %s is shorter than --window %s%s: the duration must be at least the window; lengthen --duration or shorten --window",
					duration, window, which))
			case !baseline && (label != "" || serial != "" || pinFile != "" || createDomainKey):
				return usageErr("--token-label, --token-serial, --pin-file and --baseline-create-domain-key go with --baseline-direct")
			case baseline && label == "" && serial == "":
				return usageErr("--baseline-direct needs --token-label or --token-serial")
			}
			cfg.Concurrency, cfg.Keys, cfg.Size, cfg.Duration, cfg.Window = concurrency, keyCount, size, duration, window
			if !cmd.Flags().Changed("metrics-addr") {
				metricsAddr = os.Getenv("HSMBROKER_METRICS_ADDR")
			}
			if !cmd.Flags().Changed("module") {
				module = firstNonEmpty(os.Getenv("HSMBROKER_PKCS11_MODULE"), defaultModule)
			}
			var err error
			if cfg.Client, err = a.clientConfig(); err != nil {
				return err
			}
			cfg.Progress = a.stderr
			cfg.MetricsAddr = metricsAddr
			if baseline {
				cfg.Direct = &bench.DirectConfig{Module: module, TokenLabel: label, TokenSerial: serial, PINFile: pinFile, PINEnv: pinEnv, PoolSize: baselinePool,
					Logger: slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
				cfg.CreateDomainKey = createDomainKey
			}
			res, err := bench.Run(a.ctx, cfg)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, res)
			}
			return res.WriteText(a.stdout)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&op, "op", "encrypt", "operation: "+strings.Join(ops, ", "))
	fl.IntVar(&concurrency, "concurrency", 1, "concurrent clients, each with its own connection")
	fl.DurationVar(&duration, "duration", 10*time.Second, "how long each side is measured")
	fl.DurationVar(&window, "window", 500*time.Millisecond, "how long one side runs before the other takes over")
	fl.IntVar(&keyCount, "keys", 1, "keys of each kind to spread the calls over")
	fl.IntVar(&size, "size", 4096, "plaintext bytes of encrypt and decrypt")
	// The environment is read when the command runs, so that the help
	// shows the one default it describes, not also the value found.
	fl.StringVar(&metricsAddr, "metrics-addr", "",
		"the broker's metrics address host:port, to read its CPU time per operation; bench refuses to start if it does not answer (default $HSMBROKER_METRICS_ADDR)")
	fl.BoolVar(&baseline, "baseline-direct", false, "also run the operations directly on a PKCS#11 token, and print the ratio")
	fl.StringVar(&module, "module", "", "baseline: PKCS#11 library (default $HSMBROKER_PKCS11_MODULE, else "+defaultModule+")")
	fl.StringVar(&label, "token-label", "", "baseline: label of the token")
	fl.StringVar(&serial, "token-serial", "", "baseline: serial number of the token")
	fl.StringVar(&pinFile, "pin-file", "", "baseline: file (mode 0600) holding the token's user PIN")
	fl.StringVar(&pinEnv, "pin-env", "HSMBROKER_PIN", "baseline: environment variable holding the PIN, when there is no --pin-file")
	fl.IntVar(&baselinePool, "baseline-pool", 8, "baseline: PKCS#11 sessions (the broker's default pool is 8)")
	fl.BoolVar(&createDomainKey, "baseline-create-domain-key", false, "baseline: create a domain key in a token that has none (scratch tokens only)")
	return cmd
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
