package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/keys"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the operation failed, or verify found the signature invalid
	exitUsage = 2 // bad command line
)

// run is the whole program: it parses args, runs the command and returns
// the exit status. Everything it prints goes to stdout and stderr, and it
// reads os.Stdin only for `--in -`, so tests can call it in-process.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runWith(ctx, args, os.Stdin, stdout, stderr)
}

// app is one run of the program: its I/O, global flags and connection.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// Global flags.
	addr, caFile, certFile, keyFile string
	output                          string
	timeout                         time.Duration
	verbose                         bool
	// legacyKeyFile is the global --key of earlier releases, the TLS key
	// on commands that take no KMS key with --key (deprecated).
	legacyKeyFile string

	client *client.Client
	// running is set once a command's RunE starts: errors before it are
	// usage errors.
	running bool
}

func runWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if a.client != nil {
		a.client.Close()
	}
	return a.exitStatus(cmd, err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "hsmctl",
		Short: "Manage and use keys held by hsmbroker",
		Long: `hsmctl manages and uses KMS-style keys whose material lives only inside the
HSMs of an hsmbroker cluster: keys and aliases, encryption, signatures, MACs,
data keys, and envelope encryption of files of any size.

Connection. hsmctl talks gRPC with mutual TLS 1.3 to one or more brokers, taken
from the environment or from flags (flags win):
  HSMBROKER_ADDR   host:port, or a comma-separated list (--addr)
  HSMBROKER_CA     CA certificate file, PEM (--ca)
  HSMBROKER_CERT   client certificate file, PEM (--cert)
  HSMBROKER_KEY    client private key file, PEM (--tls-key)
'hsmbrokerd dev' writes these exports to <data-dir>/dev.env. With several
brokers, hsmctl moves to the next one when one is unreachable or busy.

Keys are named by key id, key ARN, alias name (alias/NAME) or alias ARN.
Commands that change a key take a key id or key ARN only. --key always names
a KMS key; the TLS client key is --tls-key.

Output. -o text (the default) is for people; -o json prints one JSON object
per command, for scripts. Binary results (ciphertext, signatures, MACs, random
bytes) are written raw to --out or stdout; --base64 encodes them. A file named
by --out is created new, mode 0600 (public keys 0644); an existing one is
refused unless --force, and a symlink is never followed.

Errors are printed as 'hsmctl: <message> (<AWS KMS exception name>)'. Exit
status: 0 success, 1 failure (or an invalid signature or MAC), 2 bad usage.`,
		Example: `  source ~/.hsmbroker-dev/dev.env
  hsmctl keys create --alias alias/payments
  hsmctl encrypt --key alias/payments --in secret.txt --out secret.enc
  hsmctl decrypt --in secret.enc
  hsmctl encrypt-file --key alias/payments --in backup.tar --out backup.tar.hsmb
  hsmctl keys list -o json | jq -r '.keys[].keyId'`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Args:              noArgs,
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: a.checkGlobalFlags,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.Version = versionString()
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErr(err.Error()) })

	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", "", "broker address host:port, or a comma-separated list (default $HSMBROKER_ADDR)")
	pf.StringVar(&a.caFile, "ca", "", "CA certificate file, PEM (default $HSMBROKER_CA)")
	pf.StringVar(&a.certFile, "cert", "", "client certificate file, PEM (default $HSMBROKER_CERT)")
	pf.StringVar(&a.keyFile, "tls-key", "", "client private key file, PEM (default $HSMBROKER_KEY)")
	// Earlier releases took the TLS key as --key too, on commands whose
	// --key is not a KMS key. Accepted there, with a warning, for one more
	// release; commands that take a KMS key define their own --key. A value
	// that is no file, or has the form of a KMS key, is refused
	// (checkLegacyKeyFile): it was meant as a KMS key.
	pf.StringVar(&a.legacyKeyFile, "key", "", "deprecated: the TLS client key is --tls-key")
	_ = pf.MarkHidden("key")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text or json")
	pf.DurationVar(&a.timeout, "timeout", client.DefaultTimeout, "deadline of each attempt of a call")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "on failure, also print the request id and the broker that answered (or, if none did, the last one tried)")

	root.AddCommand(
		a.keysCommand(),
		a.aliasesCommand(),
		a.encryptCommand(),
		a.decryptCommand(),
		a.dataKeyCommand(),
		a.signCommand(),
		a.verifyCommand(),
		a.macCommand(),
		a.verifyMacCommand(),
		a.randomCommand(),
		a.pubkeyCommand(),
		a.encryptFileCommand(),
		a.decryptFileCommand(),
		a.clusterCommand(),
		a.drillCommand(),
		a.whoamiCommand(),
		a.principalsCommand(),
		a.policyCommand(),
		a.grantsCommand(),
		a.auditCommand(),
		a.certsCommand(),
		a.benchCommand(),
		a.tdeCommand(),
		a.versionCommand(),
	)
	return root
}

