package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/bench"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// bench against a real broker, with the baseline on the broker's own
// token: both sides run every operation of the mix, without errors.
func TestBenchAgainstBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	ca, cert, key := c.TLSFiles("bench", pki.RoleAdmin)
	tok := c.Nodes[0].Token
	pinFile := filepath.Join(t.TempDir(), "user.pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "--op", "mix", "--concurrency", "2", "--keys", "2", "--size", "1024", "--duration", "1s", "--window", "250ms",
		"--baseline-direct", "--module", tok.Module, "--token-label", tok.Label, "--pin-file", pinFile, "-o", "json",
		"--addr", c.Nodes[0].GRPCAddr, "--ca", ca, "--cert", cert, "--tls-key", key}
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
}
