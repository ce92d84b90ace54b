package peerbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Main is the command line of cmd/hsmpeerbench. Outside a namespace it
// starts itself again in one (see Isolated) and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hsmpeerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	var ops string
	var verbose bool
	fs.StringVar(&cfg.LocalKMS, "local-kms", "", "the local-kms binary (required)")
	fs.StringVar(&cfg.Hsmbrokerd, "hsmbrokerd", "", "the hsmbrokerd binary (required)")
	fs.IntVar(&cfg.Clients, "clients", 16, "concurrent aws-sdk-go-v2 clients per side")
	fs.DurationVar(&cfg.Duration, "duration", 4*time.Second, "measured time per side and operation")
	fs.DurationVar(&cfg.Window, "window", 500*time.Millisecond, "length of one window; the sides alternate")
	fs.StringVar(&ops, "ops", "", "comma-separated operations (default all): encrypt,decrypt,gdk,sign-p256,sign-rsa")
	fs.BoolVar(&verbose, "v", false, "show the servers' output")
	fs.Func("broker-env", "NAME=VALUE added to hsmbrokerd's environment only (repeatable), e.g. GOGC=200", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=VALUE")
		}
		cfg.BrokerEnv = append(cfg.BrokerEnv, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.LocalKMS == "" || cfg.Hsmbrokerd == "" {
		fmt.Fprintln(stderr, "hsmpeerbench: --local-kms and --hsmbrokerd are required")
		return 2
	}
	if os.Getenv(EnvIsolated) == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "hsmpeerbench:", err)
			return 1
		}
		cmd := Isolated(ctx, self, args...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			fmt.Fprintf(stderr, "hsmpeerbench: %v: %v\n", ErrNoNamespace, err)
			return 1
		}
		return 0
	}
	if err := LoopbackUp(); err != nil {
		fmt.Fprintln(stderr, "hsmpeerbench:", err)
		return 1
	}
	var err error
	if cfg.Ops, err = ParseOps(ops); err != nil {
		fmt.Fprintln(stderr, "hsmpeerbench:", err)
		return 2
	}
	cfg.Log = stderr
	if !verbose {
		cfg.Log = progressOnly{stderr}
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "hsmpeerbench:", err)
		return 1
	}
	if err := res.WriteText(stdout); err != nil {
		return 1
	}
	return 0
}

// progressOnly passes on peerbench's own lines and drops the servers'.
type progressOnly struct{ w io.Writer }

func (p progressOnly) Write(b []byte) (int, error) {
	if strings.HasPrefix(string(b), "peerbench: ") {
		return p.w.Write(b)
	}
	return len(b), nil
}

// ParseOps reads a comma-separated list of operation names.
func ParseOps(s string) ([]Op, error) {
	if s == "" {
		return AllOps, nil
	}
	names := map[string]Op{"encrypt": Encrypt4K, "decrypt": Decrypt4K, "gdk": GenDataKey, "sign-p256": SignP256, "sign-rsa": SignRSA}
	var ops []Op
	for _, n := range strings.Split(s, ",") {
		op, ok := names[strings.TrimSpace(n)]
		if !ok {
			return nil, fmt.Errorf("unknown operation %q (encrypt, decrypt, gdk, sign-p256, sign-rsa)", n)
		}
		ops = append(ops, op)
	}
	return ops, nil
}
