package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MariaDB encrypting its tables with keys from the TDE key endpoint of a
// real `hsmbrokerd dev`, through its hashicorp_key_management plugin.

const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	mariadbClient    = "/usr/bin/mariadb"
	mariadbPlugin    = "/usr/lib/mysql/plugin/hashicorp_key_management.so"
	mariadbDeadline  = 60 * time.Second
)

// requireMariaDB skips the test when MariaDB or its Vault plugin is not
// installed, except under CI=true, where that fails the run.
func requireMariaDB(t *testing.T) {
	t.Helper()
	for _, f := range []string{mariadbd, mariadbInstallDB, mariadbClient, mariadbPlugin} {
		if _, err := os.Stat(f); err != nil {
			msg := fmt.Sprintf("%s is missing (apt-get install mariadb-server mariadb-plugin-hashicorp-key-management)", f)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// mariaDB is a MariaDB server in a temporary directory.
type mariaDB struct {
	t                     *testing.T
	dir, data, sock, conf string
	port                  string
	proc                  *exec.Cmd
	done                  chan error
}

// newMariaDB writes my.cnf for a server reading keys from vaultURL (its
// /v1/tde mount), with vaultCA for HTTPS, and initializes its data
// directory, which already encrypts with those keys.
func newMariaDB(t *testing.T, token, vaultURL, vaultCA string) *mariaDB {
	t.Helper()
	dir, err := os.MkdirTemp("", "hsmb-mariadb-") // short: the socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &mariaDB{t: t, dir: dir, data: filepath.Join(dir, "data"), sock: filepath.Join(dir, "s.sock"), conf: filepath.Join(dir, "my.cnf"),
		port: strings.TrimPrefix(freeAddrs(t, 1)[0], "127.0.0.1:")}
	m.configure(vaultURL, vaultCA)
	if err := os.Mkdir(m.data, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mariadbInstallDB, "--defaults-file="+m.conf, "--auth-root-authentication-method=normal", "--skip-test-db")
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s\n%s", err, out, m.errorLog())
	}
	return m
}

// configure (re)writes my.cnf. The token is not in it: the plugin reads
// VAULT_TOKEN, which start sets.
func (m *mariaDB) configure(vaultURL, vaultCA string) {
	cnf := fmt.Sprintf(`[mariadbd]
datadir=%s
socket=%s
port=%s
bind-address=127.0.0.1
pid-file=%s
log-error=%s
user=root
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
plugin-load-add=hashicorp_key_management.so
hashicorp-key-management-vault-url=%s/v1/tde
hashicorp-key-management-cache-timeout=1000
hashicorp-key-management-cache-version-timeout=500
hashicorp-key-management-timeout=10
innodb_encrypt_tables=ON
innodb_encrypt_log=ON
innodb_encryption_threads=1
innodb_encryption_rotate_key_age=1
`, m.data, m.sock, m.port, filepath.Join(m.dir, "mariadb.pid"), filepath.Join(m.dir, "error.log"), vaultURL)
	if vaultCA != "" {
		cnf += "hashicorp-key-management-vault-ca=" + vaultCA + "\n"
	}
	if err := os.WriteFile(m.conf, []byte(cnf), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mariaDB) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "error.log"))
	return string(b)
}

// start starts the server with token and waits until it answers queries
// (nil) or exits (its exit error).
func (m *mariaDB) start(token string) error {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, "error.log"), nil, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.proc = exec.Command(mariadbd, "--defaults-file="+m.conf)
	m.proc.Env = append(os.Environ(), "VAULT_TOKEN="+token)
	if err := m.proc.Start(); err != nil {
		m.t.Fatal(err)
	}
	done := make(chan error, 1)
	m.done = done
	p := m.proc
	go func() { done <- p.Wait() }()
	m.t.Cleanup(func() {
		if p.ProcessState == nil {
			_ = p.Process.Kill()
		}
	})
	deadline := time.Now().Add(mariadbDeadline)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			m.proc = nil
			if err == nil {
				err = errors.New("exited with status 0")
			}
			return err
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := m.query("SELECT 1"); err == nil {
			return nil
		}
	}
	m.t.Fatalf("mariadbd neither answered nor exited within %v\n%s", mariadbDeadline, m.errorLog())
	return nil
}

// stop shuts the server down cleanly (SIGTERM), so its pages reach disk.
func (m *mariaDB) stop() {
	m.t.Helper()
	if m.proc == nil {
		return
	}
	_ = m.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(mariadbDeadline):
		m.t.Fatalf("mariadbd did not stop within %v", mariadbDeadline)
	}
	m.proc = nil
}

