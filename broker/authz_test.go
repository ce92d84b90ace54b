package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// secureEnv is one broker served with mutual TLS, as the daemon serves it,
// and an optional audit log: the identities of its clients are real.
type secureEnv struct {
	t    *testing.T
	ca   *pki.CA
	addr string
	svc  *broker.Service
	node *cluster.Node
}

func newSecureEnv(t *testing.T, log *audit.Log) *secureEnv {
	t.Helper()
	return newSecureEnvAuth(t, log, tls.RequireAndVerifyClientCert)
}

// newSecureEnvAuth is newSecureEnv with another TLS client authentication
// policy: tls.VerifyClientCertIfGiven lets a client without a certificate
// reach the interceptors, which must refuse it themselves.
func newSecureEnvAuth(t *testing.T, log *audit.Log, clientAuth tls.ClientAuthType) *secureEnv {
	t.Helper()
	node, svc := newBareNode(t, "node1", hsmtest.NewPartition(t), broker.Config{AuditLog: log})
	ca, err := pki.NewCA("authz test CA")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueServer("node1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := svc.NewGRPCServer(&tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: clientAuth,
		ClientCAs: ca.Pool(), Certificates: []tls.Certificate{{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: iss.Key}}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &secureEnv{t: t, ca: ca, addr: lis.Addr().String(), svc: svc, node: node}
}

// as is a client of the env with a certificate for principal and role.
type clients struct {
	keys   pb.KeyServiceClient
	crypto pb.CryptoServiceClient
	clus   pb.ClusterServiceClient
	access pb.AccessServiceClient
}

func newClient(conn *grpc.ClientConn) clients {
	return clients{pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn), pb.NewClusterServiceClient(conn), pb.NewAccessServiceClient(conn)}
}

func (e *secureEnv) as(principal string, role authz.Role) clients {
	e.t.Helper()
	return newClient(hsmtest.DialTLS(e.t, e.addr, hsmtest.ClientTLS(e.t, e.ca, principal, role)))
}

func (e *secureEnv) createKey(c clients, alias string, spec pb.KeySpec) string {
	e.t.Helper()
	resp, err := c.keys.CreateKey(ctxT(e.t), &pb.CreateKeyRequest{AliasName: alias, KeySpec: spec})
	if err != nil {
		e.t.Fatalf("create %s: %v", alias, err)
	}
	return resp.GetKeyMetadata().GetKeyId()
}

func isDenied(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied
}

// TestAuthenticationRequired: no certificate, an expired one, or one from
// another CA never gets a call through, and leaves no audit line (the
// handshake fails before any request exists). A valid certificate without
// a role is authenticated but may do nothing, and is audited as denied.
func TestAuthenticationRequired(t *testing.T) {
	var buf bytes.Buffer
	log := audit.New(&lockedBuffer{b: &buf}, audit.Options{})
	e := newSecureEnv(t, log)
	ctx := ctxT(t)
	for name, cfg := range map[string]*tls.Config{
		"no certificate":      hsmtest.NoCertTLS(e.ca),
		"expired certificate": hsmtest.ExpiredClientTLS(t, e.ca, "admin", authz.RoleAdmin),
		"foreign CA":          hsmtest.ForeignClientTLS(t, e.ca, "admin", authz.RoleAdmin),
	} {
		t.Run(name, func(t *testing.T) {
			c := newClient(hsmtest.DialTLS(t, e.addr, cfg))
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := c.keys.ListKeys(cctx, &pb.ListKeysRequest{})
			if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated {
				t.Fatalf("ListKeys = %v (%s), want Unavailable or Unauthenticated", err, code)
			}
			if _, err := c.access.WhoAmI(cctx, &pb.WhoAmIRequest{}); err == nil {
				t.Fatal("WhoAmI succeeded")
			}
		})
	}
	if buf.Len() != 0 {
		t.Fatalf("refused handshakes left audit lines:\n%s", buf.String())
	}
	roleless := e.as("drifter", "contractor")
	_, err := roleless.keys.ListKeys(ctx, &pb.ListKeysRequest{})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "drifter", "none")
	rep, err := audit.Verify(bytes.NewReader(buf.Bytes()))
	if err != nil || rep.Lines != 1 || !strings.Contains(buf.String(), `"decision":"deny"`) {
		t.Fatalf("audit after the role-less call: %+v %v\n%s", rep, err, buf.String())
	}
}

