package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// runArgs runs hsmctl in-process with exactly args.
func runArgs(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := runWith(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

func TestCertsIssue(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.Save(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "certs")
	issue := func(extra ...string) result {
		return runArgs(append([]string{"certs", "issue", "--principal", "alice", "--role", "user", "--out-dir", out,
			"--ca-cert", caCert, "--ca-key", caKey}, extra...)...)
	}
	if r := issue(); r.code != 0 {
		t.Fatalf("issue: %d %s", r.code, r.stderr)
	}
	cert, err := pki.ReadCertFile(filepath.Join(out, "alice.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "alice" || authz.RoleOf(cert) != "user" {
		t.Fatalf("certificate for %q role %q", cert.Subject.CommonName, authz.RoleOf(cert))
	}
	if err := ca.Verify(cert, 2 /* x509.ExtKeyUsageClientAuth */); err != nil {
		t.Fatalf("not a client certificate of the CA: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(out, "alice-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if r := issue(); r.code != exitError || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("issue over existing files: %d %s", r.code, r.stderr)
	}
	if r := issue("--force", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"role": "user"`) {
		t.Fatalf("issue --force: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r := runArgs("certs", "issue", "--principal", "bob", "--role", "root", "--out-dir", out, "--ca-cert", caCert, "--ca-key", caKey)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--role") {
		t.Fatalf("bad role: %d %s", r.code, r.stderr)
	}
	r = runArgs("certs", "issue", "--principal", "../x", "--role", "user", "--out-dir", out, "--ca-cert", caCert, "--ca-key", caKey)
	if r.code != exitUsage {
		t.Fatalf("principal with a path: %d %s", r.code, r.stderr)
	}
	// A certificate cannot outlive the CA that signs it.
	r = issue("--force", "--ttl", "1000000h")
	if r.code != exitUsage || !strings.Contains(r.stderr, "would end after the CA's own, on "+ca.Cert.NotAfter.UTC().Format("2006-01-02")) ||
		strings.Contains(r.stderr, "pki:") {
		t.Fatalf("a validity beyond the CA's: %d %s", r.code, r.stderr)
	}
}

// certs issue takes the CA from HSMBROKER_CA and HSMBROKER_CA_KEY, as
// dev.env sets them; flags win over the environment.
func TestCertsIssueCAFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	newCA := func(name string) (certFile, keyFile string, ca *pki.CA) {
		ca, err := pki.NewCA(name)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := ca.Save(certFile, keyFile); err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, ca
	}
	envCert, envKey, envCA := newCA("env")
	flagCert, flagKey, flagCA := newCA("flag")
	issued := func(name string) *x509.Certificate {
		t.Helper()
		cert, err := pki.ReadCertFile(filepath.Join(dir, "certs", name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}

	t.Setenv("HSMBROKER_CA", envCert)
	t.Setenv("HSMBROKER_CA_KEY", envKey)
	if r := runArgs("certs", "issue", "--principal", "mallory", "--role", "user", "--out-dir", filepath.Join(dir, "certs")); r.code != 0 {
		t.Fatalf("issue with the CA from the environment: %d %s", r.code, r.stderr)
	}
	if err := envCA.Verify(issued("mallory"), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("not issued by $HSMBROKER_CA: %v", err)
	}
	if r := runArgs("certs", "issue", "--principal", "trent", "--role", "user", "--out-dir", filepath.Join(dir, "certs"),
		"--ca-cert", flagCert, "--ca-key", flagKey); r.code != 0 {
		t.Fatalf("issue with CA flags: %d %s", r.code, r.stderr)
	}
	if err := flagCA.Verify(issued("trent"), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("flags did not win over the environment: %v", err)
	}
	// A key that is not the certificate's is refused, not used.
	t.Setenv("HSMBROKER_CA_KEY", flagKey)
	if r := runArgs("certs", "issue", "--principal", "eve", "--role", "user", "--out-dir", filepath.Join(dir, "certs")); r.code != exitError {
		t.Fatalf("issue with a CA key of another CA: %d %s", r.code, r.stderr)
	}
	t.Setenv("HSMBROKER_CA_KEY", "")
	r := runArgs("certs", "issue", "--principal", "eve", "--role", "user", "--out-dir", filepath.Join(dir, "certs"))
	if r.code != exitUsage || !strings.Contains(r.stderr, "HSMBROKER_CA_KEY") {
		t.Fatalf("issue without a CA key: %d %s", r.code, r.stderr)
	}
}

func TestAuditVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := log.Append(&audit.Record{Node: "n1", Front: "grpc", RequestID: string(rune('a' + i)), Principal: "alice",
			Operation: "kms:Encrypt", Decision: "allow", Result: "OK", Code: "OK"}, false); err != nil {
			t.Fatal(err)
		}
	}
	_ = log.Close()
	r := runArgs("audit", "verify", path)
	if r.code != 0 || !strings.Contains(r.stdout, "intact, 4 lines") {
		t.Fatalf("verify: %d %s %s", r.code, r.stdout, r.stderr)
	}
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	lines[2] = strings.Replace(lines[2], `"alice"`, `"alicf"`, 1)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runArgs("audit", "verify", path)
	if r.code != exitError || !strings.Contains(r.stdout, "line 3") {
		t.Fatalf("verify of a tampered log: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runArgs("audit", "verify", path, "-o", "json")
	var out struct {
		Intact     bool `json:"intact"`
		BrokenLine int  `json:"brokenLine"`
	}
	if r.code != exitError || json.Unmarshal([]byte(r.stdout), &out) != nil || out.Intact || out.BrokenLine != 3 {
		t.Fatalf("verify -o json: %d %s", r.code, r.stdout)
	}
	if r := runArgs("audit", "verify", filepath.Join(t.TempDir(), "missing.log")); r.code != exitError {
		t.Fatalf("verify of a missing file: %d", r.code)
	}
}

// TestAccessCommands runs the access commands against a real broker.
func TestAccessCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	as := func(principal string, role authz.Role, args ...string) result {
		return runArgs(append(args, connFlags(c, principal, role)...)...)
	}
	ok := func(r result) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}
	if out := ok(as("ops", "admin", "whoami")); !strings.Contains(out, "ops") || !strings.Contains(out, "certificate") {
		t.Fatalf("whoami: %s", out)
	}
	var key keyJSON
	if err := json.Unmarshal([]byte(ok(as("ops", "admin", "keys", "create", "--alias", "alias/cli", "-o", "json"))), &key); err != nil {
		t.Fatal(err)
	}
	if out := ok(as("ops", "admin", "policy", "get", "alias/cli")); !strings.Contains(out, "user/ops") {
		t.Fatalf("default policy does not name the creator: %s", out)
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ok(as("ops", "admin", "policy", "put", key.KeyID, "--in", policy)); out != "Policy of key "+key.KeyID+" replaced\n" {
		t.Fatalf("policy put: %q", out)
	}
	okJSON := func(v any, r result) {
		t.Helper()
		if err := json.Unmarshal([]byte(ok(r)), v); err != nil {
			t.Fatalf("not JSON: %v: %q", err, r.stdout)
		}
	}
	var put struct {
		KeyID    string `json:"keyId"`
		Replaced bool   `json:"policyReplaced"`
	}
	okJSON(&put, as("ops", "admin", "policy", "put", key.KeyID, "--in", policy, "-o", "json"))
	if put.KeyID != key.KeyID || !put.Replaced {
		t.Fatalf("policy put -o json: %+v", put)
	}
	if r := as("app", "user", "encrypt", "--key", key.KeyID, "--base64"); r.code != exitError || !strings.Contains(r.stderr, "AccessDeniedException") {
		t.Fatalf("encrypt before the grant: %d %s", r.code, r.stderr)
	}
	grant := strings.TrimSpace(ok(as("ops", "admin", "grants", "create", "--key", key.KeyID, "--grantee", "app",
		"--operations", "Encrypt,Decrypt", "--retiring-principal", "ops", "--context-subset", "team=a")))
	plain := filepath.Join(t.TempDir(), "plain.txt")
	if err := os.WriteFile(plain, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := as("app", "user", "encrypt", "--key", key.KeyID, "--context", "team=a", "--in", plain, "--base64")
	if r.code != 0 {
		t.Fatalf("encrypt under the grant: %s", r.stderr)
	}
	if out := ok(as("audra", "auditor", "grants", "list", key.KeyID)); !strings.Contains(out, grant) || !strings.Contains(out, "team=a") {
		t.Fatalf("grants list: %s", out)
	}
	if out := ok(as("ops", "admin", "grants", "retire", grant)); out != "Grant "+grant+" retired\n" {
		t.Fatalf("grants retire: %q", out)
	}
	if out := ok(as("audra", "auditor", "grants", "list", key.KeyID)); strings.Contains(out, grant) {
		t.Fatalf("grants list after retire: %s", out)
	}
	// Revoke, in text and in JSON; and retire in JSON.
	newGrant := func() string {
		t.Helper()
		return strings.TrimSpace(ok(as("ops", "admin", "grants", "create", "--key", key.KeyID, "--grantee", "app", "--operations", "Encrypt")))
	}
	g1, g2, g3 := newGrant(), newGrant(), newGrant()
	if out := ok(as("ops", "admin", "grants", "revoke", key.KeyID, g1)); out != "Grant "+g1+" of key "+key.KeyID+" revoked\n" {
		t.Fatalf("grants revoke: %q", out)
	}
	var revoked struct {
		KeyID   string `json:"keyId"`
		GrantID string `json:"grantId"`
		Revoked bool   `json:"revoked"`
	}
	okJSON(&revoked, as("ops", "admin", "grants", "revoke", key.KeyID, g2, "-o", "json"))
	if revoked.KeyID != key.KeyID || revoked.GrantID != g2 || !revoked.Revoked {
		t.Fatalf("grants revoke -o json: %+v", revoked)
	}
	var retired struct {
		GrantID string `json:"grantId"`
		Retired bool   `json:"retired"`
	}
	okJSON(&retired, as("ops", "admin", "grants", "retire", g3, "-o", "json"))
	if retired.GrantID != g3 || !retired.Retired {
		t.Fatalf("grants retire -o json: %+v", retired)
	}
	if out := ok(as("audra", "auditor", "grants", "list", key.KeyID)); strings.Contains(out, g1) || strings.Contains(out, g2) || strings.Contains(out, g3) {
		t.Fatalf("grants list after revoke and retire: %s", out)
	}
	ok(as("ops", "admin", "principals", "set-role", "app", "none"))
	if out := ok(as("audra", "auditor", "principals", "list")); !strings.Contains(out, "app") || !strings.Contains(out, "none") {
		t.Fatalf("principals list: %s", out)
	}
	if r := as("app", "user", "whoami"); r.code != exitError || !strings.Contains(r.stderr, "AccessDenied") {
		t.Fatalf("a principal of role none: %d %s", r.code, r.stderr)
	}
	if r := as("ops", "admin", "principals", "set-role", "ops", "user"); r.code != exitError {
		t.Fatalf("changing one's own role: %d", r.code)
	}
	if out := ok(as("ops", "admin", "principals", "delete", "app")); out != "Role record of app deleted; its certificate's role applies again\n" {
		t.Fatalf("principals delete: %q", out)
	}
	ok(as("ops", "admin", "principals", "set-role", "eve", "auditor"))
	var deleted struct {
		Principal string `json:"principal"`
		Deleted   bool   `json:"deleted"`
	}
	okJSON(&deleted, as("ops", "admin", "principals", "delete", "eve", "-o", "json"))
	if deleted.Principal != "eve" || !deleted.Deleted {
		t.Fatalf("principals delete -o json: %+v", deleted)
	}
	if out := ok(as("audra", "auditor", "principals", "list")); strings.Contains(out, "app") || strings.Contains(out, "eve") {
		t.Fatalf("principals list after delete: %s", out)
	}

	// A TDE token written to --out: mode 0600, the token in the file only.
	tokenFile := filepath.Join(t.TempDir(), "mariadb.token")
	var issued map[string]string
	okJSON(&issued, as("ops", "admin", "tde", "token", "issue", "--principal", "mariadb", "--out", tokenFile, "-o", "json"))
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	if issued["file"] != tokenFile || issued["accessor"] == "" || issued["principal"] != "mariadb" || issued["token"] != "" ||
		len(strings.TrimSpace(string(tok))) < 16 || !strings.HasSuffix(string(tok), "\n") {
		t.Fatalf("tde token issue --out -o json: %v, file %q", issued, tok)
	}
	if out := ok(as("audra", "auditor", "tde", "token", "list")); !strings.Contains(out, issued["accessor"]) || strings.Contains(out, strings.TrimSpace(string(tok))) {
		t.Fatalf("tde token list: %s", out)
	}
	r = as("ops", "admin", "tde", "token", "issue", "--principal", "mariadb", "--out", tokenFile)
	if r.code != exitError || !strings.Contains(r.stderr, tokenFile+" exists; use --force") {
		t.Fatalf("tde token issue over an existing --out: %d %s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(tokenFile); string(got) != string(tok) {
		t.Fatal("the existing token file was changed")
	}
	other := filepath.Join(t.TempDir(), "other.token")
	out := ok(as("ops", "admin", "tde", "token", "issue", "--principal", "mariadb", "--out", other))
	tok2, _ := os.ReadFile(other)
	if !strings.HasPrefix(out, "Token for mariadb written to "+other+" (mode 0600)") || len(tok2) == 0 || strings.Contains(out, strings.TrimSpace(string(tok2))) {
		t.Fatalf("tde token issue --out: %q, file %q", out, tok2)
	}
	if r := as("audra", "auditor", "audit", "fetch"); r.code != exitError || !strings.Contains(r.stderr, "no audit log") {
		t.Fatalf("audit fetch from a node without a log: %d %s", r.code, r.stderr)
	}
}

// certs ca makes a cluster CA once, and certs node issues a node
// certificate from it that serve's TLS set-up takes: the node id as its
// common name, every --host as a name or address, server and client
// authentication.
func TestCertsCAAndNode(t *testing.T) {
	dir := t.TempDir()
	caDir, tlsDir := filepath.Join(dir, "ca"), filepath.Join(dir, "tls")
	if r := runArgs("certs", "ca", "--out-dir", caDir, "--name", "test cluster CA"); r.code != 0 {
		t.Fatalf("certs ca: %d %s", r.code, r.stderr)
	}
	// certs ca has no --force: the refusal says what to do instead.
	r := runArgs("certs", "ca", "--out-dir", caDir)
	want := "hsmctl: " + filepath.Join(caDir, "ca.pem") + " exists: certs ca refuses to replace an existing CA"
	if r.code != exitError || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "choose another --out-dir, or move the old CA aside") ||
		strings.Contains(r.stderr, "--force") {
		t.Fatalf("certs ca over an existing CA: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
	}
	caCert, caKey := filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca-key.pem")
	if fi, err := os.Stat(caKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file: %v %v", fi, err)
	}
	node := func(extra ...string) result {
		return runArgs(append([]string{"certs", "node", "--node-id", "node1", "--out-dir", tlsDir, "--ca-cert", caCert, "--ca-key", caKey}, extra...)...)
	}
	if r := node("--host", "node1.example.net:7400"); r.code != exitUsage || !strings.Contains(r.stderr, "without a port") {
		t.Fatalf("a host with a port: %d %s", r.code, r.stderr)
	}
	if r := node(); r.code != exitUsage || !strings.Contains(r.stderr, "--host") {
		t.Fatalf("no --host: %d %s", r.code, r.stderr)
	}
	if r := node("--host", "node1.example.net,127.0.0.1", "--host", "::1"); r.code != 0 {
		t.Fatalf("certs node: %d %s", r.code, r.stderr)
	}
	cert, err := pki.ReadCertFile(filepath.Join(tlsDir, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "node1" || len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node1.example.net" || len(cert.IPAddresses) != 2 {
		t.Fatalf("node certificate: CN %q, names %v, addresses %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses)
	}
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := ca.Verify(cert, usage); err != nil {
			t.Errorf("node certificate for usage %d: %v", usage, err)
		}
	}
	if _, err := pki.ServerTLSConfig(filepath.Join(tlsDir, "node.pem"), filepath.Join(tlsDir, "node-key.pem"), caCert); err != nil {
		t.Errorf("serve's TLS set-up refuses the node certificate: %v", err)
	}
	if r := node("--host", "node1.example.net"); r.code != exitError || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("certs node over existing files: %d %s", r.code, r.stderr)
	}
}