func (a *app) checkGlobalFlags(cmd *cobra.Command, _ []string) error {
	if a.legacyKeyFile != "" {
		if err := checkLegacyKeyFile(cmd, a.legacyKeyFile); err != nil {
			return err
		}
		if a.keyFile != "" && a.keyFile != a.legacyKeyFile {
			return usageErr("--key and --tls-key both given: the TLS client key is --tls-key only")
		}
		fmt.Fprintln(a.stderr, "hsmctl: warning: --key as the TLS client key is deprecated and will be refused in the next release; use --tls-key (or HSMBROKER_KEY). --key names a KMS key only.")
		a.keyFile = a.legacyKeyFile
	}
	if a.output != "text" && a.output != "json" {
		return usageErr(fmt.Sprintf("invalid --output %q: valid values are text, json", a.output))
	}
	if a.timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	return nil
}

// checkLegacyKeyFile refuses a deprecated global --key that is not a TLS
// key file: one that names a KMS key, or no file at all. It was meant as
// the KMS key, on a command that takes its key otherwise or not at all.
func checkLegacyKeyFile(cmd *cobra.Command, value string) error {
	fi, err := os.Stat(value)
	isKMSKey := looksLikeKMSKey(value)
	if err == nil && !fi.IsDir() && !isKMSKey {
		return nil
	}
	what := "is not a TLS key file"
	if isKMSKey {
		what = "names a KMS key, not a TLS key file"
	}
	takes := cmd.CommandPath() + " takes no --key"
	if hasKeyArgument(cmd.Use) {
		takes = cmd.CommandPath() + " takes the key as an argument, not --key"
	}
	return usageErr(fmt.Sprintf("--key %q %s: %s (usage: %s); the TLS client key is --tls-key", value, what, takes, cmd.UseLine()))
}

// looksLikeKMSKey reports whether s has the form of a key id, key ARN,
// alias name or alias ARN.
func looksLikeKMSKey(s string) bool {
	if strings.HasPrefix(s, "arn:") || strings.HasPrefix(s, "alias/") {
		return true
	}
	_, err := keys.ParseKeyRef(s)
	return err == nil
}

// hasKeyArgument reports whether a command's Use line takes a KEY
// argument, rather than a flag's KEY value ("[--kms-key KEY]").
func hasKeyArgument(use string) bool {
	words := strings.Fields(use)
	for i, w := range words {
		if i > 0 && strings.Trim(w, "[]") == "KEY" && !strings.HasPrefix(strings.Trim(words[i-1], "[]"), "-") {
			return true
		}
	}
	return false
}

func (a *app) json() bool { return a.output == "json" }