// lockedBuffer is an io.Writer safe for the test to read while the server
// writes.
type lockedBuffer struct {
	mu   sync.Mutex
	b    *bytes.Buffer
	fail atomic.Bool
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	if l.fail.Load() {
		return 0, errors.New("no space left on device")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// matrixOps are the operations the authorization matrix tries on every key.
// Each returns the call's error.
type matrixOp struct {
	name string
	call func(ctx context.Context, c clients, key string, blob []byte) error
}

var (
	matrixContext = map[string]string{"app": "bob", "tenant": "a"}
	aliasCounter  atomic.Int64
)

func matrixOps() []matrixOp {
	ec := matrixContext
	return []matrixOp{
		{"Encrypt", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k, Plaintext: []byte("x"), EncryptionContext: ec})
			return err
		}},
		{"EncryptOtherContext", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k, Plaintext: []byte("x"), EncryptionContext: map[string]string{"app": "eve", "tenant": "b"}})
			return err
		}},
		{"Decrypt", func(ctx context.Context, c clients, _ string, blob []byte) error {
			_, err := c.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec})
			return err
		}},
		{"ReEncrypt", func(ctx context.Context, c clients, k string, blob []byte) error {
			_, err := c.crypto.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: blob, SourceEncryptionContext: ec,
				DestinationKeyId: k, DestinationEncryptionContext: ec})
			return err
		}},
		{"GenerateDataKey", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: k, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, EncryptionContext: ec})
			return err
		}},
		{"GenerateDataKeyWithoutPlaintext", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.crypto.GenerateDataKeyWithoutPlaintext(ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{KeyId: k,
				KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, EncryptionContext: ec})
			return err
		}},
		{"DescribeKey", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: k})
			return err
		}},
		{"ListKeyTags", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: k})
			return err
		}},
		{"GetKeyPolicy", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.GetKeyPolicy(ctx, &pb.GetKeyPolicyRequest{KeyId: k})
			return err
		}},
		{"ListGrants", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: k})
			return err
		}},
		{"UpdateKeyDescription", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: k, Description: "touched"})
			return err
		}},
		{"TagKey", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.TagKey(ctx, &pb.TagKeyRequest{KeyId: k, Tags: map[string]string{"touched": "yes"}})
			return err
		}},
		{"CreateAlias", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: fmt.Sprintf("alias/matrix-%d", aliasCounter.Add(1)), TargetKeyId: k})
			return err
		}},
		{"RotateKey", func(ctx context.Context, c clients, k string, _ []byte) error {
			_, err := c.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k})
			return err
		}},
	}
}

// TestAuthorizationMatrix tries 14 operations on 4 keys as 7 principals
// and checks every cell against what roles, policies and grants say:
//
//	k1: the default policy (its creator admin1, and every admin).
//	k2: admins, and alice for encryption, data keys and DescribeKey.
//	k3: the default policy, and a grant to bob for Encrypt, Decrypt,
//	    GenerateDataKey and DescribeKey under encryption context app=bob.
//	k4: every admin, except admin2 who is denied everything; alice may
//	    Decrypt with tenant=a; every user may DescribeKey.
//
// Principals: admin1 and admin2 (admin), alice, bob and carol (user),
// audra (auditor), and mallory, whose user certificate the cluster has
// demoted to role none.
func TestAuthorizationMatrix(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin1 := e.as("admin1", authz.RoleAdmin)
	k := map[string]string{}
	for _, name := range []string{"k1", "k2", "k3", "k4"} {
		k[name] = e.createKey(admin1, "alias/"+name, pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	}
	put := func(key, policy string) {
		if _, err := admin1.keys.PutKeyPolicy(ctx, &pb.PutKeyPolicyRequest{KeyId: key, Policy: policy}); err != nil {
			t.Fatalf("put policy: %v", err)
		}
	}
	// Statements whose Resource names another key, or this key in another
	// region, apply to nothing here: carol gains nothing on k2 and admin1
	// loses nothing; on k4 a statement naming k4's own ARN applies.
	otherRegion := strings.Replace(e.svc.KeyARN(k["k2"]), ":"+e.svc.Region()+":", ":eu-west-9:", 1)
	put(k["k2"], `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"alice"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"carol"},"Action":"kms:*","Resource":"`+e.svc.KeyARN(k["k1"])+`"},
	  {"Effect":"Deny","Principal":{"AWS":"admin1"},"Action":"kms:*","Resource":"`+otherRegion+`"}]}`)
	put(k["k4"], `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/admin2"},"Action":"*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Decrypt","Resource":"*",
	   "Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"a"}}},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:role/user"},"Action":"kms:DescribeKey","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"carol"},"Action":"kms:Encrypt","Resource":"`+e.svc.KeyARN(k["k4"])+`"}]}`)
	if _, err := admin1.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: k["k3"], GranteePrincipal: "bob",
		Operations:  []string{"Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"},
		Constraints: &pb.GrantConstraints{EncryptionContextSubset: map[string]string{"app": "bob"}}}); err == nil {
		t.Fatal("a grant with constraints on DescribeKey was accepted")
	}
	if _, err := admin1.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: k["k3"], GranteePrincipal: "bob",
		Operations:  []string{"Encrypt", "Decrypt", "GenerateDataKey"},
		Constraints: &pb.GrantConstraints{EncryptionContextSubset: map[string]string{"app": "bob"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin1.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: k["k3"], GranteePrincipal: "bob",
		Operations: []string{"DescribeKey"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin1.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "mallory", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	for name, id := range k {
		resp, err := admin1.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("secret"), EncryptionContext: matrixContext})
		if err != nil {
			t.Fatal(err)
		}
		blobs[name] = resp.GetCiphertextBlob()
	}

	all := map[string]bool{}
	for _, op := range matrixOps() {
		all[op.name] = true
	}
	set := func(ops ...string) map[string]bool {
		m := map[string]bool{}
		for _, o := range ops {
			m[o] = true
		}
		return m
	}
	metadata := set("DescribeKey", "ListKeyTags", "GetKeyPolicy", "ListGrants")
	aliceK2 := set("Encrypt", "EncryptOtherContext", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "DescribeKey")
	principals := []struct {
		name  string
		role  authz.Role
		allow map[string]map[string]bool // key -> allowed operations
	}{
		{"admin1", authz.RoleAdmin, map[string]map[string]bool{"k1": all, "k2": all, "k3": all, "k4": all}},
		{"admin2", authz.RoleAdmin, map[string]map[string]bool{"k1": all, "k2": all, "k3": all, "k4": metadata}},
		{"alice", authz.RoleUser, map[string]map[string]bool{"k2": aliceK2, "k4": set("Decrypt", "DescribeKey")}},
		{"bob", authz.RoleUser, map[string]map[string]bool{"k3": set("Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"), "k4": set("DescribeKey")}},
		{"carol", authz.RoleUser, map[string]map[string]bool{"k4": set("DescribeKey", "Encrypt", "EncryptOtherContext")}},
		{"audra", authz.RoleAuditor, map[string]map[string]bool{"k1": metadata, "k2": metadata, "k3": metadata, "k4": metadata}},
		{"mallory", authz.RoleUser, nil},
	}
	cells, allowed, unexpectedAllows, unexpectedDenials := 0, 0, 0, 0
	for _, p := range principals {
		c := e.as(p.name, p.role)
		for _, key := range []string{"k1", "k2", "k3", "k4"} {
			for _, op := range matrixOps() {
				cells++
				err := op.call(ctx, c, k[key], blobs[key])
				want := p.allow[key][op.name]
				switch {
				case want && err != nil:
					unexpectedDenials++
					t.Errorf("%s %s on %s: %v; want allowed", p.name, op.name, key, err)
				case !want && err == nil:
					unexpectedAllows++
					t.Errorf("%s %s on %s: allowed; want denied", p.name, op.name, key)
				case !want && !isDenied(err):
					t.Errorf("%s %s on %s: %v; want PermissionDenied", p.name, op.name, key, err)
				case want:
					allowed++
				}
			}
		}
	}
	t.Logf("authorization matrix: %d principals x %d operations x 4 keys = %d cells, %d allowed, %d denied; %d unexpected allows, %d unexpected denials",
		len(principals), len(matrixOps()), cells, allowed, cells-allowed, unexpectedAllows, unexpectedDenials)
}

