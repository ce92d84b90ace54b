package awskms_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// switchableWriter is an audit sink the test can make fail.
type switchableWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	fail atomic.Bool
}

func (w *switchableWriter) Write(p []byte) (int, error) {
	if w.fail.Load() {
		return 0, errors.New("no space left on device")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *switchableWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// accessEnv is the AWS endpoint over a service with an audit log, with
// access keys for an admin, a user (app) and an auditor.
type accessEnv struct {
	*env
	w            *switchableWriter
	app, auditor awskms.AccessKey
}

func newAccessEnv(t testing.TB) *accessEnv {
	t.Helper()
	a := &accessEnv{env: &env{tb: t, clock: &clock{}}, w: &switchableWriter{}}
	p := hsmtest.NewPartition(t)
	node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		Bootstrap: true, Logger: hsmtest.QuietLogger(), Observer: broker.Observer(p)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	if err := node.WaitForLeader(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a.node = node
	if a.svc, err = broker.New(broker.Config{Node: node, Partition: p, Logger: hsmtest.QuietLogger(),
		Region: testRegion, Account: testAccount, AuditLog: audit.New(a.w, audit.Options{})}); err != nil {
		t.Fatal(err)
	}
	keys := map[string]awskms.AccessKey{}
	for _, k := range []struct {
		dst       *awskms.AccessKey
		principal string
		role      authz.Role
	}{{&a.admin, "admin", "admin"}, {&a.app, "app", ""}, {&a.auditor, "audra", "auditor"}} {
		if *k.dst, err = awskms.GenerateAccessKey(k.principal); err != nil {
			t.Fatal(err)
		}
		k.dst.Role = k.role
		keys[k.dst.ID] = *k.dst
	}
	if a.xksKey, err = awskms.GenerateXKSAccessKey("aws-kms"); err != nil {
		t.Fatal(err)
	}
	if a.h, err = awskms.New(awskms.Config{Service: a.svc, Credentials: awskms.NewStaticCredentials(keys), Logger: hsmtest.QuietLogger(),
		XKS: &awskms.XKSConfig{PathPrefix: xksPrefix, Credentials: awskms.NewStaticCredentials(map[string]awskms.AccessKey{a.xksKey.ID: a.xksKey})}}); err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewServer(a.h)
	t.Cleanup(a.srv.Close)
	a.kms = a.client(a.admin.ID, a.admin.Secret)
	return a
}

// as calls an operation with a hand-made request signed by key.
func (a *accessEnv) as(key awskms.AccessKey, op string, body any) rawResponse {
	a.tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		a.tb.Fatal(err)
	}
	return a.do(signedRequest{target: "TrentService." + op, body: b, key: key})
}

// TestAWSRolesAndGrants: the access key's role gates operations, key
// policies and grants decide per key, and the grant operations work
// through the AWS API.
func TestAWSRolesAndGrants(t *testing.T) {
	a := newAccessEnv(t)
	ctx := ctxT(t)
	key := createKey(t, a.kms, "", "")
	app, auditor := a.client(a.app.ID, a.app.Secret), a.client(a.auditor.ID, a.auditor.Secret)
	ec := map[string]string{"tenant": "acme"}

	_, err := app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: ec})
	wantAWSError(t, err, "AccessDeniedException", "app", "kms:Encrypt")
	_, err = app.CreateKey(ctx, &kms.CreateKeyInput{})
	wantAWSError(t, err, "AccessDeniedException", "role user")
	if _, err := app.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("a user lists keys: %v", err)
	}
	_, err = auditor.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("app"),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	wantAWSError(t, err, "AccessDeniedException")

	_, err = a.kms.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("arn:aws:iam::000000000000:user/app"),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt}, DryRun: aws.Bool(true)})
	wantAWSError(t, err, "DryRunOperationException")
	g, err := a.kms.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("arn:aws:iam::000000000000:user/app"),
		Operations:        []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints:       &types.GrantConstraints{EncryptionContextSubset: ec},
		RetiringPrincipal: aws.String("audra"), Name: aws.String("app-uses-key")})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: ec})
	if err != nil {
		t.Fatalf("encrypt under the grant: %v", err)
	}
	if _, err := app.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}); err != nil {
		t.Fatalf("decrypt under the grant: %v", err)
	}
	_, err = app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x")})
	wantAWSError(t, err, "AccessDeniedException")

	list, err := auditor.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(key)})
	if err != nil || len(list.Grants) != 1 || aws.ToString(list.Grants[0].GrantId) != aws.ToString(g.GrantId) ||
		aws.ToString(list.Grants[0].GranteePrincipal) != "app" || list.Grants[0].Constraints.EncryptionContextSubset["tenant"] != "acme" {
		t.Fatalf("ListGrants = %+v, %v", list, err)
	}
	// A marker that decodes but names no grant id was not issued here.
	_, err = auditor.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(key), Marker: aws.String(base64.RawURLEncoding.EncodeToString([]byte("gzzz")))})
	wantAWSError(t, err, "InvalidMarkerException")
	_, err = app.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken})
	wantAWSError(t, err, "AccessDeniedException", "retire")
	if _, err := auditor.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken}); err == nil {
		t.Fatal("an auditor retired a grant (auditors change nothing)")
	}
	// The grant's retiring principal, as a user this time.
	if _, err := a.svc.SetPrincipalRole(broker.Internal(ctx, "test: set a role"), &pb.SetPrincipalRoleRequest{Principal: "audra", Role: pb.PrincipalRole_PRINCIPAL_ROLE_USER}); err != nil {
		t.Fatal(err)
	}
	if _, err := auditor.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(key), GrantId: g.GrantId}); err != nil {
		t.Fatalf("the retiring principal: %v", err)
	}
	_, err = app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: ec})
	wantAWSError(t, err, "AccessDeniedException")

	g2, err := a.kms.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("app"),
		Operations: []types.GrantOperation{types.GrantOperationDescribeKey}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)}); err != nil {
		t.Fatalf("describe under a grant: %v", err)
	}
	if _, err := a.kms.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: aws.String(key), GrantId: g2.GrantId}); err != nil {
		t.Fatal(err)
	}
	_, err = app.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	wantAWSError(t, err, "AccessDeniedException")

	// A key policy naming the user works through the AWS API as well.
	policy := `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/app"},"Action":"kms:Encrypt"}]}`
	if _, err := a.kms.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x")}); err != nil {
		t.Fatalf("encrypt under the policy: %v", err)
	}
	// The cluster's record overrides the access key's role.
	if _, err := a.svc.SetPrincipalRole(broker.Internal(ctx, "test: set a role"), &pb.SetPrincipalRoleRequest{Principal: "app", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	_, err = app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x")})
	wantAWSError(t, err, "AccessDeniedException", "none")
}

// TestAWSAudit: every request to the endpoint, TrentService or XKS, allowed
// or refused, authenticated or not, is one audit line with the request id
// the caller saw; with the audit log unwritable, requests fail with 503 and
// change nothing.
func TestAWSAudit(t *testing.T) {
	a := newAccessEnv(t)
	key := createKey(t, a.kms, "", "")
	start := len(bytes.Split(a.w.bytes(), []byte("\n"))) - 1
	type call struct {
		resp                  rawResponse
		principal, op, result string
	}
	var calls []call
	record := func(r rawResponse, principal, op, result string) {
		calls = append(calls, call{r, principal, op, result})
	}
	record(a.as(a.admin, "Encrypt", map[string]any{"KeyId": key, "Plaintext": []byte("p"), "EncryptionContext": map[string]string{"k": "v"}}),
		"admin", "kms:Encrypt", "OK")
	record(a.as(a.app, "Encrypt", map[string]any{"KeyId": key, "Plaintext": []byte("p")}), "app", "kms:Encrypt", "AccessDeniedException")
	record(a.as(a.auditor, "DescribeKey", map[string]any{"KeyId": key}), "audra", "kms:DescribeKey", "OK")
	record(a.as(a.auditor, "DisableKey", map[string]any{"KeyId": key}), "audra", "kms:DisableKey", "AccessDeniedException")
	record(a.as(a.admin, "DisableKey", map[string]any{"KeyId": key}), "admin", "kms:DisableKey", "OK")
	record(a.as(a.admin, "Encrypt", map[string]any{"KeyId": key, "Plaintext": []byte("p")}), "admin", "kms:Encrypt", "DisabledException")
	forged := a.app
	forged.Secret = "not-the-secret"
	record(a.as(forged, "ListKeys", map[string]any{}), "", "kms:ListKeys", "InvalidSignatureException")
	record(a.xksCall(t, "/health", map[string]any{"requestMetadata": reqMeta("CreateCustomKeyStore")}), "aws-kms", "kms-xks-proxy:GetHealthStatus", "OK")
	for i, c := range calls {
		if ok := c.resp.status == http.StatusOK; ok != (c.result == "OK") {
			t.Fatalf("call %d (%s as %q): status %d %s", i, c.op, c.principal, c.resp.status, c.resp.body)
		}
	}
	var recs []audit.Record
	b := a.w.bytes()
	if _, err := audit.Verify(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n"))[start:] {
		var r audit.Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if r.Result == audit.ResultIntent { // written before DisableKey's change; its outcome follows
			continue
		}
		recs = append(recs, r)
	}
	if len(recs) != len(calls) {
		t.Fatalf("%d requests, %d audit lines:\n%s", len(calls), len(recs), b)
	}
	for i, c := range calls {
		r := recs[i]
		if r.RequestID != c.resp.header.Get("x-amzn-RequestId") || r.Principal != c.principal || r.Operation != c.op || r.Result != c.result {
			t.Errorf("line %d = %+v; want request %s, %q %s -> %s", i+1, r, c.resp.header.Get("x-amzn-RequestId"), c.principal, c.op, c.result)
		}
		if r.Front != broker.FrontAWS && !strings.HasPrefix(c.op, "kms-xks-proxy:") || r.Peer == "" {
			t.Errorf("line %d: front %q, peer %q", i+1, r.Front, r.Peer)
		}
	}
	if recs[0].EncryptionContext["k"] != "v" || recs[0].KeyID != key || recs[3].KeyRef != key {
		t.Errorf("key and context not audited: %+v / %+v", recs[0], recs[3])
	}

	// Unwritable: refused with 503, nothing made, no plaintext given.
	ctx := ctxT(t)
	before := a.node.State().Digest()
	a.w.fail.Store(true)
	_, err := a.kms.CreateKey(ctx, &kms.CreateKeyInput{})
	wantAWSError(t, err, "DependencyTimeoutException", "audit log")
	r := a.as(a.admin, "EnableKey", map[string]any{"KeyId": key})
	if r.status != http.StatusServiceUnavailable || r.errorType() != "DependencyTimeoutException" {
		t.Fatalf("EnableKey with the audit log down: %d %s", r.status, r.body)
	}
	r = a.as(a.admin, "GenerateRandom", map[string]any{"NumberOfBytes": 32})
	if r.status != http.StatusServiceUnavailable || bytes.Contains(r.body, []byte("Plaintext")) {
		t.Fatalf("GenerateRandom with the audit log down: %d %s", r.status, r.body)
	}
	if a.node.State().Digest() != before {
		t.Fatal("the state changed while the audit log could not be written")
	}
	a.w.fail.Store(false)
	d, err := a.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	if err != nil || d.KeyMetadata.Enabled {
		t.Fatalf("key after the outage: %+v %v", d, err)
	}
}

// TestBodyRefusalNamesTheKey: a request refused after its headers named a
// known access key and before its signature could be checked (here its
// body ends early) proved no identity, and its audit line says so, but
// names the key it claimed, so that a flood under one key can be traced.
func TestBodyRefusalNamesTheKey(t *testing.T) {
	a := newAccessEnv(t)
	c := stalledRequest(t, strings.TrimPrefix(a.srv.URL, "http://"), a.app, 100, 10)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if exc := resp.Header.Get("X-Amzn-ErrorType"); resp.StatusCode != http.StatusBadRequest || exc != "SerializationException" {
		t.Fatalf("a body cut short: %d %s, want 400 SerializationException", resp.StatusCode, exc)
	}
	l := a.auditLine(t, resp.Header.Get("x-amzn-RequestId"))
	want := "unauthenticated: SerializationException before the signature was checked, with the access key of app"
	if l.Decision != "deny" || l.Reason != want || l.Principal != "" {
		t.Fatalf("audit line decision %q, reason %q, principal %q; want deny, %q, no principal", l.Decision, l.Reason, l.Principal, want)
	}
}