// conn returns the client, dialing on first use.
func (a *app) conn() (*client.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	cfg, err := a.clientConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(a.ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.client = c
	return c, nil
}

// clientConfig is the connection configuration of the global flags and
// the environment, as conn uses it. Missing or malformed broker addresses
// are usage errors.
func (a *app) clientConfig() (client.Config, error) {
	cfg := a.rawClientConfig()
	source := "--addr"
	if a.addr == "" {
		source = "$" + client.EnvAddr
	}
	if len(cfg.Endpoints) == 0 {
		return cfg, usageErr("no broker address: give --addr host:port (or a comma-separated list), or set " + client.EnvAddr)
	}
	for _, e := range cfg.Endpoints {
		if err := client.CheckEndpoint(e); err != nil {
			return cfg, usageErr(source + ": " + strings.TrimPrefix(err.Error(), "client: "))
		}
	}
	return cfg, nil
}

// rawClientConfig is the configuration of the global flags over the
// environment's, unchecked.
func (a *app) rawClientConfig() client.Config {
	cfg := client.ConfigFromEnv()
	if a.addr != "" {
		cfg.Endpoints = client.SplitEndpoints(a.addr)
	}
	if a.caFile != "" {
		cfg.CAFile = a.caFile
	}
	if a.certFile != "" {
		cfg.CertFile = a.certFile
	}
	if a.keyFile != "" {
		cfg.KeyFile = a.keyFile
	}
	cfg.Timeout = a.timeout
	return cfg
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(msg string) error { return &usageError{msg} }

// exitCode ends the program with a status and no message, as verify does
// for an invalid signature after printing the verdict.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// runE marks the start of a command's own work, after cobra has parsed
// and checked the command line.
func (a *app) runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.running = true
		return f(cmd, args)
	}
}