// TestRoleGate: operations that name no key are decided by role alone.
func TestRoleGate(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	ops := []struct {
		name  string
		roles string // the roles allowed
		call  func(c clients) error
	}{
		{"CreateKey", "admin", func(c clients) error {
			_, err := c.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/gate-%d", aliasCounter.Add(1))})
			return err
		}},
		{"ListKeys", "admin user auditor", func(c clients) error { _, err := c.keys.ListKeys(ctx, &pb.ListKeysRequest{}); return err }},
		{"GenerateRandom", "admin user", func(c clients) error {
			_, err := c.crypto.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: 16})
			return err
		}},
		{"GetClusterStatus", "admin auditor", func(c clients) error {
			_, err := c.clus.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
			return err
		}},
		{"CreateJoinToken", "admin", func(c clients) error {
			_, err := c.clus.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node9"})
			return err
		}},
		{"ListJoinTokens", "admin auditor", func(c clients) error {
			_, err := c.clus.ListJoinTokens(ctx, &pb.ListJoinTokensRequest{})
			return err
		}},
		{"Backup", "admin", func(c clients) error { return backup(ctx, c, io.Discard) }},
		{"ForwardCommand", "", func(c clients) error {
			_, err := c.clus.ForwardCommand(ctx, &pb.ForwardCommandRequest{Command: []byte{1}})
			return err
		}},
		{"ListPrincipals", "admin auditor", func(c clients) error {
			_, err := c.access.ListPrincipals(ctx, &pb.ListPrincipalsRequest{})
			return err
		}},
		{"SetPrincipalRole", "admin", func(c clients) error {
			_, err := c.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "someone", Role: pb.PrincipalRole_PRINCIPAL_ROLE_USER})
			return err
		}},
		{"WhoAmI", "admin user auditor", func(c clients) error { _, err := c.access.WhoAmI(ctx, &pb.WhoAmIRequest{}); return err }},
	}
	for _, role := range []authz.Role{authz.RoleAdmin, authz.RoleUser, authz.RoleAuditor} {
		c := e.as("gate-"+string(role), role)
		for _, op := range ops {
			err := op.call(c)
			want := strings.Contains(" "+op.roles+" ", " "+string(role)+" ")
			if want && err != nil || !want && !isDenied(err) {
				t.Errorf("%s as %s: %v, want allowed=%v", op.name, role, err, want)
			}
		}
	}
}

// TestPrincipalRecords: the cluster's record of a principal's role
// overrides its certificate's, and nobody changes their own.
func TestPrincipalRecords(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	dave := e.as("dave", authz.RoleUser)
	who, err := dave.access.WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil || who.GetPrincipal() != "dave" || who.GetRole() != pb.PrincipalRole_PRINCIPAL_ROLE_USER || who.GetRoleSource() != "certificate" {
		t.Fatalf("whoami = %v %v", who, err)
	}
	if _, err := dave.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/dave"}); !isDenied(err) {
		t.Fatalf("user created a key: %v", err)
	}
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "dave", Role: pb.PrincipalRole_PRINCIPAL_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/dave"}); err != nil {
		t.Fatalf("promoted dave: %v", err)
	}
	_, err = admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "root", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE})
	wantErr(t, err, codes.FailedPrecondition, broker.ExcInvalidState, "own role")
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "dave", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.keys.ListKeys(ctx, &pb.ListKeysRequest{}); !isDenied(err) {
		t.Fatalf("demoted dave listed keys: %v", err)
	}
	list, err := admin.access.ListPrincipals(ctx, &pb.ListPrincipalsRequest{})
	if err != nil || len(list.GetPrincipals()) != 1 || list.GetPrincipals()[0].GetRole() != pb.PrincipalRole_PRINCIPAL_ROLE_NONE {
		t.Fatalf("principals = %v %v", list, err)
	}
	if _, err := admin.access.DeletePrincipalRole(ctx, &pb.DeletePrincipalRoleRequest{Principal: "dave"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Fatalf("dave back to his certificate's role: %v", err)
	}
}

