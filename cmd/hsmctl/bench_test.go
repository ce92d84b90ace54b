package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/bench"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// bench against a real broker, with the baseline on the broker's own
// token: both sides run every operation of the mix, without errors.
func TestBenchAgainstBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	ca, cert, key := c.TLSFiles("bench", authz.RoleAdmin)
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
	for name, v := range map[string]*float64{"broker client": res.Broker.ClientCPUUs, "broker": res.Broker.BrokerCPUUs, "direct": res.Direct.ClientCPUUs} {
		if v == nil || *v <= 0 {
			t.Errorf("%s CPU per operation: %v, want a positive figure", name, v)
		}
	}
	if res.Direct.BrokerCPUUs != nil {
		t.Errorf("the baseline has a broker CPU figure: %v", *res.Direct.BrokerCPUUs)
	}
}
