package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// conn is a connection to the env with a certificate for principal and
// role.
func (e *secureEnv) conn(principal string, role authz.Role) *grpc.ClientConn {
	e.t.Helper()
	return hsmtest.DialTLS(e.t, e.addr, hsmtest.ClientTLS(e.t, e.ca, principal, role))
}

// openSilent opens n calls of method on conn whose request message is
// never sent; they end when ctx does.
func openSilent(t *testing.T, ctx context.Context, conn *grpc.ClientConn, method string, n int) []grpc.ClientStream {
	t.Helper()
	var ss []grpc.ClientStream
	for i := 0; i < n; i++ {
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
		if err != nil {
			t.Fatalf("stream %d of %s: %v", i, method, err)
		}
		ss = append(ss, s)
	}
	return ss
}

// TestTapPrincipalLimit: one principal holding calls open without sending
// their message stops at its share of the node's calls in flight; its
// next call is refused (ThrottlingException naming its limit) and
// audited, while other principals, admins included, are still served.
// Node certificates are not held to the share. Calls are released when
// they end.
func TestTapPrincipalLimit(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	e := newSecureEnv(t, audit.New(lb, audit.Options{}))
	e.svc.SetFirstMessageTimeout(time.Minute) // the silent calls stay
	ctx := ctxT(t)
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	admin := e.as("root", "admin")
	key := e.createKey(admin, "alias/share", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	waitUntil(t, "no call in flight", func() bool { return e.svc.InflightCalls() == 0 })

	// No deadline, as the attacker sent none.
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	c1, c2 := e.conn("app", "user"), e.conn("app", "user")
	share := broker.MaxInflightPerPrincipal
	openSilent(t, sctx, c1, "/hsmbroker.v1.CryptoService/Encrypt", share/2)
	openSilent(t, sctx, c2, "/hsmbroker.v1.CryptoService/Encrypt", share-share/2)
	waitUntil(t, "the silent calls in flight", func() bool { return e.svc.InflightCalls() == int64(share) })

	lines := len(auditLines(t, []byte(lb.String())))
	_, err := newClient(c2).crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
	wantErr(t, err, codes.ResourceExhausted, broker.ExcThrottling, "app", "limit")
	recs := auditLines(t, []byte(lb.String()))
	if len(recs) != lines+1 {
		t.Fatalf("%d audit lines for the throttled call, want 1", len(recs)-lines)
	}
	if r := recs[len(recs)-1]; r.Principal != "app" || r.Operation != "kms:Encrypt" || r.Decision != "deny" ||
		!strings.Contains(r.Reason, "throttled") || r.Code != codes.ResourceExhausted.String() {
		t.Errorf("audit line of the throttled call: %+v", r)
	}
	if _, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")}); err != nil {
		t.Errorf("an admin while app holds its share: %v", err)
	}
	if _, err := e.as("other", "user").keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Errorf("another user while app holds its share: %v", err)
	}

	// A member's node certificate is not held to a principal's share.
	iss, err := e.ca.IssueServer("node1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeTLS := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: iss.Key}}}
	n1, n2 := hsmtest.DialTLS(t, e.addr, nodeTLS), hsmtest.DialTLS(t, e.addr, nodeTLS)
	openSilent(t, sctx, n1, "/hsmbroker.v1.ClusterService/ReadIndex", share/2+10)
	openSilent(t, sctx, n2, "/hsmbroker.v1.ClusterService/ReadIndex", share/2+10)
	waitUntil(t, "the node's calls in flight", func() bool { return e.svc.InflightCalls() == int64(2*share+20) })

	// Clients that fill the node's calls stop other clients, not admins,
	// who have a reserve of the node's calls, nor the cluster's own calls.
	clients := broker.MaxInflightCalls - broker.AdminReserve
	openSilent(t, sctx, e.conn("u2", "user"), "/hsmbroker.v1.CryptoService/Encrypt", share)
	openSilent(t, sctx, e.conn("u3", "user"), "/hsmbroker.v1.CryptoService/Encrypt", clients-(2*share+20)-share)
	waitUntil(t, "the node full for clients", func() bool { return e.svc.InflightCalls() == int64(clients) })
	_, err = e.as("u4", "user").keys.ListKeys(ctx, &pb.ListKeysRequest{})
	wantErr(t, err, codes.ResourceExhausted, broker.ExcThrottling, "is handling")
	if _, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("an admin while clients fill the node: %v", err)
	}
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "u3", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatalf("an admin revoking a client that fills the node: %v", err)
	}
	openSilent(t, sctx, e.conn("root", "admin"), "/hsmbroker.v1.CryptoService/Encrypt", broker.AdminReserve)
	waitUntil(t, "the node full", func() bool { return e.svc.InflightCalls() == int64(broker.MaxInflightCalls) })
	_, err = admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
	wantErr(t, err, codes.ResourceExhausted, broker.ExcThrottling, "is handling")
	openSilent(t, sctx, n1, "/hsmbroker.v1.ClusterService/ReadIndex", 2)
	waitUntil(t, "a member's calls past the node's bound", func() bool { return e.svc.InflightCalls() == int64(broker.MaxInflightCalls+2) })

	stop()
	waitUntil(t, "no call in flight once they end", func() bool { return e.svc.InflightCalls() == 0 })
	if _, err := newClient(c1).keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Errorf("app once its calls ended: %v", err)
	}
}