// TestGrantsThatCouldNeverApplyAreRefused: a grant is matched against the
// caller's principal name and used only for operations its key can do, so
// a grant for "*", a role ARN, another account's user, or an operation the
// key cannot do would be kept and never used. Each is refused, naming the
// field; the same grant for a principal by name or by this account's user
// ARN, with operations the key can do, is made.
func TestGrantsThatCouldNeverApplyAreRefused(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	sym := e.createKey(admin, "alias/sym", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	ec, err := admin.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/signer", KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256, KeyUsage: pb.KeyUsage_KEY_USAGE_SIGN_VERIFY})
	if err != nil {
		t.Fatal(err)
	}
	signer := ec.GetKeyMetadata().GetKeyId()
	grant := func(key, grantee, retiring, name string, ops ...string) error {
		_, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: grantee, RetiringPrincipal: retiring, Name: name, Operations: ops})
		return err
	}
	for _, c := range []struct {
		name, key, grantee, retiring, grantName string
		ops                                     []string
		field                                   string
	}{
		{"everyone", sym, "*", "", "", []string{"Encrypt"}, "GranteePrincipal"},
		{"a role", sym, "arn:aws:iam::000000000000:role/user", "", "", []string{"Encrypt"}, "GranteePrincipal"},
		{"another account's user", sym, "arn:aws:iam::999999999999:user/erin", "", "", []string{"Encrypt"}, "GranteePrincipal"},
		{"retiring role", sym, "erin", "arn:aws:iam::000000000000:role/admin", "", []string{"Encrypt"}, "RetiringPrincipal"},
		{"Sign on a symmetric key", sym, "erin", "", "", []string{"Encrypt", "Sign"}, "Sign"},
		{"GenerateMac on a symmetric key", sym, "erin", "", "", []string{"GenerateMac"}, "GenerateMac"},
		{"GetPublicKey on a symmetric key", sym, "erin", "", "", []string{"GetPublicKey"}, "GetPublicKey"},
		{"Encrypt on a signing key", signer, "erin", "", "", []string{"Encrypt"}, "Encrypt"},
		{"GenerateDataKey on a signing key", signer, "erin", "", "", []string{"GenerateDataKey"}, "GenerateDataKey"},
		{"a name with a space", sym, "erin", "", "bad name!", []string{"Encrypt"}, "Name"},
	} {
		wantErr(t, grant(c.key, c.grantee, c.retiring, c.grantName, c.ops...), codes.InvalidArgument, "ValidationException", c.field)
	}
	for _, op := range []string{"CreateGrant", "DeriveSharedSecret"} {
		wantErr(t, grant(sym, "erin", "", "", op), codes.FailedPrecondition, "UnsupportedOperationException", op)
	}
	wantErr(t, grant(sym, "erin", "", "", "Fly"), codes.InvalidArgument, "ValidationException", "Fly")
	for _, k := range []string{sym, signer} {
		if r, err := admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: k}); err != nil || len(r.GetGrants()) != 0 {
			t.Fatalf("grants after the refusals: %v %v", r.GetGrants(), err)
		}
	}
	for _, ok := range []error{
		grant(sym, "erin", "", "app-1:enc/x_y-z", "Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey", "RetireGrant"),
		grant(sym, "arn:aws:iam::000000000000:user/frank", "arn:aws:iam::000000000000:user/root", "", "ReEncryptFrom", "ReEncryptTo"),
		grant(signer, "erin", "", "", "Sign", "Verify", "GetPublicKey", "DescribeKey"),
	} {
		if ok != nil {
			t.Errorf("a grant that can apply was refused: %v", ok)
		}
	}
}

// TestGrantLifecycle: who may retire and revoke grants, and that a grant
// stops working once gone.
func TestGrantLifecycle(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	erin, frank := e.as("erin", authz.RoleUser), e.as("frank", authz.RoleUser)
	key := e.createKey(admin, "alias/granted", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	encrypt := func(c clients) error {
		_, err := c.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("x")})
		return err
	}
	if err := encrypt(erin); !isDenied(err) {
		t.Fatalf("before the grant: %v", err)
	}
	g, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "arn:aws:iam::000000000000:user/erin",
		Operations: []string{"Encrypt"}, RetiringPrincipal: "frank", Name: "erin-encrypts"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "erin",
		Operations: []string{"Encrypt"}, RetiringPrincipal: "frank", Name: "erin-encrypts"})
	if err != nil || again.GetGrantId() != g.GetGrantId() {
		t.Fatalf("same named grant again: %v %v", again, err)
	}
	if err := encrypt(erin); err != nil {
		t.Fatalf("with the grant: %v", err)
	}
	list, err := admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: "alias/granted"})
	if err != nil || len(list.GetGrants()) != 1 || list.GetGrants()[0].GetGranteePrincipal() != "erin" || list.GetGrants()[0].GetIssuingPrincipal() != "root" {
		t.Fatalf("grants = %v %v", list, err)
	}
	// The grantee may not retire it (the grant does not give RetireGrant);
	// the retiring principal may.
	_, err = erin.keys.RetireGrant(ctx, &pb.RetireGrantRequest{GrantId: g.GetGrantId()})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "retire")
	if _, err := frank.keys.RevokeGrant(ctx, &pb.RevokeGrantRequest{KeyId: key, GrantId: g.GetGrantId()}); !isDenied(err) {
		t.Fatalf("a user revoked a grant: %v", err)
	}
	if _, err := frank.keys.RetireGrant(ctx, &pb.RetireGrantRequest{GrantId: g.GetGrantToken()}); err != nil {
		t.Fatal(err)
	}
	if err := encrypt(erin); !isDenied(err) {
		t.Fatalf("after retirement: %v", err)
	}
	g2, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "erin", Operations: []string{"Encrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.keys.RevokeGrant(ctx, &pb.RevokeGrantRequest{KeyId: key, GrantId: g2.GetGrantId()}); err != nil {
		t.Fatal(err)
	}
	if err := encrypt(erin); !isDenied(err) {
		t.Fatalf("after revocation: %v", err)
	}
	_, err = admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "erin", Operations: []string{"Decrypt", "CreateKey"}})
	wantErr(t, err, codes.InvalidArgument, broker.ExcValidation, "CreateKey")
	// A malformed grant id is the caller's mistake, not a missing grant.
	_, err = admin.keys.RevokeGrant(ctx, &pb.RevokeGrantRequest{KeyId: key, GrantId: "x"})
	wantErr(t, err, codes.InvalidArgument, broker.ExcInvalidGrantID, "GrantId", "64 lowercase hex")
	_, err = admin.keys.RetireGrant(ctx, &pb.RetireGrantRequest{GrantId: strings.ToUpper(g2.GetGrantId())})
	wantErr(t, err, codes.InvalidArgument, broker.ExcInvalidGrantID, "GrantId")
	_, err = admin.keys.RevokeGrant(ctx, &pb.RevokeGrantRequest{KeyId: key, GrantId: g2.GetGrantId()})
	wantErr(t, err, codes.NotFound, broker.ExcNotFound, "grant")
}

