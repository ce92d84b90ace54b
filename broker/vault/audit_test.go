package vault_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/broker/vault"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// failingLog is an audit log destination whose writes can be made to fail.
type failingLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	fail atomic.Bool
}

func (f *failingLog) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, errors.New("no space left on device")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.b.Write(p)
}

// TestNoKeyWithoutAuditLine: while the node cannot write its audit log,
// reads get no answer (the connection is closed, which a database takes as
// a passing failure and answers from its cache) and no key material
// leaves; afterwards they are served again.
func TestNoKeyWithoutAuditLine(t *testing.T) {
	faults := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(faults))
	node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		Bootstrap: true, ReapInterval: time.Hour, Logger: hsmtest.QuietLogger(), Observer: broker.Observer(p)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	w := &failingLog{}
	// InsecureNoClientAuth: the test sets things up through a plaintext
	// gRPC server, which has no client certificates to identify callers.
	svc, err := broker.New(broker.Config{Node: node, Partition: p, Logger: hsmtest.QuietLogger(), AuditLog: audit.New(w, audit.Options{}),
		InsecureNoClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.NewDaemon(svc, broker.DaemonConfig{GRPCAddr: "127.0.0.1:1"}).RegisterNode(ctx); err != nil {
		t.Fatal(err)
	}
	// A plaintext gRPC server (tests only) to set things up through the API.
	gs, _ := svc.NewGRPCServer(nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	keys, tde := pb.NewKeyServiceClient(conn), pb.NewTDEServiceClient(conn)
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/tde"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "1"}); err != nil {
		t.Fatal(err)
	}
	tok, err := tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: tdeKeyID(ctx, t, keys), GranteePrincipal: "db", Operations: []string{"Decrypt"}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(vault.New(svc.TDE(), hsmtest.QuietLogger()))
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv}

	material, _ := e.read("/v1/tde/data/1", tok.GetToken())
	w.fail.Store(true)
	for _, path := range []string{"/v1/tde/data/1", "/v1/sys/mounts/tde/tune"} {
		e.unanswered(path, tok.GetToken())
	}
	w.fail.Store(false)
	if again, _ := e.read("/v1/tde/data/1", tok.GetToken()); !bytes.Equal(again, material) {
		t.Fatal("a different key after the outage")
	}

	// A node that is not ready (its HSM failing) refuses before it reads
	// the token; the audit line is a denial that names the key asked for
	// and the reason, not an "allow" of nobody.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go broker.NewDaemon(svc, broker.DaemonConfig{HealthInterval: 20 * time.Millisecond}).WatchHealth(wctx)
	faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ok, reason := svc.Healthy(); !ok && strings.Contains(reason, "HSM") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node never found its HSM failing")
		}
	}
	e.unanswered("/v1/tde/data/1", "hbt.not-a-token")
	faults.Clear()
	var line audit.Record
	w.mu.Lock()
	for _, l := range bytes.Split(w.b.Bytes(), []byte("\n")) {
		var r audit.Record
		if json.Unmarshal(l, &r) == nil && r.Operation == broker.ActionReadTDEKey && r.Code == "Unavailable" {
			line = r
		}
	}
	w.mu.Unlock()
	if line.Decision != "deny" || line.KeyRef != "tde:tde/1" || line.Principal != "" ||
		!strings.HasPrefix(line.Reason, "unavailable: node node1 is not ready (HSM partition unavailable") {
		t.Fatalf("audit line of a read refused while not ready: %+v", line)
	}
}