// TestTapFirstMessageTimeout: a call whose request message does not
// arrive in time after its headers is ended and releases its slot, though
// it has no deadline; a call whose message arrives late but in time is
// served, and a server stream (Health.Watch) that received its message is
// not cut however long it lasts.
func TestTapFirstMessageTimeout(t *testing.T) {
	e := newSecureEnv(t, nil)
	const wait = 300 * time.Millisecond
	e.svc.SetFirstMessageTimeout(wait)
	ctx := ctxT(t)
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	admin := e.as("root", "admin")
	key := e.createKey(admin, "alias/first", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	conn := e.conn("app", "user")
	waitUntil(t, "no call in flight", func() bool { return e.svc.InflightCalls() == 0 })

	sctx, stop := context.WithCancel(context.Background()) // no deadline
	defer stop()
	ss := openSilent(t, sctx, conn, "/hsmbroker.v1.CryptoService/Encrypt", 3)
	// An admin's Backup passes the interceptors and waits for its message.
	ss = append(ss, openSilent(t, sctx, e.conn("root", "admin"), "/hsmbroker.v1.ClusterService/Backup", 1)...)
	done := make(chan error, len(ss))
	for _, s := range ss {
		go func() { done <- s.RecvMsg(&pb.EncryptResponse{}) }()
	}
	start := time.Now()
	for range ss {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a call without its message succeeded")
			}
			if status.Code(err) != codes.Canceled {
				t.Errorf("a call without its message ended with %v, want Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call without its message still runs after 10s")
		}
	}
	if took := time.Since(start); took < wait/2 {
		t.Errorf("calls ended after %v, before the %v wait", took, wait)
	}
	waitUntil(t, "the silent calls released", func() bool { return e.svc.InflightCalls() == 0 })

	// A message sent late, but in time, is served.
	s, err := e.conn("root", "admin").NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/hsmbroker.v1.CryptoService/Encrypt")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(wait / 3)
	if err := s.SendMsg(&pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	if err := s.RecvMsg(&pb.EncryptResponse{}); err != nil {
		t.Fatalf("Encrypt whose message came in time: %v", err)
	}

	// A server stream that received its message outlives the wait.
	watch, err := healthpb.NewHealthClient(conn).Watch(sctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := watch.Recv()
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Fatalf("Watch ended after it got its message: %v", err)
	case <-time.After(4 * wait):
	}
	if n := e.svc.InflightCalls(); n != 1 {
		t.Errorf("%d calls in flight with one Watch, want 1", n)
	}
	stop()
	<-ended
	waitUntil(t, "the Watch released", func() bool { return e.svc.InflightCalls() == 0 })
}

// TestTapReflectionNeedsRole: gRPC reflection needs a role other than
// none; its refusal is audited. Health stays open to a revoked
// certificate of the cluster CA.
func TestTapReflectionNeedsRole(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	e := newSecureEnv(t, audit.New(lb, audit.Options{}))
	ctx := ctxT(t)
	admin := e.as("root", "admin")
	user, gone := e.conn("app", "user"), e.conn("gone", "user")
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "gone", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(gone).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check of a revoked certificate: %v", err)
	}
	listServices := func(conn *grpc.ClientConn) error {
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		// A stream the server has already ended makes Send answer io.EOF;
		// its status then comes from Recv.
		if err := s.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = s.Recv()
		_ = s.CloseSend()
		return err
	}
	if err := listServices(user); err != nil {
		t.Fatalf("reflection of a user: %v", err)
	}
	lines := len(auditLines(t, []byte(lb.String())))
	wantErr(t, listServices(gone), codes.PermissionDenied, broker.ExcAccessDenied, "gone", "reflection")
	recs := auditLines(t, []byte(lb.String()))
	if len(recs) != lines+1 {
		t.Fatalf("%d audit lines for the refused reflection, want 1", len(recs)-lines)
	}
	if r := recs[len(recs)-1]; r.Principal != "gone" || r.Decision != "deny" ||
		r.Operation != "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" {
		t.Errorf("audit line of the refused reflection: %+v", r)
	}
}