// auditLines reads an audit log as records.
func auditLines(t *testing.T, b []byte) []audit.Record {
	t.Helper()
	if _, err := audit.Verify(bytes.NewReader(b)); err != nil {
		t.Fatalf("audit log does not verify: %v", err)
	}
	var recs []audit.Record
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

func withRequestID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
}

// TestAuditCompleteness runs a script of requests, allowed and denied,
// reads and changes, as several principals, and finds exactly one audit
// line per request, in order, with its request id, principal, operation,
// key and result, and never the plaintext.
func TestAuditCompleteness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	e := newSecureEnv(t, log)
	ctx := ctxT(t)
	admin, user, auditor := e.as("root", authz.RoleAdmin), e.as("ursula", authz.RoleUser), e.as("audra", authz.RoleAuditor)
	key := e.createKey(admin, "alias/audited", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	_, setup := log.LastHash() // the script's lines follow the set-up's
	secret := []byte("the plaintext must never reach the audit log")
	type step struct {
		who, op, result string
		call            func(ctx context.Context) error
	}
	var blob []byte
	script := []step{
		{"root", "kms:Encrypt", "OK", func(ctx context.Context) error {
			r, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: secret, EncryptionContext: map[string]string{"order": "42"}})
			blob = r.GetCiphertextBlob()
			return err
		}},
		{"ursula", "kms:Decrypt", broker.ExcAccessDenied, func(ctx context.Context) error {
			_, err := user.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: map[string]string{"order": "42"}})
			return err
		}},
		{"root", "kms:CreateGrant", "OK", func(ctx context.Context) error {
			_, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "ursula", Operations: []string{"Decrypt"}})
			return err
		}},
		{"ursula", "kms:Decrypt", "OK", func(ctx context.Context) error {
			_, err := user.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: map[string]string{"order": "42"}})
			return err
		}},
		{"ursula", "kms:Decrypt", broker.ExcInvalidCiphertext, func(ctx context.Context) error {
			_, err := user.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: map[string]string{"order": "43"}})
			return err
		}},
		{"audra", "kms:DescribeKey", "OK", func(ctx context.Context) error {
			_, err := auditor.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: key})
			return err
		}},
		{"audra", "kms:DisableKey", broker.ExcAccessDenied, func(ctx context.Context) error {
			_, err := auditor.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: key})
			return err
		}},
		{"root", "kms:DisableKey", "OK", func(ctx context.Context) error {
			_, err := admin.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: key})
			return err
		}},
		{"root", "kms:Encrypt", broker.ExcDisabled, func(ctx context.Context) error {
			_, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: secret})
			return err
		}},
		{"root", "kms:EnableKey", "OK", func(ctx context.Context) error {
			_, err := admin.keys.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: key})
			return err
		}},
		{"audra", "hsmbroker:ReadAuditLog", "OK", func(ctx context.Context) error {
			_, err := auditor.access.ReadAuditLog(ctx, &pb.ReadAuditLogRequest{})
			return err
		}},
		{"ursula", "kms:CreateKey", broker.ExcAccessDenied, func(ctx context.Context) error {
			_, err := user.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/nope"})
			return err
		}},
	}
	for i, s := range script {
		err := s.call(withRequestID(ctx, fmt.Sprintf("req-%02d", i)))
		if (err == nil) != (s.result == "OK") {
			t.Fatalf("step %d (%s %s): %v", i, s.who, s.op, err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A change has an intent line, written before it is proposed, and its
	// outcome, which names the intent; every other request one line.
	var recs []audit.Record
	intents := map[uint64]audit.Record{}
	for _, r := range auditLines(t, b)[setup:] {
		if r.Result == audit.ResultIntent {
			intents[r.Seq] = r
			continue
		}
		if r.Intent != 0 {
			in, ok := intents[r.Intent]
			if !ok || in.RequestID != r.RequestID || in.Operation != r.Operation {
				t.Errorf("outcome %+v names intent %d, which is %+v", r, r.Intent, in)
			}
			delete(intents, r.Intent)
			if r.Operation != "kms:CreateGrant" && r.Operation != "kms:DisableKey" && r.Operation != "kms:EnableKey" {
				t.Errorf("an intent line for %s, which changes nothing", r.Operation)
			}
		} else if r.Result == "OK" && (r.Operation == "kms:CreateGrant" || r.Operation == "kms:DisableKey" || r.Operation == "kms:EnableKey") {
			t.Errorf("change %s (%s) without an intent line", r.Operation, r.RequestID)
		}
		recs = append(recs, r)
	}
	if len(intents) != 0 {
		t.Errorf("intents without outcome: %+v", intents)
	}
	if len(recs) != len(script) {
		t.Fatalf("%d requests, %d audit lines:\n%s", len(script), len(recs), b)
	}
	for i, r := range recs {
		s := script[i]
		if r.RequestID != fmt.Sprintf("req-%02d", i) || r.Principal != s.who || r.Operation != s.op || r.Result != s.result || r.Node != "node1" || r.Peer == "" {
			t.Errorf("line %d = %+v; want request req-%02d, %s %s -> %s", i+1, r, i, s.who, s.op, s.result)
		}
		if (r.Decision == "deny") != (s.result == broker.ExcAccessDenied) {
			t.Errorf("line %d: decision %q for result %s", i+1, r.Decision, r.Result)
		}
		switch {
		case s.op == "hsmbroker:ReadAuditLog" || s.op == "kms:CreateKey":
		case s.result == broker.ExcAccessDenied && r.KeyID == "":
			if r.KeyRef != key { // refused before the key was looked up
				t.Errorf("line %d: key ref %q, want %s", i+1, r.KeyRef, key)
			}
		case r.KeyID != key:
			t.Errorf("line %d: key %q, want %s", i+1, r.KeyID, key)
		}
	}
	if recs[0].EncryptionContext["order"] != "42" {
		t.Errorf("encryption context not audited: %+v", recs[0])
	}
	if bytes.Contains(b, secret) || bytes.Contains(b, []byte("dGhlIHBsYWludGV4d")) {
		t.Fatal("the plaintext reached the audit log")
	}
	// Tampering with any one line is found at that line.
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i := range len(lines) - 1 {
		forged := bytes.Join(append(append(append([][]byte(nil), lines[:i]...),
			bytes.Replace(lines[i], []byte(`"node":"node1"`), []byte(`"node":"node9"`), 1)), lines[i+1:]...), nil)
		_, err := audit.Verify(bytes.NewReader(forged))
		var be *audit.BrokenError
		if !errors.As(err, &be) || be.Line != i+1 {
			t.Errorf("tampered line %d: %v", i+1, err)
		}
	}
}

// TestAuditUnwritable: while the audit log cannot be written, requests
// fail with Unavailable and nothing changes; plaintext is not released;
// once it can be written again, the state is as it was and the chain is
// whole.
func TestAuditUnwritable(t *testing.T) {
	var buf bytes.Buffer
	w := &lockedBuffer{b: &buf}
	e := newSecureEnv(t, audit.New(w, audit.Options{}))
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	key := e.createKey(admin, "alias/before", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	enc, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}
	before := e.node.State().Digest()

	w.fail.Store(true)
	_, err = admin.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/during"})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "audit log")
	_, err = admin.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: key})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "audit log")
	_, err = admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "x", Operations: []string{"Encrypt"}})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "audit log")
	dec, err := admin.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "audit log")
	if dec.GetPlaintext() != nil {
		t.Fatal("plaintext released without an audit line")
	}
	if after := e.node.State().Digest(); after != before {
		t.Fatal("the state changed while the audit log could not be written")
	}

	w.fail.Store(false)
	keys, err := admin.keys.ListKeys(ctx, &pb.ListKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 1 || keys.GetKeys()[0].GetKeyState() != pb.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("keys after the outage: %v %v", keys, err)
	}
	dec, err = admin.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	if err != nil || string(dec.GetPlaintext()) != "kept" {
		t.Fatalf("decrypt after the outage: %v", err)
	}
	recs := auditLines(t, []byte(w.String()))
	if n := len(recs); n != 5 { // CreateKey (intent and outcome), Encrypt, ListKeys, Decrypt
		t.Fatalf("%d audit lines, want 5", n)
	}
}

