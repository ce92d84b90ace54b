package vault_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
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
// reads are refused (503) and no key material leaves; afterwards they are
// served again.
func TestNoKeyWithoutAuditLine(t *testing.T) {
	p := hsmtest.NewPartition(t)
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
	if _, err := keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: "alias/tde", GranteePrincipal: "db", Operations: []string{"Decrypt"}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(vault.New(svc.TDE(), hsmtest.QuietLogger()))
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv}

	material, _ := e.read("/v1/tde/data/1", tok.GetToken())
	w.fail.Store(true)
	for _, path := range []string{"/v1/tde/data/1", "/v1/sys/mounts/tde/tune"} {
		code, body := e.get(path, tok.GetToken())
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "audit log") {
			t.Fatalf("GET %s with the audit log failing: %d %s", path, code, body)
		}
		if strings.Contains(body, string(material)) || strings.Contains(body, hex.EncodeToString(material)) {
			t.Fatal("key material answered without an audit line")
		}
	}
	w.fail.Store(false)
	if again, _ := e.read("/v1/tde/data/1", tok.GetToken()); !bytes.Equal(again, material) {
		t.Fatal("a different key after the outage")
	}
}