// TestTapHealthBounded: a revoked certificate may make a health Check but
// not hold a Watch (refused and audited); a user's Watch streams count in
// flight, so it stops at its share and its next call is refused and
// audited while others are served; admitted health calls are not audited.
func TestTapHealthBounded(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	e := newSecureEnv(t, audit.New(lb, audit.Options{}))
	e.svc.SetFirstMessageTimeout(time.Minute)
	ctx := ctxT(t)
	admin := e.as("root", "admin")
	app1, app2, other := e.conn("app", "user"), e.conn("app", "user"), e.conn("other", "user")
	gone := e.conn("gone", "user")
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "gone", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "no call in flight", func() bool { return e.svc.InflightCalls() == 0 })

	// A revoked certificate may ask whether the node serves, not hold a
	// Watch: a refusal audited, and nothing held.
	lines := len(auditLines(t, []byte(lb.String())))
	if _, err := healthpb.NewHealthClient(gone).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check of a revoked certificate: %v", err)
	}
	w, err := healthpb.NewHealthClient(gone).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "gone", "Watch")
	recs := auditLines(t, []byte(lb.String()))
	if len(recs) != lines+1 {
		t.Fatalf("%d audit lines for a revoked certificate's Check and Watch, want 1 (the refused Watch)", len(recs)-lines)
	}
	if r := recs[len(recs)-1]; r.Principal != "gone" || r.Decision != "deny" || r.Operation != "/grpc.health.v1.Health/Watch" {
		t.Errorf("audit line of the refused Watch: %+v", r)
	}

	// A user's Watch streams count against its share.
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	share := broker.MaxInflightPerPrincipal
	openSilent(t, sctx, app1, "/grpc.health.v1.Health/Watch", share/2)
	openSilent(t, sctx, app2, "/grpc.health.v1.Health/Watch", share-share/2)
	waitUntil(t, "the Watch streams in flight", func() bool { return e.svc.InflightCalls() == int64(share) })
	lines = len(auditLines(t, []byte(lb.String())))
	_, err = healthpb.NewHealthClient(app2).Check(ctx, &healthpb.HealthCheckRequest{})
	wantErr(t, err, codes.ResourceExhausted, broker.ExcThrottling, "app", "limit")
	recs = auditLines(t, []byte(lb.String()))
	if len(recs) != lines+1 {
		t.Fatalf("%d audit lines for the throttled health Check, want 1", len(recs)-lines)
	}
	if r := recs[len(recs)-1]; r.Principal != "app" || r.Decision != "deny" || r.Operation != "/grpc.health.v1.Health/Check" {
		t.Errorf("audit line of the throttled health Check: %+v", r)
	}
	if _, err := healthpb.NewHealthClient(other).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health Check of another user meanwhile: %v", err)
	}
	stop()
	waitUntil(t, "the Watch streams released", func() bool { return e.svc.InflightCalls() == 0 })
	if len(auditLines(t, []byte(lb.String()))) != lines+1 {
		t.Error("admitted health calls were audited")
	}
}

// TestTapUnknownMethodAudited: an authenticated caller's call to a method
// the broker does not serve is refused and audited, with the method's name
// cut to 200 bytes; no metric gets the name as a label value.
func TestTapUnknownMethodAudited(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	e := newSecureEnv(t, audit.New(lb, audit.Options{}))
	ctx := ctxT(t)
	conn := e.conn("app", "user")
	long := "/hsmbroker.v1.KeyService/" + strings.Repeat("Nope", 100)
	// Names under the health and reflection services that they do not
	// serve are unknown methods too, not admitted as health calls.
	// So are names that pair one of the broker's services with another
	// service's method: each service serves only its own.
	for _, m := range []string{"/hsmbroker.v1.KeyService/Nope", long, "/grpc.health.v1.Health/Nope", "/grpc.health.Nope",
		"/grpc.reflection.v1.ServerReflection/Nope", "/grpc.reflection.v9.Nope/Nope",
		"/hsmbroker.v1.AuditService/Backup", "/hsmbroker.v1.KeyService/Encrypt", "/hsmbroker.v1.RawService/Encrypt",
		"/hsmbroker.v1.ClusterService/ListPrincipals", "/hsmbroker.v1.DataObjectService/SetPrincipalRole"} {
		lines := len(auditLines(t, []byte(lb.String())))
		err := conn.Invoke(ctx, m, &pb.ListKeysRequest{}, &pb.ListKeysResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("%.40s: %v, want Unimplemented", m, err)
		}
		recs := auditLines(t, []byte(lb.String()))
		if len(recs) != lines+1 {
			t.Fatalf("%.40s: %d audit lines, want 1", m, len(recs)-lines)
		}
		r := recs[len(recs)-1]
		if r.Principal != "app" || r.Decision != "deny" || r.Code != codes.Unimplemented.String() ||
			len(r.Operation) > 200 || !strings.HasPrefix(m, r.Operation) || r.Operation == "" {
			t.Errorf("%.40s: audit line %+v", m, r)
		}
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				if strings.Contains(l.GetValue(), "Nope") {
					t.Errorf("metric %s has label %s=%.40q", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}