// TestExtractionAttempts: no API returns key material, whatever field is
// asked; the wrapped key blobs of the replicated state are no ciphertexts;
// and every decryption failure is the same error.
func TestExtractionAttempts(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	sym := e.createKey(admin, "alias/sym", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	mac := e.createKey(admin, "alias/mac", pb.KeySpec_KEY_SPEC_HMAC_256)
	k, _ := e.node.State().Key(sym)
	wrapped := k.Versions[0].Wrapped
	mk, _ := e.node.State().Key(mac)

	// Every read of a key answers without its wrapped (or any) material.
	var answers [][]byte
	keep := func(m interface{ String() string }, err error) {
		if err == nil {
			answers = append(answers, []byte(m.String()))
		}
	}
	d, err := admin.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: sym})
	keep(d, err)
	v, err := admin.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: sym})
	keep(v, err)
	p, err := admin.keys.GetKeyPolicy(ctx, &pb.GetKeyPolicyRequest{KeyId: sym})
	keep(p, err)
	l, err := admin.keys.ListKeys(ctx, &pb.ListKeysRequest{})
	keep(l, err)
	_, err = admin.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: sym})
	wantErr(t, err, codes.FailedPrecondition, broker.ExcUnsupportedOperation)
	for _, a := range answers {
		if bytes.Contains(a, wrapped) || bytes.Contains(a, mk.Versions[0].Wrapped) {
			t.Fatalf("an answer carries a wrapped key: %s", a)
		}
	}

	// Decrypting key blobs as data, with the key or without, fails the
	// same way as any bad ciphertext.
	good, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: sym, Plaintext: []byte("data"), EncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good.GetCiphertextBlob())
	flipped[len(flipped)-1] ^= 1
	macBlob, err := admin.crypto.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: mac, Message: []byte("m"), MacAlgorithm: pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256})
	if err != nil {
		t.Fatal(err)
	}
	var uniform string
	for name, req := range map[string]*pb.DecryptRequest{
		"wrapped key blob":         {CiphertextBlob: wrapped},
		"wrapped key, key named":   {CiphertextBlob: wrapped, KeyId: sym},
		"HMAC key's wrapped blob":  {CiphertextBlob: mk.Versions[0].Wrapped},
		"MAC as ciphertext":        {CiphertextBlob: macBlob.GetMac()},
		"flipped tag":              {CiphertextBlob: flipped, EncryptionContext: map[string]string{"a": "b"}},
		"wrong context":            {CiphertextBlob: good.GetCiphertextBlob(), EncryptionContext: map[string]string{"a": "c"}},
		"missing context":          {CiphertextBlob: good.GetCiphertextBlob()},
		"truncated":                {CiphertextBlob: good.GetCiphertextBlob()[:20]},
		"random bytes":             {CiphertextBlob: bytes.Repeat([]byte{0x42}, 80)},
		"ciphertext + extra bytes": {CiphertextBlob: append(bytes.Clone(good.GetCiphertextBlob()), 0)},
	} {
		_, err := admin.crypto.Decrypt(ctx, req)
		wantErr(t, err, codes.InvalidArgument, broker.ExcInvalidCiphertext)
		msg := status.Convert(err).Message()
		if uniform == "" {
			uniform = msg
		} else if msg != uniform {
			t.Errorf("%s: message %q differs from %q", name, msg, uniform)
		}
		_, err = admin.crypto.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: req.GetCiphertextBlob(), SourceEncryptionContext: req.GetEncryptionContext(), DestinationKeyId: sym})
		if status.Convert(err).Message() != uniform {
			t.Errorf("ReEncrypt of %s: %v", name, err)
		}
	}
	// A MAC key cannot be made to encrypt (so to wrap) anything.
	_, err = admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: mac, Plaintext: wrapped[:32]})
	wantErr(t, err, codes.InvalidArgument, broker.ExcInvalidKeyUsage)
}