func (m *mariaDB) query(sql string) (string, error) {
	out, err := exec.Command(mariadbClient, "--no-defaults", "-uroot", "-S", m.sock, "-N", "-B", "-e", sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func (m *mariaDB) mustQuery(sql string) string {
	m.t.Helper()
	out, err := m.query(sql)
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", sql, err, m.errorLog())
	}
	return out
}

// filesContaining lists the files under the data directory whose names
// match one of the suffixes or prefixes and whose bytes contain needle.
func (m *mariaDB) filesContaining(needle []byte, match func(name string) bool) (matched, containing []string) {
	m.t.Helper()
	err := filepath.WalkDir(m.data, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !match(d.Name()) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(m.data, path)
		matched = append(matched, rel)
		if bytes.Contains(b, needle) {
			containing = append(containing, rel)
		}
		return nil
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return matched, containing
}

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
	requireMariaDB(t)
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
	m := newMariaDB(t, token, env["VAULT_ADDR"], "")
	installed := time.Now()
	if err := m.start(token); err != nil {
		t.Fatalf("mariadbd did not start: %v\n%s", err, m.errorLog())
	}
	started := time.Since(installed)
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	canary := "hsmbroker-canary-" + hex.EncodeToString(b)
	m.mustQuery(fmt.Sprintf(`CREATE DATABASE app;
CREATE TABLE app.secret (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=2;
CREATE TABLE app.plain (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB ENCRYPTED=NO;
INSERT INTO app.secret VALUES (1, '%[1]s-1'), (2, '%[1]s-2'), (3, '%[1]s-3');
INSERT INTO app.plain VALUES (1, '%[1]s-1');`, canary))
	if got := m.mustQuery("SELECT CURRENT_KEY_ID, CURRENT_KEY_VERSION FROM information_schema.innodb_tablespaces_encryption WHERE NAME='app/secret'"); got != "2\t1" {
		t.Fatalf("app/secret encryption key and version: %q, want key 2 version 1", got)
	}
	m.stop()

	// On disk: the encrypted table and the redo log hold no row; the
	// unencrypted control table does, which shows the search works.
	ibd := func(n string) bool { return strings.HasSuffix(n, ".ibd") || strings.HasPrefix(n, "ib_logfile") }
	files, leaked := m.filesContaining([]byte(canary), ibd)
	if len(leaked) != 1 || leaked[0] != filepath.Join("app", "plain.ibd") {
		t.Fatalf("rows found in %v of %v; want only app/plain.ibd (the unencrypted control)", leaked, files)
	}
	if !strings.Contains(strings.Join(files, " "), "ib_logfile0") || !strings.Contains(strings.Join(files, " "), filepath.Join("app", "secret.ibd")) {
		t.Fatalf("searched %v: the redo log or app/secret.ibd is missing", files)
	}

	// Restarted, MariaDB reads its keys again and the rows back.
	if err := m.start(token); err != nil {
		t.Fatalf("mariadbd did not restart: %v\n%s", err, m.errorLog())
	}
	if got := m.mustQuery("SELECT v FROM app.secret ORDER BY id"); got != canary+"-1\n"+canary+"-2\n"+canary+"-3" {
		t.Fatalf("rows after restart: %q", got)
	}

	// Rotation: key 1's new version reaches the tablespaces encrypted with
	// it once the plugin's version cache expires.
	q := "SELECT COUNT(*) FROM information_schema.innodb_tablespaces_encryption WHERE CURRENT_KEY_ID=1 AND CURRENT_KEY_VERSION=2"
	if got := m.mustQuery(q); got != "0" {
		t.Fatalf("tablespaces at key 1 version 2 before rotation: %s", got)
	}
	runTool(t, env, hsmctl, "tde", "rotate", "1")
	deadline := time.Now().Add(mariadbDeadline)
	for m.mustQuery(q) == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("no tablespace reached key 1 version 2 within %v:\n%s", mariadbDeadline,
				m.mustQuery("SELECT NAME, CURRENT_KEY_ID, CURRENT_KEY_VERSION FROM information_schema.innodb_tablespaces_encryption"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.stop()

	// A wrong token and a revoked one: MariaDB refuses to start, with the
	// endpoint's answer in its log, and each refusal is audited.
	out, _ := runTool(t, env, hsmctl, "tde", "token", "issue", "--principal", "admin", "-o", "json")
	var issued struct{ Token, Accessor string }
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Token == "" {
		t.Fatalf("token issue -o json: %q (%v)", out, err)
	}
	runTool(t, env, hsmctl, "tde", "token", "revoke", issued.Accessor)
	before := len(auditLines(t, env["HSMBROKER_AUDIT_LOG"]))
	for name, bad := range map[string]string{"wrong": "hbt.not-a-token", "revoked": issued.Token} {
		if err := m.start(bad); err == nil {
			t.Fatalf("%s token: mariadbd started", name)
		}
		if log := m.errorLog(); !strings.Contains(log, `403, response: {"errors":["permission denied"]}`) {
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
	m.configure("https://"+addrs[4], env["HSMBROKER_CA"])
	if err := m.start(token); err != nil {
		t.Fatalf("mariadbd did not start over HTTPS: %v\n%s", err, m.errorLog())
	}
	if got := m.mustQuery("SELECT COUNT(*) FROM app.secret"); got != "3" {
		t.Fatalf("rows over HTTPS: %s", got)
	}
	m.stop()
	// A CA that did not issue the node certificate: refused.
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, []byte(readFile(t, "/etc/ssl/certs/ca-certificates.crt")), 0o600); err != nil {
		t.Fatal(err)
	}
	m.configure("https://"+addrs[4], otherCA)
	if err := m.start(token); err == nil {
		t.Fatal("mariadbd started trusting a CA that did not issue the endpoint's certificate")
	}
	tlsBroker.stop(t)
	t.Logf("MariaDB first start (encryption on, keys from the endpoint): %v; whole test: %v", started, time.Since(began))
}
