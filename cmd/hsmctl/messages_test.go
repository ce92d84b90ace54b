package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
)

// tlsFiles writes a CA and a client certificate of it, as certs issue
// does, and returns the connection flags that use them, without --addr.
func tlsFiles(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	caCert := filepath.Join(dir, "ca.pem")
	if err := ca.Save(caCert, filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueClient("alice", authz.RoleUser, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice-key.pem")
	if err := iss.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	return []string{"--ca", caCert, "--cert", cert, "--tls-key", key}
}

// connFlags are the flags that reach c's first node as principal, with a
// client certificate of role.
func connFlags(c *hsmtest.Cluster, principal string, role authz.Role) []string {
	ca, cert, key := c.TLSFiles(principal, role)
	return []string{"--addr", c.Nodes[0].GRPCAddr, "--ca", ca, "--cert", cert, "--tls-key", key}
}

// Mistakes on the command line are named as the user made them: the flag
// that is missing or wrong, and what would be right. Each is a usage
// error, exit status 2, found before any broker is contacted.
func TestUsageMessages(t *testing.T) {
	const keyID = "1234abcd-12ab-34cd-56ef-1234567890ab"
	tlsFlags := tlsFiles(t)
	dead := hsmtest.ClosedAddr(t)
	t.Setenv("HSMBROKER_ADDR", dead)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"random without --bytes", []string{"random"}, "--bytes is required: how many random bytes, 1 to 1024"},
		{"random --bytes 0", []string{"random", "--bytes", "0"}, "--bytes must be 1 to 1024, got 0"},
		{"drill without --mode", []string{"drill", "failover"}, "--mode is required: transfer (hand leadership over) or kill (with --kill-cmd and --start-cmd)"},
		{"bench shorter than the default window", []string{"bench", "--duration", "100ms"},
			"--duration 100ms is shorter than --window 500ms (the default): the duration must be at least the window"},
		{"bench shorter than the window", []string{"bench", "--duration", "1s", "--window", "2s"},
			"--duration 1s is shorter than --window 2s: the duration must be at least the window"},
		{"tde --bytes 0", []string{"tde", "create", "1", "--bytes", "0"}, "invalid --bytes 0: want 16, 24 or 32"},
		{"tde --bytes 20", []string{"tde", "create", "1", "--bytes", "20"}, "invalid --bytes 20: want 16, 24 or 32"},
		{"address without a port", []string{"keys", "list", "--addr", "127.0.0.1"},
			`--addr: invalid endpoint "127.0.0.1": no port; want host:port, such as 127.0.0.1:7400`},
		{"one of the addresses without a port", []string{"keys", "list", "--addr", dead + ",broker.example"},
			`--addr: invalid endpoint "broker.example": no port`},
		{"address with a URL scheme", []string{"whoami", "--addr", "http://127.0.0.1:37410"},
			`--addr: invalid endpoint "http://127.0.0.1:37410": http:// is not a gRPC target scheme; give host:port without a scheme, such as 127.0.0.1:37410`},
		// The deprecated global --key (the TLS key) given a KMS key, on a
		// command that takes its key otherwise, or none.
		{"deprecated --key naming a key by id", []string{"grants", "list", "--key", keyID, keyID},
			`--key "` + keyID + `" names a KMS key, not a TLS key file: hsmctl grants list takes the key as an argument, not --key ` +
				`(usage: hsmctl grants list KEY [--grantee PRINCIPAL] [flags]); the TLS client key is --tls-key`},
		{"deprecated --key naming a key by ARN", []string{"keys", "disable", "--key", "arn:aws:kms:us-east-1:111122223333:key/" + keyID, keyID},
			`--key "arn:aws:kms:us-east-1:111122223333:key/` + keyID + `" names a KMS key, not a TLS key file: ` +
				"hsmctl keys disable takes the key as an argument, not --key (usage: hsmctl keys disable KEY [flags])"},
		{"deprecated --key naming an alias", []string{"whoami", "--key", "alias/payments"},
			`--key "alias/payments" names a KMS key, not a TLS key file: hsmctl whoami takes no --key (usage: hsmctl whoami [flags]); the TLS client key is --tls-key`},
		{"deprecated --key naming no file", []string{"tde", "create", "1", "--key", "payments"},
			`--key "payments" is not a TLS key file: hsmctl tde create takes no --key (usage: hsmctl tde create NAME [--mount tde] [--bytes 32] [--kms-key KEY] [flags])`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runArgs(append(tt.args, tlsFlags...)...)
			if r.code != exitUsage || !strings.HasPrefix(r.stderr, "hsmctl: "+tt.want) || !strings.Contains(r.stderr, "--help' for usage.") {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tt.want)
			}
		})
	}

	t.Run("address without a port from the environment", func(t *testing.T) {
		t.Setenv("HSMBROKER_ADDR", "localhost")
		r := runArgs(append([]string{"keys", "list"}, tlsFlags...)...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, `hsmctl: $HSMBROKER_ADDR: invalid endpoint "localhost": no port`) {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("no address", func(t *testing.T) {
		t.Setenv("HSMBROKER_ADDR", "")
		r := runArgs(append([]string{"keys", "list"}, tlsFlags...)...)
		want := "hsmctl: no broker address: give --addr host:port (or a comma-separated list), or set HSMBROKER_ADDR\n"
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, want) {
			t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, want)
		}
	})
}