// TestPrincipalNamesAreCheckedWhereMade: a role record is refused for a
// name no principal may be given today (white space, "*", an ARN), unless
// the role is none, which takes everything away, or the principal has a
// record already; a principal named before the rule keeps working and can
// be shut out and let back in.
func TestPrincipalNamesAreCheckedWhereMade(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	set := func(name string, role pb.PrincipalRole) error {
		_, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: name, Role: role})
		return err
	}
	for name, want := range map[string]string{"new name": "spaces", "tab\tname": "control", "*": "ARN",
		"arn:aws:iam::000000000000:user/erin": "ARN"} {
		wantErr(t, set(name, pb.PrincipalRole_PRINCIPAL_ROLE_USER), codes.InvalidArgument, "ValidationException", "Principal", want)
	}
	if r, err := admin.access.ListPrincipals(ctx, &pb.ListPrincipalsRequest{}); err != nil || len(r.GetPrincipals()) != 0 {
		t.Fatalf("records after the refusals: %v %v", r.GetPrincipals(), err)
	}

	old := e.as("old name", authz.RoleUser) // a certificate issued before the rule
	if _, err := old.keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Fatalf("a principal named before the rule stopped working: %v", err)
	}
	if err := set("old name", pb.PrincipalRole_PRINCIPAL_ROLE_NONE); err != nil {
		t.Fatalf("shutting out a principal named before the rule: %v", err)
	}
	if _, err := old.keys.ListKeys(ctx, &pb.ListKeysRequest{}); !isDenied(err) {
		t.Fatalf("role none did not shut it out: %v", err)
	}
	if err := set("old name", pb.PrincipalRole_PRINCIPAL_ROLE_USER); err != nil {
		t.Fatalf("letting back in a principal with a record: %v", err)
	}
	if _, err := old.keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
		t.Fatalf("let back in, still refused: %v", err)
	}
	if _, err := admin.access.DeletePrincipalRole(ctx, &pb.DeletePrincipalRoleRequest{Principal: "old name"}); err != nil {
		t.Fatalf("deleting its record: %v", err)
	}
}

