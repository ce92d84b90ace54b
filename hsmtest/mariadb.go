package hsmtest

import (
	"bytes"
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

// MariaDB servers for tests of the TDE key endpoint: a real mariadbd in a
// temporary directory, taking its InnoDB keys from the endpoint through
// the hashicorp_key_management plugin.

const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	mariadbClient    = "/usr/bin/mariadb"
	mariadbPlugin    = "/usr/lib/mysql/plugin/hashicorp_key_management.so"
	// MariaDBDeadline bounds a start, a stop and the tests' polls.
	MariaDBDeadline = 60 * time.Second
)

// RequireMariaDB skips the test when MariaDB or its Vault plugin is not
// installed, except under CI=true, where that fails the run.
func RequireMariaDB(t testing.TB) {
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

// MariaDB is a MariaDB server in a temporary directory, reached on its
// Unix socket only (no TCP port to collide with another test's).
type MariaDB struct {
	t                     testing.TB
	dir, data, sock, conf string
	proc                  *exec.Cmd
	done                  chan error
}

// NewMariaDB writes my.cnf for a server reading keys from vaultURL (its
// /v1/tde mount), with vaultCA for HTTPS, and initializes its data
// directory, which already encrypts with those keys.
func NewMariaDB(t testing.TB, token, vaultURL, vaultCA string) *MariaDB {
	t.Helper()
	dir, err := os.MkdirTemp("", "hsmb-mariadb-") // short: the socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &MariaDB{t: t, dir: dir, data: filepath.Join(dir, "data"), sock: filepath.Join(dir, "s.sock"), conf: filepath.Join(dir, "my.cnf")}
	m.Configure(vaultURL, vaultCA)
	if err := os.Mkdir(m.data, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mariadbInstallDB, "--defaults-file="+m.conf, "--auth-root-authentication-method=normal", "--skip-test-db")
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s\n%s", err, out, m.ErrorLog())
	}
	return m
}

// Configure (re)writes my.cnf. The token is not in it: the plugin reads
// VAULT_TOKEN, which start sets.
func (m *MariaDB) Configure(vaultURL, vaultCA string) {
	cnf := fmt.Sprintf(`[mariadbd]
datadir=%s
socket=%s
skip-networking
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
`, m.data, m.sock, filepath.Join(m.dir, "mariadb.pid"), filepath.Join(m.dir, "error.log"), vaultURL)
	if vaultCA != "" {
		cnf += "hashicorp-key-management-vault-ca=" + vaultCA + "\n"
	}
	if err := os.WriteFile(m.conf, []byte(cnf), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

// ErrorLog is the server's error log of its latest start.
func (m *MariaDB) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "error.log"))
	return string(b)
}

// Start starts the server with token and waits until it answers queries
// (nil) or exits (its exit error).
func (m *MariaDB) Start(token string) error {
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
	deadline := time.Now().Add(MariaDBDeadline)
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
		if _, err := m.Query("SELECT 1"); err == nil {
			return nil
		}
	}
	m.t.Fatalf("mariadbd neither answered nor exited within %v\n%s", MariaDBDeadline, m.ErrorLog())
	return nil
}

// Stop shuts the server down cleanly (SIGTERM), so its pages reach disk.
func (m *MariaDB) Stop() {
	m.t.Helper()
	if m.proc == nil {
		return
	}
	_ = m.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(MariaDBDeadline):
		m.t.Fatalf("mariadbd did not stop within %v", MariaDBDeadline)
	}
	m.proc = nil
}

// Query runs sql as root over the unix socket and returns its output.
func (m *MariaDB) Query(sql string) (string, error) {
	out, err := exec.Command(mariadbClient, "--no-defaults", "-uroot", "-S", m.sock, "-N", "-B", "-e", sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// MustQuery is Query that fails the test on an error.
func (m *MariaDB) MustQuery(sql string) string {
	m.t.Helper()
	out, err := m.Query(sql)
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", sql, err, m.ErrorLog())
	}
	return out
}

// FilesContaining lists the data directory's files (relative paths)
// that match, and those of them whose bytes contain needle.
func (m *MariaDB) FilesContaining(needle []byte, match func(name string) bool) (matched, containing []string) {
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
