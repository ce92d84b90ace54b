package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/metadata"
)

// A real broker's /metrics carries the request, HSM, pool, cache and Raft
// series, and they move with the traffic; its JSON log lines carry the
// request ids clients send.
func TestMetricsAndRequestLogs(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	var p *proc
	for attempt := 0; ; attempt++ {
		a := freeAddrs(t, 5)
		p = startProc(t, environ("SOFTHSM2_CONF="+filepath.Join(t.TempDir(), "elsewhere.conf")),
			"dev", "--data-dir", dir, "--module", module, "--log-format", "json",
			"--grpc-addr", a[0], "--raft-addr", a[1], "--metrics-addr", a[2], "--kms-addr", a[3], "--vault-addr", a[4], "--kmip-addr", "")
		waitFor(t, nil, "dev.env", func() error {
			if exists(filepath.Join(dir, "dev.env")) || p.exited() {
				return nil
			}
			return errors.New("not written yet")
		})
		if !p.exited() {
			break
		}
		if !portCollision(p) || attempt == 3 {
			t.Fatalf("hsmbrokerd dev exited (%v) before writing dev.env", p.err)
		}
	}
	env := readEnvFile(t, filepath.Join(dir, "dev.env"))
	metricsAddr := env["HSMBROKER_METRICS_ADDR"]
	conn := dial(t, env["HSMBROKER_ADDR"], env["HSMBROKER_CA"], env["HSMBROKER_CERT"], env["HSMBROKER_KEY"])
	waitServing(t, p, conn)
	waitHTTPReady(t, p, metricsAddr)
	checkHTTP(t, metricsAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keysC, cryptoC := pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn)
	key, err := keysC.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	id := key.GetKeyMetadata().GetKeyId()
	enc, err := cryptoC.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("metrics")})
	if err != nil {
		t.Fatal(err)
	}
	before := scrape(t, metricsAddr)

	const n = 5
	for range n {
		if _, err := cryptoC.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("metrics")}); err != nil {
			t.Fatal(err)
		}
	}
	// A tampered tag fails inside the token: an HSM call error and an
	// InvalidCiphertextException.
	bad := append([]byte(nil), enc.GetCiphertextBlob()...)
	bad[len(bad)-1] ^= 1
	if _, err := cryptoC.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: bad}); err == nil {
		t.Fatal("tampered ciphertext decrypted")
	}
	// A failure with the caller's request id, to find in the log.
	const reqID = "metrics-test-4711"
	mctx := metadata.AppendToOutgoingContext(ctx, "x-request-id", reqID)
	if _, err := keysC.DescribeKey(mctx, &pb.DescribeKeyRequest{KeyId: "alias/no-such-alias"}); err == nil {
		t.Fatal("DescribeKey of a missing alias succeeded")
	}
	if _, err := keysC.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	// Raft's own applied and commit indexes (Raft.AppliedIndex and
	// CommitIndex) were once seen not yet grown right after the TagKey was
	// answered: scrape until they show it, or until the deadline, when the
	// check below fails with the figures.
	after := scrape(t, metricsAddr)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if value(t, after, "hsmbroker_raft_applied_index", nil) > value(t, before, "hsmbroker_raft_applied_index", nil) &&
			value(t, after, "hsmbroker_raft_commit_index", nil) > value(t, before, "hsmbroker_raft_commit_index", nil) {
			break
		}
		time.Sleep(50 * time.Millisecond)
		after = scrape(t, metricsAddr)
	}

	encOK := map[string]string{"service": "hsmbroker.v1.CryptoService", "method": "Encrypt", "code": "OK", "exception": ""}
	grew := []struct {
		name   string
		labels map[string]string
		by     float64
	}{
		{"hsmbroker_requests_total", encOK, n},
		{"hsmbroker_requests_total", map[string]string{"method": "Decrypt", "code": "InvalidArgument", "exception": "InvalidCiphertextException"}, 1},
		{"hsmbroker_requests_total", map[string]string{"method": "DescribeKey", "code": "NotFound", "exception": "NotFoundException"}, 1},
		{"hsmbroker_request_duration_seconds", map[string]string{"method": "Encrypt"}, n},
		{"hsmbroker_hsm_call_duration_seconds", map[string]string{"function": "C_Encrypt"}, n},
		{"hsmbroker_hsm_call_errors_total", map[string]string{"function": "C_Decrypt"}, 1},
		{"hsmbroker_hsm_handle_cache_hits_total", nil, n},
		{"hsmbroker_raft_applied_index", nil, 1},
		{"hsmbroker_raft_commit_index", nil, 1},
	}
	for _, g := range grew {
		// A labelled family appears with its first event.
		b := 0.0
		if _, ok := before[g.name]; ok {
			b = value(t, before, g.name, g.labels)
		}
		a := value(t, after, g.name, g.labels)
		if a-b < g.by {
			t.Errorf("%s%v went from %v to %v; want it up by at least %v", g.name, g.labels, b, a, g.by)
		}
	}
	for _, s := range []struct {
		name   string
		labels map[string]string
		want   func(float64) bool
		what   string
	}{
		{"hsmbroker_raft_state", map[string]string{"state": "Leader"}, eq(1), "1"},
		{"hsmbroker_raft_state", map[string]string{"state": "Follower"}, eq(0), "0"},
		{"hsmbroker_raft_term", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"hsmbroker_raft_leader_known", nil, eq(1), "1"},
		{"hsmbroker_raft_servers", map[string]string{"suffrage": "voter"}, eq(1), "1"},
		{"hsmbroker_raft_last_contact_seconds", nil, eq(0), "0 on the leader"},
		{"hsmbroker_ready", nil, eq(1), "1"},
		{"hsmbroker_hsm_sessions_max", nil, eq(8), "8 (the default pool)"},
		{"hsmbroker_hsm_sessions_in_use", nil, func(v float64) bool { return v >= 0 && v <= 8 }, "within the pool"},
		{"hsmbroker_hsm_sessions_idle", nil, func(v float64) bool { return v >= 1 }, ">= 1 after traffic"},
		{"hsmbroker_hsm_handle_cache_entries", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"hsmbroker_hsm_handle_cache_capacity", nil, eq(4096), "4096"},
		{"hsmbroker_requests_in_flight", nil, func(v float64) bool { return v >= 0 }, ">= 0"},
	} {
		if v := value(t, after, s.name, s.labels); !s.want(v) {
			t.Errorf("%s%v = %v, want %s", s.name, s.labels, v, s.what)
		}
	}

	// The NotFound answer is logged (info level) as JSON with the id.
	waitFor(t, p, "the request's log line", func() error {
		if rec := findLogRecord(p.out.String(), reqID); rec != nil {
			if rec["code"] != "NotFound" || rec["method"] != "/hsmbroker.v1.KeyService/DescribeKey" {
				t.Errorf("log record %v: want code NotFound and method DescribeKey", rec)
			}
			return nil
		}
		return errors.New("no JSON log record with request_id " + reqID)
	})
	p.stop(t)
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the series of a family whose labels include want: counters
// and gauges by value, histograms by sample count. The family must exist.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	sum, found := 0.0, false
	for _, m := range f.GetMetric() {
		match := true
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	if !found {
		return 0 // a labelled series appears on its first event
	}
	return sum
}

// findLogRecord returns the JSON log record whose request_id is id.
func findLogRecord(out, id string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && fmt.Sprint(rec["request_id"]) == id {
			return rec
		}
	}
	return nil
}
