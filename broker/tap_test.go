package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRefusedBeforeRead: revoked (role none) and role-less principals are
// refused when their call's headers arrive, before its message is read: an
// 8 MB Encrypt gets PermissionDenied (reading it would have answered
// ResourceExhausted, the message being over the receive limit), the
// server's tap counts the refusal, and the refusal is audited without
// anything of the message. An authorized caller's oversized message is
// refused by the receive limit, and a node certificate passes the tap.
func TestRefusedBeforeRead(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	e := newSecureEnv(t, audit.New(lb, audit.Options{}))
	ctx := ctxT(t)
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	admin := e.as("root", "admin")
	key := e.createKey(admin, "alias/tap", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	app := e.as("app", "user")
	if _, err := app.keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Fatalf("the user before its revocation: %v", err)
	}
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "app", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	drifter := e.as("drifter", "contractor") // a certificate without a role

	huge := bytes.Repeat([]byte{'A'}, 8<<20)
	mid := bytes.Repeat([]byte{'B'}, 100<<10) // under the receive limit
	for _, c := range []struct {
		name string
		cl   clients
	}{{"revoked", app}, {"role-less", drifter}} {
		for _, pt := range [][]byte{huge, mid} {
			before := e.svc.RefusedBeforeRead()
			lines := len(auditLines(t, []byte(lb.String())))
			_, err := c.cl.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: pt,
				EncryptionContext: map[string]string{"big": strings.Repeat("x", 1000)}})
			wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "none", "kms:Encrypt")
			if got := e.svc.RefusedBeforeRead(); got != before+1 {
				t.Errorf("%s, %d bytes: the tap refused %d calls, want 1", c.name, len(pt), got-before)
			}
			recs := auditLines(t, []byte(lb.String()))
			if len(recs) != lines+1 {
				t.Fatalf("%s: %d audit lines for one refused call", c.name, len(recs)-lines)
			}
			r := recs[len(recs)-1]
			if r.Decision != "deny" || r.Operation != "kms:Encrypt" || r.EncryptionContext != nil || r.KeyRef != "" {
				t.Errorf("%s: audit line %+v, want a denial without anything of the message", c.name, r)
			}
		}
	}

	// An authorized caller: the receive limit, then the operation's own.
	before := e.svc.RefusedBeforeRead()
	_, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: huge})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("admin's 8 MB Encrypt: %v, want ResourceExhausted (receive limit)", err)
	}
	_, err = admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: mid})
	wantErr(t, err, codes.InvalidArgument, broker.ExcValidation, "Plaintext")
	if got := e.svc.RefusedBeforeRead(); got != before {
		t.Errorf("the tap refused %d calls of an admin", got-before)
	}

	// A member's node certificate passes the tap for what nodes call.
	iss, err := e.ca.IssueServer("node1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeTLS := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: iss.Key}}}
	peer := newClient(hsmtest.DialTLS(t, e.addr, nodeTLS))
	if _, err := peer.clus.ReadIndex(ctx, &pb.ReadIndexRequest{}); err != nil {
		t.Fatalf("a node's ReadIndex: %v", err)
	}
	// A caller with a role the method does not admit passes the tap and
	// is refused by the role gate once its (bounded) message is read, so
	// that its audit line names what it asked for.
	before = e.svc.RefusedBeforeRead()
	_, err = admin.clus.ReadIndex(ctx, &pb.ReadIndexRequest{})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied)
	if e.svc.RefusedBeforeRead() != before {
		t.Error("the tap refused an admin's ReadIndex")
	}
}

// TestTapUnauthenticated: on a server that does not make TLS demand a
// certificate, a caller without one is refused by the tap.
func TestTapUnauthenticated(t *testing.T) {
	e := newSecureEnvAuth(t, nil, tls.VerifyClientCertIfGiven)
	c := newClient(hsmtest.DialTLS(t, e.addr, hsmtest.NoCertTLS(e.ca)))
	_, err := c.crypto.Encrypt(ctxT(t), &pb.EncryptRequest{KeyId: "k", Plaintext: bytes.Repeat([]byte{1}, 1<<20)})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Encrypt without a certificate: %v", err)
	}
	if e.svc.RefusedBeforeRead() != 1 {
		t.Fatalf("the tap refused %d calls, want 1", e.svc.RefusedBeforeRead())
	}
}

// TestTapInflightReleased: every call the tap admits is released when it
// ends, however it ends (success, an error, a message over the limit, a
// cancelled or expired call), so the bound on calls in flight never fills
// up with calls that are gone.
func TestTapInflightReleased(t *testing.T) {
	gw := &gateWriter{}
	e := newSecureEnv(t, audit.New(gw, audit.Options{}))
	ctx := ctxT(t)
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	admin := e.as("root", "admin")
	key := e.createKey(admin, "alias/inflight", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	// A call in progress is counted: its audit line waits for the gate.
	gw.close()
	done := make(chan error, 1)
	go func() {
		_, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
		done <- err
	}()
	waitUntil(t, "the held call counted in flight", func() bool { return e.svc.InflightCalls() == 1 })
	gw.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		_, _ = admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: bytes.Repeat([]byte{1}, 300<<10)})
		_, _ = admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/none", Plaintext: []byte("x")})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _ = admin.crypto.Encrypt(cctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
		dctx, dcancel := context.WithTimeout(ctx, time.Nanosecond)
		_, _ = admin.crypto.Encrypt(dctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
		dcancel()
	}
	// Released asynchronously, when each stream's context ends.
	waitUntil(t, "no call counted in flight", func() bool { return e.svc.InflightCalls() == 0 })
}

// waitUntil waits for cond, failing the test after 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	hsmtest.WaitUntil(t, what, 10*time.Second, cond)
}

// gateWriter is an audit log writer whose writes wait while it is closed.
type gateWriter struct {
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *gateWriter) close() { g.mu.Lock(); g.gate = make(chan struct{}); g.mu.Unlock() }

func (g *gateWriter) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return len(p), nil
}
