package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// MariaDB encrypting its tables with keys from the TDE key endpoint of a
// real `hsmbrokerd dev`, through its hashicorp_key_management plugin.

// auditLines returns the audit lines of the TDE key endpoint.
func auditLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil && r["front"] == "vault" {
			out = append(out, r)
		}
	}
	return out
}

func TestMariaDBTDE(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	hsmtest.RequireMariaDB(t)
	buildBinary(t)
	hsmctl, err := hsmctlOnce()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	dir := filepath.Join(t.TempDir(), "data")
	var addrs []string
	broker := startDev(t, module, dir, &addrs)
	env := readEnvFile(t, filepath.Join(dir, "dev.env"))
	if env["VAULT_ADDR"] != "http://"+addrs[4] || !strings.HasPrefix(env["VAULT_TOKEN"], "hbt.") {
		t.Fatalf("dev.env: VAULT_ADDR=%q, VAULT_TOKEN set: %v", env["VAULT_ADDR"], env["VAULT_TOKEN"] != "")
	}
	token := env["VAULT_TOKEN"]
	runTool(t, env, hsmctl, "tde", "create", "1")
	runTool(t, env, hsmctl, "tde", "create", "2")

	// MariaDB, initialized with encryption on, writes rows to a table
	// encrypted with key 2 and, as a control, to an unencrypted one.
	m := hsmtest.NewMariaDB(t, token, env["VAULT_ADDR"], "")
	installed := time.Now()
	if err := m.Start(token); err != nil {
		t.Fatalf("mariadbd did not start: %v\n%s", err, m.ErrorLog())
	}
	started := time.Since(installed)
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	canary := "hsmbroker-canary-" + hex.EncodeToString(b)
	m.MustQuery(fmt.Sprintf(`CREATE DATABASE app;
CREATE TABLE app.secret (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=2;
CREATE TABLE app.plain (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB ENCRYPTED=NO;
INSERT INTO app.secret VALUES (1, '%[1]s-1'), (2, '%[1]s-2'), (3, '%[1]s-3');
INSERT INTO app.plain VALUES (1, '%[1]s-1');`, canary))
	if got := m.MustQuery("SELECT CURRENT_KEY_ID, CURRENT_KEY_VERSION FROM information_schema.innodb_tablespaces_encryption WHERE NAME='app/secret'"); got != "2\t1" {
		t.Fatalf("app/secret encryption key and version: %q, want key 2 version 1", got)
	}
	m.Stop()

	// On disk: the encrypted table and the redo log hold no row; the
	// unencrypted control table does, which shows the search works.
	ibd := func(n string) bool { return strings.HasSuffix(n, ".ibd") || strings.HasPrefix(n, "ib_logfile") }
	files, leaked := m.FilesContaining([]byte(canary), ibd)
	if len(leaked) != 1 || leaked[0] != filepath.Join("app", "plain.ibd") {
		t.Fatalf("rows found in %v of %v; want only app/plain.ibd (the unencrypted control)", leaked, files)
	}
	if !strings.Contains(strings.Join(files, " "), "ib_logfile0") || !strings.Contains(strings.Join(files, " "), filepath.Join("app", "secret.ibd")) {
		t.Fatalf("searched %v: the redo log or app/secret.ibd is missing", files)
	}

	// Restarted, MariaDB reads its keys again and the rows back.
	if err := m.Start(token); err != nil {
		t.Fatalf("mariadbd did not restart: %v\n%s", err, m.ErrorLog())
	}
	if got := m.MustQuery("SELECT v FROM app.secret ORDER BY id"); got != canary+"-1\n"+canary+"-2\n"+canary+"-3" {
		t.Fatalf("rows after restart: %q", got)
	}

	// Rotation: key 1's new version reaches the tablespaces encrypted with
	// it once the plugin's version cache expires.
	q := "SELECT COUNT(*) FROM information_schema.innodb_tablespaces_encryption WHERE CURRENT_KEY_ID=1 AND CURRENT_KEY_VERSION=2"
	if got := m.MustQuery(q); got != "0" {
		t.Fatalf("tablespaces at key 1 version 2 before rotation: %s", got)
	}
	runTool(t, env, hsmctl, "tde", "rotate", "1")
	deadline := time.Now().Add(hsmtest.MariaDBDeadline)
	for m.MustQuery(q) == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("no tablespace reached key 1 version 2 within %v:\n%s", hsmtest.MariaDBDeadline,
				m.MustQuery("SELECT NAME, CURRENT_KEY_ID, CURRENT_KEY_VERSION FROM information_schema.innodb_tablespaces_encryption"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.Stop()
	out, _ := runTool(t, env, hsmctl, "tde", "list", "-o", "json")
	var listed struct {
		Keys []struct {
			Name           string
			KMSKeyID       string `json:"kmsKeyId"`
			CurrentVersion uint32 `json:"currentVersion"`
		}
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Keys) != 2 || listed.Keys[0].CurrentVersion != 2 ||
		listed.Keys[1].CurrentVersion != 1 || listed.Keys[0].KMSKeyID == "" || listed.Keys[0].KMSKeyID != listed.Keys[1].KMSKeyID {
		t.Fatalf("tde list -o json: %s (%v)", out, err)
	}

	// A wrong token and a revoked one: MariaDB refuses to start, with the
	// endpoint's answer in its log, and each refusal is audited.
	out, _ = runTool(t, env, hsmctl, "tde", "token", "issue", "--principal", "admin", "-o", "json")
	var issued struct{ Token, Accessor string }
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Token == "" {
		t.Fatalf("token issue -o json: %q (%v)", out, err)
	}
	runTool(t, env, hsmctl, "tde", "token", "revoke", issued.Accessor)
	before := len(auditLines(t, env["HSMBROKER_AUDIT_LOG"]))
	for name, bad := range map[string]string{"wrong": "hbt.not-a-token", "revoked": issued.Token} {
		if err := m.Start(bad); err == nil {
			t.Fatalf("%s token: mariadbd started", name)
		}
		if log := m.ErrorLog(); !strings.Contains(log, `403, response: {"errors":["permission denied"]}`) {
			t.Fatalf("%s token: the endpoint's refusal is not in MariaDB's log:\n%s", name, log)
		}
	}
	var refused int
	for _, r := range auditLines(t, env["HSMBROKER_AUDIT_LOG"])[before:] {
		if r["decision"] == "deny" && r["reason"] == "unknown or revoked token" {
			refused++
		}
	}
	if refused < 2 {
		t.Fatalf("%d refusals audited, want at least 2", refused)
	}

	// HTTPS: the broker restarted with the endpoint on TLS, MariaDB
	// verifying it with the (dev) cluster CA.
	broker.stop(t)
	tlsBroker := startProc(t, environ("SOFTHSM2_CONF="+filepath.Join(t.TempDir(), "elsewhere.conf")), "dev", "--data-dir", dir,
		"--module", module, "--grpc-addr", addrs[0], "--raft-addr", addrs[1], "--metrics-addr", addrs[2], "--kms-addr", addrs[3],
		"--vault-addr", addrs[4], "--vault-tls")
	envFile := filepath.Join(dir, "dev.env")
	waitFor(t, tlsBroker, "dev.env with an https VAULT_ADDR", func() error {
		if e := readEnvFile(t, envFile); e["VAULT_ADDR"] != "https://"+addrs[4] {
			return fmt.Errorf("VAULT_ADDR=%s", e["VAULT_ADDR"])
		}
		return nil
	})
	m.Configure("https://"+addrs[4], env["HSMBROKER_CA"])
	if err := m.Start(token); err != nil {
		t.Fatalf("mariadbd did not start over HTTPS: %v\n%s", err, m.ErrorLog())
	}
	if got := m.MustQuery("SELECT COUNT(*) FROM app.secret"); got != "3" {
		t.Fatalf("rows over HTTPS: %s", got)
	}
	m.Stop()
	// A CA that did not issue the node certificate: refused.
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, []byte(readFile(t, "/etc/ssl/certs/ca-certificates.crt")), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Configure("https://"+addrs[4], otherCA)
	if err := m.Start(token); err == nil {
		t.Fatal("mariadbd started trusting a CA that did not issue the endpoint's certificate")
	}
	tlsBroker.stop(t)

	// A node that cannot serve keys for a while (its HSM gone) does not
	// take a running database down: it closes the connection instead of
	// answering 503, and the plugin keeps using its cached keys, as when
	// the node is down. (Any HTTP error but 404 makes InnoDB abort.)
	fault := filepath.Join(t.TempDir(), "hsm.down")
	faulty := startProc(t, environ("SOFTHSM2_CONF="+filepath.Join(t.TempDir(), "elsewhere.conf"), envDrillHSMFault+"="+fault),
		"dev", "--data-dir", dir, "--module", module, "--grpc-addr", addrs[0], "--raft-addr", addrs[1], "--metrics-addr", addrs[2],
		"--kms-addr", addrs[3], "--vault-addr", addrs[4])
	waitFor(t, faulty, "dev.env with an http VAULT_ADDR", func() error {
		if e := readEnvFile(t, envFile); e["VAULT_ADDR"] != "http://"+addrs[4] {
			return fmt.Errorf("VAULT_ADDR=%s", e["VAULT_ADDR"])
		}
		return nil
	})
	m.Configure("http://"+addrs[4], "")
	if err := m.Start(token); err != nil {
		t.Fatalf("mariadbd did not start: %v\n%s", err, m.ErrorLog())
	}
	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Long enough for the plugin's version cache (500 ms) to expire many
	// times, and for the node to find its HSM gone and turn not ready.
	for i, end := 10, time.Now().Add(6*time.Second); time.Now().Before(end); i++ {
		if _, err := m.Query(fmt.Sprintf("INSERT INTO app.secret VALUES (%d, 'written while the HSM was away')", i)); err != nil {
			t.Fatalf("insert %d while the node could not serve keys: %v\n%s", i, err, m.ErrorLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m.Query("CREATE TABLE app.later (id INT PRIMARY KEY) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=2"); err != nil {
		t.Fatalf("create an encrypted table while the node could not serve keys: %v\n%s", err, m.ErrorLog())
	}
	if !strings.Contains(faulty.out.String(), "TDE key read not served now") {
		t.Fatalf("MariaDB asked the node nothing while its HSM was away; the test proves nothing:\n%s", faulty.out)
	}
	if log := m.ErrorLog(); strings.Contains(log, "Unable to get key data") || strings.Contains(log, "Hashicorp server error") {
		t.Fatalf("MariaDB saw an error answer while the node could not serve keys:\n%s", log)
	}
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	if got := m.MustQuery("SELECT COUNT(*) > 3 FROM app.secret"); got != "1" {
		t.Fatalf("rows written while the HSM was away: %s", got)
	}
	m.Stop()
	faulty.stop(t)
	t.Logf("MariaDB first start (encryption on, keys from the endpoint): %v; whole test: %v", started, time.Since(began))
}
