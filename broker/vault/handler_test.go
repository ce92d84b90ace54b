package vault_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/vault"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// env is one real broker (SoftHSM token, Raft node, gRPC over mutual TLS,
// audit log) with the endpoint served over loopback HTTP.
type env struct {
	t    testing.TB
	c    *hsmtest.Cluster
	tde  pb.TDEServiceClient
	keys pb.KeyServiceClient
	srv  *httptest.Server
}

func newEnv(t *testing.T) *env { return newEnvTB(t) }

func newEnvTB(t testing.TB) *env {
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	nd := c.AddNode()
	conn := c.Dial(0, "admin")
	e := &env{t: t, c: c, tde: pb.NewTDEServiceClient(conn), keys: pb.NewKeyServiceClient(conn)}
	ctx := context.Background()
	if _, err := e.keys.CreateKey(ctx, &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
		KeyUsage: pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, AliasName: "alias/tde"}); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(vault.New(nd.Service.TDE(), hsmtest.QuietLogger()))
	t.Cleanup(e.srv.Close)
	return e
}

// get sends a GET with token (none when "") and returns the status and body.
func (e *env) get(path, token string) (int, string) {
	return e.do(http.MethodGet, path, token)
}

func (e *env) do(method, path, token string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(vault.TokenHeader, token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// unanswered checks that a GET gets no HTTP answer at all: the connection
// is closed, as the endpoint does for a read it cannot serve for now.
func (e *env) unanswered(path, token string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(vault.TokenHeader, token)
	resp, err := e.srv.Client().Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("GET %s: answered %d %s; want the connection closed without an answer", path, resp.StatusCode, b)
	}
}

type kvAnswer struct {
	Data struct {
		Data struct {
			Data string `json:"data"`
		} `json:"data"`
		Metadata struct {
			Version json.Number `json:"version"`
		} `json:"metadata"`
	} `json:"data"`
}

func (e *env) read(path, token string) ([]byte, string) {
	e.t.Helper()
	code, body := e.get(path, token)
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	var a kvAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		e.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
	m, err := hex.DecodeString(a.Data.Data.Data)
	if err != nil {
		e.t.Fatalf("GET %s: material %q is not hex", path, a.Data.Data.Data)
	}
	return m, a.Data.Metadata.Version.String()
}

func TestReadTDEKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k, err := e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if k.GetKey().GetMount() != "tde" || k.GetKey().GetBytes() != 32 || k.GetKey().GetKmsKeyId() == "" {
		t.Fatalf("created %v", k.GetKey())
	}
	if _, err := e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "2", Bytes: 16}); err != nil {
		t.Fatal(err)
	}
	// A size that is none of 16, 24 and 32 is refused naming the size the
	// caller sent, however large.
	for _, n := range []uint32{20, 1 << 20, 1<<20 + 1, 4294967295} {
		_, err := e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "big", Bytes: n})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), fmt.Sprintf("not %d", n)) {
			t.Fatalf("CreateKey of %d bytes: %v", n, err)
		}
	}
	// A replicated change the cluster refuses answers with what was
	// refused, not the chain of packages it passed through.
	_, err = e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "1"})
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || st.Message() != `TDE key "1" in mount "tde" already exists` {
		t.Fatalf("second CreateKey 1: %v", err)
	}
	for _, req := range []*pb.TDEServiceCreateKeyRequest{{Name: "a/b"}, {Name: "3", Mount: "Bad Mount"}} {
		_, err = e.tde.CreateKey(ctx, req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || strings.Contains(st.Message(), "cluster:") ||
			!strings.Contains(st.Message(), "are allowed") {
			t.Fatalf("CreateKey %v: %v", req, err)
		}
	}
	_, err = e.tde.RevokeToken(ctx, &pb.TDEServiceRevokeTokenRequest{Accessor: "00000000000000000000000000000000"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != `TDE token with accessor "00000000000000000000000000000000" does not exist` {
		t.Fatalf("RevokeToken of an unknown accessor: %v", err)
	}
	tok, err := e.tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	admin := tok.GetToken()
	// A token given where its accessor belongs is refused without being
	// echoed, and one that is no accessor at all is not echoed either.
	for _, bad := range []string{admin, "Not-An-Accessor." + admin[len(admin)-8:]} {
		_, err = e.tde.RevokeToken(ctx, &pb.TDEServiceRevokeTokenRequest{Accessor: bad})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || strings.Contains(st.Message(), bad[len(bad)-8:]) {
			t.Fatalf("RevokeToken of %q: %v", bad[:4], err)
		}
	}
	if _, err := e.tde.RevokeToken(ctx, &pb.TDEServiceRevokeTokenRequest{Accessor: admin}); !strings.Contains(status.Convert(err).Message(), "not its accessor") {
		t.Fatalf("RevokeToken of a token: %v", err)
	}

	code, body := e.get("/v1/sys/mounts/tde/tune", admin)
	if code != http.StatusOK || !strings.Contains(body, `"options":{"version":"2"}`) {
		t.Fatalf("tune: %d %s", code, body)
	}
	v1, n := e.read("/v1/tde/data/1", admin)
	if n != "1" || len(v1) != 32 {
		t.Fatalf("key 1: version %s, %d bytes", n, len(v1))
	}
	if m, _ := e.read("/v1/tde/data/2", admin); len(m) != 16 {
		t.Fatalf("key 2 has %d bytes, want 16", len(m))
	}
	if _, err := e.tde.RotateKey(ctx, &pb.TDEServiceRotateKeyRequest{Name: "1"}); err != nil {
		t.Fatal(err)
	}
	v2, n := e.read("/v1/tde/data/1", admin)
	if n != "2" || bytes.Equal(v1, v2) {
		t.Fatalf("after rotation: version %s, material changed %v", n, !bytes.Equal(v1, v2))
	}
	if old, n := e.read("/v1/tde/data/1?version=1", admin); n != "1" || !bytes.Equal(old, v1) {
		t.Fatalf("version 1 read back as version %s, same material %v", n, bytes.Equal(old, v1))
	}

	// Missing keys and versions: exactly what the plugin expects.
	for _, p := range []string{"/v1/tde/data/1?version=3", "/v1/tde/data/9", "/v1/other/data/1", "/v1/sys/mounts/other/tune"} {
		if code, body := e.get(p, admin); code != http.StatusNotFound || body != `{"errors":[]}` {
			t.Errorf("GET %s: %d %s, want 404 {\"errors\":[]}", p, code, body)
		}
	}
	// Bad tokens.
	denied := `{"errors":["permission denied"]}`
	for name, tk := range map[string]string{"none": "", "unknown": "hbt.nope", "too long": strings.Repeat("x", 300)} {
		for _, p := range []string{"/v1/tde/data/1", "/v1/sys/mounts/tde/tune", "/v1/tde/data/9"} {
			if code, body := e.get(p, tk); code != http.StatusForbidden || body != denied {
				t.Errorf("%s token, GET %s: %d %s", name, p, code, body)
			}
		}
	}
	// A token stands for a principal whose name could be given to a
	// certificate or an access key: no white space, no ARN.
	for _, p := range []string{"db admin", "arn:aws:iam::000000000000:user/db"} {
		if _, err := e.tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: p}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "principal") {
			t.Errorf("a token for principal %q: %v, want InvalidArgument naming the principal", p, err)
		}
	}
	// A principal the KMS key's policy does not name needs a grant.
	db, err := e.tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "db"})
	if err != nil {
		t.Fatal(err)
	}
	// Nor does it learn which keys and versions exist: a missing key or
	// version is refused as a present one is, in the mount of a key it may
	// not read. Mounts are not hidden (the mount check answers for them).
	for _, p := range []string{"/v1/tde/data/1", "/v1/tde/data/9", "/v1/tde/data/1?version=3", "/v1/tde/data/1?version=1"} {
		if code, body := e.get(p, db.GetToken()); code != http.StatusForbidden || body != denied {
			t.Errorf("db without grant, GET %s: %d %s, want 403", p, code, body)
		}
	}
	if _, err := e.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: tdeKeyID(ctx, t, e.keys), GranteePrincipal: "db", Operations: []string{"Decrypt"}}); err != nil {
		t.Fatal(err)
	}
	if m, _ := e.read("/v1/tde/data/1", db.GetToken()); !bytes.Equal(m, v2) {
		t.Fatal("db reads other material than admin")
	}
	for _, p := range []string{"/v1/tde/data/9", "/v1/tde/data/1?version=3"} {
		if code, body := e.get(p, db.GetToken()); code != http.StatusNotFound || body != `{"errors":[]}` {
			t.Errorf("db with a grant, GET %s: %d %s, want 404", p, code, body)
		}
	}
	// Revoked: refused.
	if _, err := e.tde.RevokeToken(ctx, &pb.TDEServiceRevokeTokenRequest{Accessor: db.GetInfo().GetAccessor()}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.get("/v1/tde/data/1", db.GetToken()); code != http.StatusForbidden {
		t.Fatalf("revoked token: %d", code)
	}
	// Retired versions are no longer served; the latest cannot be retired.
	if _, err := e.tde.RetireVersion(ctx, &pb.TDEServiceRetireVersionRequest{Name: "1", Version: 2}); err == nil {
		t.Fatal("retired the latest version")
	}
	if _, err := e.tde.RetireVersion(ctx, &pb.TDEServiceRetireVersionRequest{Name: "1", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if code, body := e.get("/v1/tde/data/1?version=1", admin); code != http.StatusNotFound || body != `{"errors":[]}` {
		t.Fatalf("retired version: %d %s", code, body)
	}

	// Bad requests, writes and other paths: clear errors.
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/v1/tde/data/1?version=abc", 400},
		{"GET", "/v1/tde/data/1?version=0", 400},
		{"GET", "/v1/tde/data/1?version=1&version=2", 400},
		{"GET", "/v1/tde/data/1?version=99999999999", 400},
		{"GET", "/v1/tde/data/1?version=1%", 400},
		{"GET", "/v1/tde/data/1?version=%zz", 400},
		{"GET", "/v1/tde/data/1?version=1;x", 400},
		{"GET", "/v1/tde/data/1?x=%&version=1", 400},
		{"GET", "/v1/tde/data/" + strings.Repeat("9", 200), 400},
		{"GET", "/v1/TDE/data/1", 400},
		{"PUT", "/v1/tde/data/1", 405},
		{"POST", "/v1/tde/data/1", 405},
		{"DELETE", "/v1/tde/data/1", 405},
		{"GET", "/v1/tde/metadata/1", 404},
		{"GET", "/v1/secret/data/a/b", 404},
		{"GET", "/v1/sys/health", 404},
		{"GET", "/", 404},
		{"GET", "/v1/tde/data/" + strings.Repeat("a", 2000), 414},
	} {
		code, body := e.do(tc.method, tc.path, admin)
		var errs struct{ Errors []string }
		if code != tc.code || json.Unmarshal([]byte(body), &errs) != nil || len(errs.Errors) != 1 || errs.Errors[0] == "" {
			t.Errorf("%s %.60s: %d %s, want %d with one message", tc.method, tc.path, code, body, tc.code)
		}
	}

	// Listing shows names, versions and the KMS key, never material.
	ls, err := e.tde.ListKeys(ctx, &pb.TDEServiceListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.GetKeys()) != 2 || ls.GetKeys()[0].GetCurrentVersion() != 2 || ls.GetKeys()[0].GetKmsKeyId() != k.GetKey().GetKmsKeyId() {
		t.Fatalf("list: %v", ls.GetKeys())
	}

	// The material is in neither the replicated state nor the audit log,
	// and the refusals are audited with their reason.
	st, err := json.Marshal(e.c.Nodes[0].Raft.State().Data())
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := os.ReadFile(e.c.Nodes[0].AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{v1, v2} {
		for what, b := range map[string][]byte{"state": st, "audit log": auditLog} {
			if bytes.Contains(b, m) || bytes.Contains(b, []byte(hex.EncodeToString(m))) {
				t.Errorf("key material in the %s", what)
			}
		}
	}
	var refused, grantDenied, served int
	sc := bufio.NewScanner(bytes.NewReader(auditLog))
	for sc.Scan() {
		var r struct {
			Front, Operation, Principal, Decision, Reason, Result string
			KeyID                                                 string `json:"key_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Front != "vault" {
			continue
		}
		switch {
		case r.Decision == "deny" && (r.Reason == "unknown or revoked token" || strings.HasPrefix(r.Reason, "no token")):
			refused++
		case r.Decision == "deny" && r.Principal == "db":
			grantDenied++
		case r.Result == "OK" && r.Operation == "hsmbroker:ReadTDEKey" && r.KeyID == k.GetKey().GetKmsKeyId():
			served++
		}
	}
	if refused < 10 || grantDenied != 4 || served < 5 {
		t.Errorf("audit: %d refused tokens (want >= 10), %d denied by policy (want 4), %d served (want >= 5)", refused, grantDenied, served)
	}
}

// tdeKeyID is the key id of alias/tde, the mount's KMS key: a grant names
// its key by id, never by an alias.
func tdeKeyID(ctx context.Context, t *testing.T, kc pb.KeyServiceClient) string {
	t.Helper()
	d, err := kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/tde"})
	if err != nil {
		t.Fatal(err)
	}
	return d.GetKeyMetadata().GetKeyId()
}

// TestBodiesAreNotWaitedFor: no request this endpoint serves has a body.
// One that announces one is answered at once and its connection closed,
// rather than net/http first reading up to 256 KiB of it from a client
// that may send a byte a second, holding a connection slot until the read
// timeout (a valid read waited up to 10 s behind 1024 of them).
func TestBodiesAreNotWaitedFor(t *testing.T) {
	e := newEnv(t)
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("POST /v1/tde/data/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || !resp.Close {
		t.Fatalf("status %d, close %v; want 405 and the connection closed", resp.StatusCode, resp.Close)
	}
	// Closed by the server (EOF), not held open until this client's own
	// deadline while the server waits for the body.
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection stayed open after the answer: read %v, want EOF", err)
	}
}