// TestAliasChangesCheckTheAliasKey: moving or deleting an alias needs the
// action on the key the alias names now, not only on a new target, as in
// AWS KMS. Else an admin that k2's policy refuses could point k2's alias,
// which k2's users encrypt under, at a key of their own.
func TestAliasChangesCheckTheAliasKey(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin1 := e.as("admin1", authz.RoleAdmin)
	admin2 := e.as("admin2", authz.RoleAdmin)
	k2 := e.createKey(admin1, "alias/k2", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	mine := e.createKey(admin2, "alias/mine", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	if _, err := admin1.keys.PutKeyPolicy(ctx, &pb.PutKeyPolicyRequest{KeyId: k2, Policy: `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"admin1"},"Action":"kms:*","Resource":"*"}]}`}); err != nil {
		t.Fatal(err)
	}
	target := func() string {
		t.Helper()
		resp, err := admin1.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/k2"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetKeyMetadata().GetKeyId()
	}
	_, err := admin2.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/k2", TargetKeyId: mine})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "admin2", k2)
	_, err = admin2.keys.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: "alias/k2"})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "admin2", k2)
	if got := target(); got != k2 {
		t.Fatalf("alias/k2 names %s after refused changes, want %s", got, k2)
	}
	// admin1 may change both keys: the move and the deletion go through.
	if _, err := admin1.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/k2", TargetKeyId: mine}); err != nil {
		t.Fatalf("UpdateAlias by admin1: %v", err)
	}
	if got := target(); got != mine {
		t.Fatalf("alias/k2 names %s, want %s", got, mine)
	}
	if _, err := admin1.keys.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: "alias/k2"}); err != nil {
		t.Fatalf("DeleteAlias by admin1: %v", err)
	}
}

// TestLongFieldsBoundedInErrors: a field the caller may make as long as a
// message is refused as InvalidArgument naming the field, and the error
// quotes at most a bounded prefix of it, for the fields that once echoed
// all of it (CreateGrant's Operations, RemoveNode's and
// TransferLeadership's NodeId). ListGrants's filters are checked as the
// same fields are where they name something to act on.
func TestLongFieldsBoundedInErrors(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("admin", authz.RoleAdmin)
	key := e.createKey(admin, "alias/long", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	long := strings.Repeat("n", 200_000)
	bounded := func(name string, err error, mentions ...string) {
		t.Helper()
		wantErr(t, err, codes.InvalidArgument, "", mentions...)
		if n := len(status.Convert(err).Message()); n > 1024 {
			t.Errorf("%s: the error is %d bytes long", name, n)
		}
	}
	_, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "bob", Operations: []string{long}})
	bounded("CreateGrant", err, "Operations")
	_, err = admin.clus.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: long})
	bounded("RemoveNode", err, "NodeId")
	_, err = admin.clus.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: long})
	bounded("TransferLeadership", err, "NodeId")
	_, err = admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, GrantId: "xyz"})
	bounded("ListGrants GrantId", err, "GrantId")
	_, err = admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, GrantId: long})
	bounded("ListGrants long GrantId", err, "GrantId")
	_, err = admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, GranteePrincipal: long})
	bounded("ListGrants GranteePrincipal", err, "GranteePrincipal")
	_, err = admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, GranteePrincipal: "a\x00b"})
	bounded("ListGrants GranteePrincipal control", err, "GranteePrincipal")
	if _, err := admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, GranteePrincipal: "bob"}); err != nil {
		t.Fatalf("ListGrants with a valid filter: %v", err)
	}
}

// TestPagesBoundedInBytes: a page of keys or grants ends before its
// PageSize once it holds about a MiB, with a token for the rest, so that a
// page of large entries stays under a client's receive limit; paging on
// gives every entry exactly once.
func TestPagesBoundedInBytes(t *testing.T) {
	e := newSecureEnv(t, nil)
	ctx := ctxT(t)
	admin := e.as("admin", authz.RoleAdmin)
	big := func(c rune, n int) string { return strings.Repeat(string(c), n) }
	const nKeys = 12
	created := map[string]bool{}
	for i := range nKeys {
		tags := map[string]string{}
		for j := range 50 {
			tags[fmt.Sprintf("%03d", j)+big('😀', 125)] = big('😀', 256)
		}
		resp, err := admin.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/big%d", i), Description: big('😀', 8192), Tags: tags})
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		created[resp.GetKeyMetadata().GetKeyId()] = true
	}
	seen, pages, token := map[string]bool{}, 0, ""
	for {
		resp, err := admin.keys.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if n := proto.Size(resp); n > 2<<20 {
			t.Fatalf("page %d is %d bytes", pages, n)
		}
		pages++
		for _, k := range resp.GetKeys() {
			if seen[k.GetKeyId()] {
				t.Fatalf("key %s listed twice", k.GetKeyId())
			}
			seen[k.GetKeyId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if pages < 2 || len(seen) != nKeys || !maps.Equal(seen, created) {
		t.Fatalf("%d pages, %d keys listed, want every one of %d in several pages", pages, len(seen), nKeys)
	}

	key := e.createKey(admin, "alias/granted", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	const nGrants = 150
	for i := range nGrants {
		ec := map[string]string{}
		for j := range 16 {
			ec[fmt.Sprintf("k%02d", j)] = big('v', 500)
		}
		if _, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: fmt.Sprintf("user%03d", i),
			Operations: []string{"Encrypt"}, Constraints: &pb.GrantConstraints{EncryptionContextEquals: ec}}); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	grants, pages, token := map[string]bool{}, 0, ""
	for {
		resp, err := admin.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: key, PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("grants page %d: %v", pages, err)
		}
		if n := proto.Size(resp); n > 2<<20 {
			t.Fatalf("grants page %d is %d bytes", pages, n)
		}
		pages++
		for _, g := range resp.GetGrants() {
			if grants[g.GetGrantId()] {
				t.Fatalf("grant %s listed twice", g.GetGrantId())
			}
			grants[g.GetGrantId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if pages < 2 || len(grants) != nGrants {
		t.Fatalf("%d pages, %d grants listed, want all %d in several pages", pages, len(grants), nGrants)
	}
}