// TestUnauthenticatedFloodBoundsAuditLines: refusals of requests that
// prove no identity get their own audit lines up to a rate, and beyond it
// are counted in a summary line per source; a request with a valid token
// in the middle of the flood keeps its own line, and the log verifies.
func TestUnauthenticatedFloodBoundsAuditLines(t *testing.T) {
	t.Parallel()
	e := newKeyEnv(t)
	const flood = 600
	start := time.Now()
	for i := range flood {
		if code, _ := e.get("/v1/tde/data/1", "hbt.made-up"); code != http.StatusForbidden {
			t.Fatalf("refusal %d: status %d", i, code)
		}
		if i == flood/2 {
			e.read("/v1/tde/data/1", e.token)
		}
	}
	elapsed := time.Since(start)

	type line struct {
		Front, Peer, Principal, Operation, Decision, Reason, Result string
	}
	var refused, served int
	var summarized uint64
	waitUntil := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(e.c.Nodes[0].AuditPath())
		if err != nil {
			t.Fatal(err)
		}
		refused, served, summarized = 0, 0, 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("audit line %q: %v", sc.Text(), err)
			}
			switch {
			case l.Front != "vault":
			case l.Operation == "hsmbroker:UnauthenticatedRefusals":
				var n uint64
				if _, err := fmt.Sscanf(l.Reason, "%d requests that proved no identity", &n); err != nil || l.Peer != "127.0.0.1" ||
					l.Principal != "" || l.Decision != "deny" {
					t.Fatalf("summary line %+v", l)
				}
				summarized += n
			case l.Reason == "unknown or revoked token":
				refused++
			case l.Result == "OK" && l.Principal == "admin":
				served++
			}
		}
		if uint64(refused)+summarized == flood {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("%d refusals with a line and %d in summaries, want %d in all", refused, summarized, flood)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if served != 1 {
		t.Fatalf("%d lines for the valid read in the flood, want 1", served)
	}
	// The burst, and the rate for as long as the flood lasted.
	if limit := 200 + int(20*elapsed.Seconds()) + 1; refused > limit || summarized == 0 {
		t.Fatalf("%d refusals had their own line in %v (limit %d), %d were summarized", refused, elapsed, limit, summarized)
	}
	f, err := os.Open(e.c.Nodes[0].AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Verify(f); err != nil {
		t.Fatalf("the audit log with summaries does not verify: %v", err)
	}
}

// TestRefusalsAudited: requests the endpoint refuses before it can make a
// read of them (a version it cannot read, a write, a path of no key, a URI
// too long) get an audit line like every other request, carrying the
// answer's request id, the refusal, and who asked.
func TestRefusalsAudited(t *testing.T) {
	e := newKeyEnv(t)
	long := "/v1/tde/data/" + strings.Repeat("x", vault.MaxURLLen)
	for _, c := range []struct {
		name, method, path, token string
		status                    int
		result, principal         string
	}{
		{"version not a number", http.MethodGet, "/v1/tde/data/1?version=abc", e.token, 400, "ValidationException", "admin"},
		{"version 0", http.MethodGet, "/v1/tde/data/1?version=0", e.token, 400, "ValidationException", "admin"},
		{"query malformed", http.MethodGet, "/v1/tde/data/1?version=1%", e.token, 400, "ValidationException", "admin"},
		{"write", http.MethodPost, "/v1/tde/data/1", e.token, 405, "ValidationException", "admin"},
		{"no such path", http.MethodGet, "/v1/tde/data/1/", e.token, 404, "NotFoundException", "admin"},
		{"URI too long", http.MethodGet, long, e.token, 414, "ValidationException", "admin"},
		{"no token", http.MethodGet, "/v1/tde/data/1?version=abc", "", 400, "ValidationException", ""},
	} {
		req, err := http.NewRequest(c.method, e.srv.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.token != "" {
			req.Header.Set(vault.TokenHeader, c.token)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != c.status || id == "" {
			t.Errorf("%s: %d, request id %q; want %d and an id", c.name, resp.StatusCode, id, c.status)
			continue
		}
		var line *audit.Record
		for deadline := time.Now().Add(10 * time.Second); line == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, err := os.ReadFile(e.c.Nodes[0].AuditPath())
			if err != nil {
				t.Fatal(err)
			}
			for l := range bytes.Lines(b) {
				var r audit.Record
				if json.Unmarshal(l, &r) == nil && r.RequestID == id {
					line = &r
				}
			}
		}
		switch {
		case line == nil:
			t.Errorf("%s: no audit line for request %s", c.name, id)
		case line.Front != "vault" || line.Result != c.result || line.Principal != c.principal:
			t.Errorf("%s: audit line front %q result %q principal %q; want vault, %s, %q", c.name, line.Front, line.Result, line.Principal, c.result, c.principal)
		case c.principal == "" && (line.Decision != "deny" || !strings.HasPrefix(line.Reason, "no token (none sent")):
			t.Errorf("%s: audit line %+v; want the denial of a request that proved no identity", c.name, *line)
		}
	}
}
