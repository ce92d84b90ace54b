package broker_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestAuditAmplification: one refused Encrypt from a revoked principal
// (role none), and one from a user, with a multi-megabyte encryption
// context of characters JSON escapes six-fold, through real gRPC with
// mutual TLS. Each leaves an audit line within audit.MaxLine that says the
// context was omitted; the log reopens (a restart) and verifies.
func TestAuditAmplification(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newSecureEnv(t, log)
	ctx := ctxT(t)
	admin := e.as("root", pki.RoleAdmin)
	key := e.createKey(admin, "alias/amplified", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "revoked", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	dial := func(principal, role string) clients {
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(hsmtest.ClientTLS(t, e.ca, principal, role))),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return newClient(conn)
	}
	huge := map[string]string{"tenant": strings.Repeat("<", 3<<20)}
	for _, who := range []struct{ principal, role string }{{"revoked", pki.RoleUser}, {"ursula", pki.RoleUser}} {
		_, err := dial(who.principal, who.role).crypto.Encrypt(withRequestID(ctx, who.principal+"-"+strings.Repeat("x", 100)),
			&pb.EncryptRequest{KeyId: key + strings.Repeat("k", 1<<20), Plaintext: []byte("p"), EncryptionContext: huge})
		if err == nil {
			t.Fatalf("%s: an Encrypt with a %d-byte context succeeded", who.principal, len(huge["tenant"]))
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) > audit.MaxLine {
			t.Fatalf("audit line %d has %d bytes, more than %d", i+1, len(line), audit.MaxLine)
		}
	}
	recs := auditLines(t, b)
	omitted := 0
	for _, r := range recs {
		if r.Operation == "kms:Encrypt" {
			if r.EncryptionContext != nil || !strings.Contains(r.ContextOmitted, "8192") || len(r.KeyRef) > 1024 {
				t.Errorf("Encrypt line keeps what it should bound: context %d pairs, omitted %q, key ref %d bytes", len(r.EncryptionContext), r.ContextOmitted, len(r.KeyRef))
			}
			omitted++
		}
	}
	if omitted != 2 {
		t.Fatalf("%d Encrypt lines, want 2", omitted)
	}
	// A restart continues the log, and the chain holds.
	log, err = audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = log.Close()
	rep, err := audit.Verify(bytes.NewReader(b))
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