// A signature longer than the broker accepts is refused with the broker's
// limit, before the broker is asked.
func TestVerifySignatureLimit(t *testing.T) {
	dir := t.TempDir()
	sig := filepath.Join(dir, "sig")
	if err := os.WriteFile(sig, make([]byte, 1025), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runArgs("verify", "--key", "alias/k", "--algorithm", "ECDSA_SHA_256", "--signature", sig, "--addr", hsmtest.ClosedAddr(t))
	if r.code != exitError || r.stderr != "hsmctl: "+sig+" is larger than 1024 bytes\n" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// When no broker can be reached, the message says so, names the address
// and the cause, and suggests what to do; with several addresses, it
// names each one's failure.
func TestUnreachableBroker(t *testing.T) {
	tlsFlags := tlsFiles(t)
	dead1, dead2 := hsmtest.ClosedAddr(t), hsmtest.ClosedAddr(t)
	r := runArgs(append([]string{"keys", "list", "--addr", dead1}, tlsFlags...)...)
	want := "hsmctl: cannot reach the broker at " + dead1 + ": connection refused (Unavailable; retry, or check --addr)\n"
	if r.code != exitError || r.stderr != want {
		t.Fatalf("one address: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	// -v does not name a broker that answered when none did.
	r = runArgs(append([]string{"keys", "list", "-v", "--addr", dead1}, tlsFlags...)...)
	if r.code != exitError || !strings.HasSuffix(r.stderr, ", no broker answered; last tried "+dead1+"\n") {
		t.Fatalf("-v, one address: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runArgs(append([]string{"keys", "create", "--alias", "alias/x", "--addr", dead1 + "," + dead2}, tlsFlags...)...)
	// Each endpoint is named once, in the order the call tried them, which
	// depends on which connection failed first.
	tried := func(a, b string) string {
		return "hsmctl: cannot reach any broker: " + a + ": connection refused; " + b + ": connection refused (Unavailable; retry, or check --addr)\n"
	}
	if r.code != exitError || (r.stderr != tried(dead1, dead2) && r.stderr != tried(dead2, dead1)) {
		t.Fatalf("two addresses: exit %d, stderr %q; want %q, or the two the other way round", r.code, r.stderr, tried(dead1, dead2))
	}
}

// A client certificate the broker refuses (of another CA) is named as the
// likely cause, not reported as an unreachable address to retry.
func TestRefusedClientCertificate(t *testing.T) {
	e := newEnv(t)
	other, err := pki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := other.IssueClient("mallory", authz.RoleAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(e.dir, "mallory.pem"), filepath.Join(e.dir, "mallory-key.pem")
	if err := iss.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	r := runArgs("whoami", "--addr", e.srv.Addr, "--ca", e.srv.PKI.CAFile, "--cert", cert, "--tls-key", key)
	if r.code != exitError || !strings.Contains(r.stderr, "check that --cert is signed by the cluster's CA") || strings.Contains(r.stderr, "retry, or check --addr") {
		t.Fatalf("a client certificate of another CA: exit %d, stderr %q", r.code, r.stderr)
	}
}

// An address that accepts TCP connections but never speaks TLS (not a
// broker's gRPC port) is named, with what to check, instead of grpc-go's
// "context deadline exceeded while waiting for connections to become ready".
func TestSilentAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	addr := lis.Addr().String()
	r := runArgs(append([]string{"whoami", "--addr", addr, "--timeout", "500ms"}, tlsFiles(t)...)...)
	if r.code != exitError || !strings.Contains(r.stderr, "no connection to the broker at "+addr+" became ready") ||
		strings.Contains(r.stderr, "context deadline exceeded") {
		t.Fatalf("a silent address: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConnectionCause(t *testing.T) {
	tests := []struct{ msg, want string }{
		{`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7400: connect: connection refused"`, "connection refused"},
		{`connection error: desc = "transport: Error while dialing: dial tcp [::1]:7400: connect: connection refused"`, "connection refused"},
		{`connection error: desc = "transport: Error while dialing: dial tcp: lookup broker.invalid: no such host"`, "lookup broker.invalid: no such host"},
		{`connection error: desc = "transport: authentication handshake failed: tls: bad certificate"`, "authentication handshake failed: tls: bad certificate"},
		{"no leader", "no leader"},
	}
	for _, tt := range tests {
		if got := connectionCause(tt.msg); got != tt.want {
			t.Errorf("connectionCause(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

// Help says what the commands do.
func TestHelpMatchesBehaviour(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		r := runArgs(append(args, "--help")...)
		if r.code != 0 {
			t.Fatalf("%v --help: exit %d %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	if h := help("certs", "issue"); !strings.Contains(h, "(the certificate, mode 0600)") || strings.Contains(h, "0644") {
		t.Errorf("certs issue --help does not give the certificate's mode, 0600:\n%s", h)
	}
	if h := help("tde"); strings.Contains(h, "--key alias/") || !strings.Contains(h, "keys describe alias/tde") {
		t.Errorf("tde --help gives grants create an alias:\n%s", h)
	}
	if h := help("tde", "create"); !strings.Contains(h, "16, 24 or 32; default 32") {
		t.Errorf("tde create --help:\n%s", h)
	}
	if h := help("verify"); !strings.Contains(h, "at most 1024 bytes") {
		t.Errorf("verify --help:\n%s", h)
	}
	for _, cmd := range [][]string{{"decrypt"}, {"encrypt"}, {"random"}, {"sign"}, {"mac"}, {"pubkey"}, {"audit", "fetch"}, {"cluster", "join-token"}, {"tde", "token", "issue"}} {
		if h := help(cmd...); !strings.Contains(h, "--force") || !strings.Contains(h, "refused unless --force") {
			t.Errorf("%v --help does not say that an existing --out is refused without --force:\n%s", cmd, h)
		}
	}
}

// bench's flags that default to the environment show that default once,
// however the environment is set.
func TestBenchHelpDefaults(t *testing.T) {
	for _, env := range []string{"", "set"} {
		if env == "set" {
			t.Setenv("HSMBROKER_METRICS_ADDR", "127.0.0.1:18490")
			t.Setenv("HSMBROKER_PKCS11_MODULE", "/opt/hsm/lib/libpkcs11.so")
		} else {
			t.Setenv("HSMBROKER_METRICS_ADDR", "")
			t.Setenv("HSMBROKER_PKCS11_MODULE", "")
		}
		r := runArgs("bench", "--help")
		if r.code != 0 {
			t.Fatalf("bench --help: exit %d %s", r.code, r.stderr)
		}
		want := map[string]string{
			"--metrics-addr": "(default $HSMBROKER_METRICS_ADDR)",
			"--module":       "(default $HSMBROKER_PKCS11_MODULE, else " + defaultModule + ")",
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[1] != "string" || want[f[0]] == "" {
				continue
			}
			if strings.Count(line, "(default") != 1 || !strings.HasSuffix(line, want[f[0]]) {
				t.Errorf("environment %q: bench --help shows %s as\n%s\nwant one default, %s", env, f[0], line, want[f[0]])
			}
			delete(want, f[0])
		}
		if len(want) != 0 {
			t.Errorf("bench --help does not show %v", want)
		}
	}
}

// Every command that does something has examples in its help, as the
// README promises.
func TestEveryCommandHasExamples(t *testing.T) {
	a := &app{}
	var walk func(cmd *cobra.Command)
	n := 0
	walk = func(cmd *cobra.Command) {
		if cmd.Hidden || cmd.Name() == "help" || cmd.Name() == "completion" {
			return
		}
		if cmd.HasSubCommands() {
			for _, sub := range cmd.Commands() {
				walk(sub)
			}
			return
		}
		n++
		if strings.TrimSpace(cmd.Example) == "" {
			t.Errorf("%s has no Example", cmd.CommandPath())
		} else if !strings.Contains(cmd.Example, cmd.CommandPath()) {
			t.Errorf("%s: no example runs it:\n%s", cmd.CommandPath(), cmd.Example)
		}
	}
	walk(a.rootCommand())
	if n < 50 {
		t.Fatalf("walked %d commands; the command tree is not what it seems", n)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runArgs(args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "hsmctl ") || !strings.Contains(r.stdout, "go1.") || r.stderr != "" {
			t.Errorf("hsmctl %v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	// Every command has -o json.
	r := runArgs("version", "-o", "json")
	var v struct{ Version string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || !strings.HasPrefix(v.Version, "hsmctl ") {
		t.Errorf("hsmctl version -o json: exit %d, stdout %q", r.code, r.stdout)
	}
}
