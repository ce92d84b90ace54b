package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/bench"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// bench against a real broker, with the baseline on the broker's own
// token: both sides run every operation of the mix, without errors.
func TestBenchAgainstBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	tok := c.Nodes[0].Token
	pinFile := filepath.Join(t.TempDir(), "user.pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The broker runs in this process, so this process's Prometheus
	// process collector is the broker's CPU time.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	args := []string{"bench", "--op", "mix", "--metrics-addr", lis.Addr().String(), "--concurrency", "2", "--keys", "2", "--size", "1024", "--duration", "1s", "--window", "250ms",
		"--baseline-direct", "--module", tok.Module, "--token-label", tok.Label, "--pin-file", pinFile, "-o", "json"}
	args = append(args, connFlags(c, "bench", authz.RoleAdmin)...)
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("hsmctl bench: exit %d\n%s", code, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	if res.Broker.Ops == 0 || res.Direct == nil || res.Direct.Ops == 0 || res.Ratio == nil || *res.Ratio <= 0 {
		t.Fatalf("result %+v: want operations on both sides and a ratio", res)
	}
	if res.Broker.Errors != 0 || res.Direct.Errors != 0 {
		t.Fatalf("errors: broker %d (%s), direct %d (%s)", res.Broker.Errors, res.Broker.FirstError, res.Direct.Errors, res.Direct.FirstError)
	}
	if p := res.Broker; !(p.P50Ms > 0 && p.P50Ms <= p.P90Ms && p.P90Ms <= p.P99Ms) {
		t.Errorf("broker percentiles out of order: %+v", p)
	}
	for name, v := range map[string]*float64{"broker client": res.Broker.ClientCPUUs, "broker": res.Broker.BrokerCPUUs, "direct": res.Direct.ClientCPUUs} {
		if v == nil || *v <= 0 {
			t.Errorf("%s CPU per operation: %v, want a positive figure", name, v)
		}
	}
	if res.Direct.BrokerCPUUs != nil {
		t.Errorf("the baseline has a broker CPU figure: %v", *res.Direct.BrokerCPUUs)
	}
}

// A baseline that cannot run (PIN file, PIN, token, domain key) is
// refused before the broker gets a key; a run that fails once it has made
// keys (here: interrupted while measuring) schedules their deletion and
// frees their aliases. Either way no usable alias/bench-* key is left.
func TestBenchFailureLeavesNoKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	conn := connFlags(c, "bench", authz.RoleAdmin)
	kc := pb.NewKeyServiceClient(c.Dial(0, "observer"))
	tok := c.Nodes[0].Token
	scratch := hsmtest.NewToken(t) // no domain key
	dir := t.TempDir()
	pinFile := func(name, pin string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(pin+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nodePIN := pinFile("node.pin", tok.PIN, 0o600)
	baseline := func(label, pinFile string) []string {
		return append([]string{"bench", "--op", "encrypt", "--duration", "1s", "--window", "250ms",
			"--baseline-direct", "--module", tok.Module, "--token-label", label, "--pin-file", pinFile}, conn...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no PIN file", baseline(tok.Label, filepath.Join(dir, "missing.pin")), "bench: baseline PIN"},
		{"PIN file readable by others", baseline(tok.Label, pinFile("open.pin", tok.PIN, 0o644)), "chmod 600"},
		{"wrong PIN", baseline(scratch.Label, pinFile("wrong.pin", "not-"+scratch.PIN, 0o600)), "bench: open the baseline token"},
		{"no such token", baseline("no-such-token", nodePIN), "bench: open the baseline token"},
		{"no domain key", baseline(scratch.Label, pinFile("scratch.pin", scratch.PIN, 0o600)), "holds no hsmbroker domain key"},
		{"metrics address that does not answer", append([]string{"bench", "--op", "encrypt", "--duration", "1s", "--window", "250ms",
			"--metrics-addr", hsmtest.ClosedAddr(t)}, conn...), "the broker's CPU at --metrics-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != exitError || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), exitError, tt.want)
			}
			if strings.Contains(stderr.String(), "setting up") {
				t.Errorf("the broker side was set up before the baseline failed:\n%s", stderr.String())
			}
			if keys, aliases := benchKeys(t, kc); len(keys) != 0 || len(aliases) != 0 {
				t.Fatalf("a refused run left keys %v and aliases %v", keys, aliases)
			}
		})
	}

	// --metrics-addr and --module left out come from the environment.
	fromEnv := []struct {
		name, env, value string
		args             []string
	}{
		{"metrics address from the environment", "HSMBROKER_METRICS_ADDR", hsmtest.ClosedAddr(t),
			[]string{"bench", "--op", "encrypt", "--duration", "1s", "--window", "250ms"}},
		{"module from the environment", "HSMBROKER_PKCS11_MODULE", filepath.Join(dir, "no-such-module.so"),
			[]string{"bench", "--op", "encrypt", "--duration", "1s", "--window", "250ms", "--baseline-direct", "--token-label", tok.Label, "--pin-file", nodePIN}},
	}
	for _, tt := range fromEnv {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			var stdout, stderr bytes.Buffer
			if code := run(append(tt.args, conn...), &stdout, &stderr); code != exitError || !strings.Contains(stderr.String(), tt.value) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), exitError, tt.value)
			}
			if keys, aliases := benchKeys(t, kc); len(keys) != 0 || len(aliases) != 0 {
				t.Fatalf("a refused run left keys %v and aliases %v", keys, aliases)
			}
		})
	}

	t.Run("interrupted after setup", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stderr := &cancelOn{says: "bench: measuring", cancel: cancel}
		var stdout bytes.Buffer
		args := append([]string{"bench", "--op", "encrypt", "--keys", "3", "--duration", "10s", "--window", "250ms"}, conn...)
		if code := runWith(ctx, args, strings.NewReader(""), &stdout, stderr); code != exitError {
			t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitError, stderr)
		}
		if !strings.Contains(stderr.String(), "scheduling the deletion of the 3 broker key(s) it made") {
			t.Errorf("stderr does not report the clean-up:\n%s", stderr)
		}
		keys, aliases := benchKeys(t, kc)
		if len(aliases) != 0 {
			t.Errorf("aliases left: %v", aliases)
		}
		if len(keys) != 3 {
			t.Fatalf("bench keys %v, want the 3 the run made", keys)
		}
		for id, st := range keys {
			if st != pb.KeyState_KEY_STATE_PENDING_DELETION {
				t.Errorf("key %s is %s, want pending deletion", id, st)
			}
		}
	})
}

// benchKeys returns the state of every key bench made (by description) and
// every alias/bench-* alias.
func benchKeys(t *testing.T, kc pb.KeyServiceClient) (map[string]pb.KeyState, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lk, err := kc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]pb.KeyState{}
	for _, k := range lk.GetKeys() {
		if strings.HasPrefix(k.GetDescription(), "hsmctl bench ") {
			keys[k.GetKeyId()] = k.GetKeyState()
		}
	}
	la, err := kc.ListAliases(ctx, &pb.ListAliasesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var aliases []string
	for _, a := range la.GetAliases() {
		if strings.HasPrefix(a.GetAliasName(), "alias/bench-") {
			aliases = append(aliases, a.GetAliasName())
		}
	}
	return keys, aliases
}

// cancelOn collects what is written to it and calls cancel once it has
// seen says.
type cancelOn struct {
	says   string
	cancel context.CancelFunc
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.says) {
		w.cancel()
	}
	return n, err
}

func (w *cancelOn) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