func (a *app) exitStatus(cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	var ue *usageError
	if errors.As(err, &ue) || !a.running {
		fmt.Fprintf(a.stderr, "hsmctl: %s\n", err)
		if cmd != nil {
			fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return exitUsage
	}
	fmt.Fprintln(a.stderr, formatError(err))
	if a.verbose {
		if id := client.RequestID(err); id != "" {
			// Only an error with an exception name is a broker's answer;
			// without one, the last endpoint tried gave none.
			who := "answered by the broker at " + client.Endpoint(err)
			if client.AWSException(err) == "" {
				who = "no broker answered; last tried " + client.Endpoint(err)
			}
			fmt.Fprintf(a.stderr, "hsmctl: request id %s, %s\n", id, who)
		}
	}
	return exitError
}

// formatError is the one-line form of a failure: "hsmctl: <message>
// (<AWS exception name>)", or the gRPC code when the error carries no
// exception name (a broker that could not be reached), or nothing for a
// local failure.
func formatError(err error) string {
	msg := strings.TrimPrefix(client.Message(err), "client: ")
	if exc := client.AWSException(err); exc != "" {
		return fmt.Sprintf("hsmctl: %s (%s)", msg, exc)
	}
	if s := unreachableError(err); s != "" {
		return s
	}
	if client.Code(err) == codes.DeadlineExceeded && strings.Contains(msg, "waiting for connections to become ready") {
		// grpc-go's words for a connection that never became ready: the
		// address took the TCP connection but no TLS and gRPC followed.
		where := "the broker"
		if ep := client.Endpoint(err); ep != "" {
			where = "the broker at " + ep
		}
		return fmt.Sprintf("hsmctl: no connection to %s became ready within --timeout: the address accepted TCP, but no TLS handshake and gRPC answer followed (is it a broker's gRPC address?) (DeadlineExceeded; check --addr, or raise --timeout)", where)
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return fmt.Sprintf("hsmctl: %s (%s)", msg, client.Code(err))
	}
	return "hsmctl: " + msg
}

// unreachableError is the one-line form of a call that no broker served:
// it failed with Unavailable, and no broker said why. It names each
// endpoint tried and why it failed, its connection error reduced to its
// cause ("connection refused"). It is "" for other errors.
func unreachableError(err error) string {
	attempts := client.AttemptErrors(err)
	if client.Code(err) != codes.Unavailable || len(attempts) == 0 {
		return ""
	}
	hint := "(Unavailable; retry, or check --addr)"
	if allRefusedCertificate(attempts) {
		hint = "(the broker closed the connection after the TLS handshake, as it does when it refuses the client certificate: check that --cert is signed by the cluster's CA, names a principal, and has not expired)"
	}
	if len(attempts) == 1 {
		return fmt.Sprintf("hsmctl: cannot reach the broker at %s: %s %s", attempts[0].Endpoint, attemptReason(attempts[0].Err), hint)
	}
	parts := make([]string, len(attempts))
	for i, at := range attempts {
		parts[i] = at.Endpoint + ": " + attemptReason(at.Err)
	}
	return fmt.Sprintf("hsmctl: cannot reach any broker: %s %s", strings.Join(parts, "; "), hint)
}

// allRefusedCertificate reports whether every attempt failed the way a
// broker's refusal of the client certificate shows on the client: under
// TLS 1.3 the client finishes its handshake first, so it sees the
// broker's alert, or only the connection closed at its first write.
func allRefusedCertificate(attempts []client.EndpointError) bool {
	for _, at := range attempts {
		cause := connectionCause(client.Message(at.Err))
		if !strings.Contains(cause, "tls: unknown certificate authority") && !strings.Contains(cause, "tls: bad certificate") &&
			!strings.Contains(cause, "tls: certificate required") && !strings.Contains(cause, "tls: expired certificate") &&
			!strings.HasSuffix(cause, "write: broken pipe") && !strings.HasSuffix(cause, "connection reset by peer") {
			return false
		}
	}
	return len(attempts) > 0
}

// attemptReason is why one attempt failed: the cause of a connection
// error, or a broker's message with its exception name or code.
func attemptReason(err error) string {
	msg := connectionCause(client.Message(err))
	if exc := client.AWSException(err); exc != "" {
		return fmt.Sprintf("%s (%s)", msg, exc)
	}
	if code := client.Code(err); code != codes.Unavailable {
		return fmt.Sprintf("%s (%s)", msg, code)
	}
	return msg
}

// connectionCause reduces gRPC's message for a connection that could not
// be made, such as
//
//	connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7400: connect: connection refused"
//
// to its cause, "connection refused". Other messages are kept whole.
func connectionCause(msg string) string {
	rest, ok := strings.CutPrefix(msg, "connection error: desc = ")
	if !ok {
		return msg
	}
	if unq, err := strconv.Unquote(rest); err == nil {
		rest = unq
	}
	rest = strings.TrimPrefix(rest, "transport: ")
	rest = strings.TrimPrefix(rest, "Error while dialing: ")
	// A *net.OpError: "dial tcp ADDR: CAUSE", or "dial tcp: CAUSE" when no
	// address was resolved; a refused connect adds "connect: ".
	if r, ok := strings.CutPrefix(rest, "dial tcp"); ok {
		if r, ok = strings.CutPrefix(r, ": "); !ok {
			if _, after, found := strings.Cut(r, ": "); found {
				r = after
			}
		}
		rest = strings.TrimPrefix(r, "connect: ")
	}
	return rest
}

// noArgs refuses positional arguments, naming an unknown subcommand as
// such.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasSubCommands() {
		return usageErr(fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath()))
	}
	return usageErr(fmt.Sprintf("%s takes no arguments, got %q", cmd.CommandPath(), args[0]))
}

// exactArgs requires the positional arguments named.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErr(fmt.Sprintf("%s needs %d argument(s) (%s), got %d", cmd.CommandPath(), len(names), joinNames(names), len(args)))
		}
		for i, arg := range args {
			if arg == "" {
				return usageErr(fmt.Sprintf("%s must not be empty", names[i]))
			}
		}
		return nil
	}
}

// minArgs requires the named arguments and at least one of the last.
func minArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usageErr(fmt.Sprintf("%s needs at least %d argument(s) (%s...), got %d", cmd.CommandPath(), len(names), joinNames(names), len(args)))
		}
		for i, arg := range args {
			if arg == "" {
				return usageErr(fmt.Sprintf("%s must not be empty", names[min(i, len(names)-1)]))
			}
		}
		return nil
	}
}

func joinNames(names []string) string { return strings.Join(names, " ") }

// group makes cmd a group of subcommands: alone it prints its help; with
// an unknown subcommand it is a usage error.
func group(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.Args = noArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	cmd.AddCommand(subs...)
	return cmd
}
