package main

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// startDev runs `hsmbrokerd dev` on addrs (grpc, raft, metrics, kms, vault, kmip) and
// waits for dev.env. On a port collision it retries on fresh ports, updating
// addrs.
func startDev(t *testing.T, module, dir string, addrs *[]string) *proc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		if len(*addrs) == 0 || attempt > 0 {
			*addrs = freeAddrs(t, 6)
		}
		a := *addrs
		// A SOFTHSM2_CONF of the caller's must not leak into dev mode.
		env := environ("SOFTHSM2_CONF=" + filepath.Join(t.TempDir(), "elsewhere.conf"))
		p := startProc(t, env, "dev", "--data-dir", dir, "--module", module,
			"--grpc-addr", a[0], "--raft-addr", a[1], "--metrics-addr", a[2], "--kms-addr", a[3], "--vault-addr", a[4], "--kmip-addr", a[5])
		envFile := filepath.Join(dir, "dev.env")
		waitFor(t, nil, "dev.env", func() error {
			if exists(envFile) || p.exited() {
				return nil
			}
			return errors.New("not written yet")
		})
		if exists(envFile) {
			return p
		}
		if portCollision(p) && attempt < 3 {
			t.Logf("port collision on %v; retrying", a)
			continue
		}
		t.Fatalf("hsmbrokerd dev exited (%v) before writing dev.env", p.err)
	}
}

func TestDevStartStopRestart(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	var addrs []string

	// First run: everything is created.
	p := startDev(t, module, dir, &addrs)
	env := readEnvFile(t, filepath.Join(dir, "dev.env"))
	for _, k := range []string{"HSMBROKER_ADDR", "HSMBROKER_CA", "HSMBROKER_CERT", "HSMBROKER_KEY", "HSMBROKER_METRICS_ADDR",
		"HSMBROKER_AUDIT_LOG", "HSMBROKER_CA_KEY", "AWS_ENDPOINT_URL_KMS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
		"VAULT_ADDR", "VAULT_TOKEN", "HSMBROKER_PKCS11_KEY", "HSMBROKER_PKCS11_PIN", "HSMBROKER_KMIP_ADDR"} {
		if env[k] == "" {
			t.Fatalf("dev.env lacks %s: %v", k, env)
		}
	}
	checkPKCS11Seal(t, env)
	if env["HSMBROKER_KMIP_ADDR"] != addrs[5] {
		t.Errorf("HSMBROKER_KMIP_ADDR=%s, want %s", env["HSMBROKER_KMIP_ADDR"], addrs[5])
	}
	if env["HSMBROKER_ADDR"] != addrs[0] || env["HSMBROKER_METRICS_ADDR"] != addrs[2] || env["AWS_ENDPOINT_URL_KMS"] != "http://"+addrs[3] {
		t.Errorf("dev.env addresses %s, %s, %s; want %s, %s, http://%s", env["HSMBROKER_ADDR"], env["HSMBROKER_METRICS_ADDR"],
			env["AWS_ENDPOINT_URL_KMS"], addrs[0], addrs[2], addrs[3])
	}
	if body := readFile(t, filepath.Join(dir, "dev.env")); !strings.Contains(body, `--endpoint-url "$AWS_ENDPOINT_URL_KMS"`) {
		t.Errorf("dev.env does not say how to point an older AWS CLI at the endpoint:\n%s", body)
	}
	for _, k := range []string{"HSMBROKER_CA", "HSMBROKER_CA_KEY", "HSMBROKER_CERT", "HSMBROKER_KEY"} {
		if !filepath.IsAbs(env[k]) || !exists(env[k]) {
			t.Errorf("%s=%s: want an absolute path to an existing file", k, env[k])
		}
	}
	checkLayout(t, dir)
	checkDevCerts(t, dir)

	conn := dial(t, env["HSMBROKER_ADDR"], env["HSMBROKER_CA"], env["HSMBROKER_CERT"], env["HSMBROKER_KEY"])
	waitServing(t, p, conn)
	checkReflection(t, conn)
	checkNoCertRefused(t, env["HSMBROKER_ADDR"], env["HSMBROKER_CA"])
	waitHTTPReady(t, p, env["HSMBROKER_METRICS_ADDR"])
	checkHTTP(t, env["HSMBROKER_METRICS_ADDR"])
	checkAWSEncrypt(t, env)

	out := p.out.String()
	for _, want := range []string{"dev token initialized", "dev CA created", "SOFTHSM2_CONF is set", "source " + filepath.Join(dir, "dev.env"), "hsmctl keys create --spec SYMMETRIC_DEFAULT --alias alias/demo"} {
		if !strings.Contains(out, want) {
			t.Errorf("first run output lacks %q", want)
		}
	}
	checkNoPINs(t, dir, out)
	checkNoSecret(t, env["AWS_SECRET_ACCESS_KEY"], out)
	p.stop(t)
	firstRun := checkAuditLog(t, filepath.Join(dir, "audit.log"), 0)
	if env["HSMBROKER_AUDIT_LOG"] != filepath.Join(dir, "audit.log") {
		t.Errorf("HSMBROKER_AUDIT_LOG = %q, want %s", env["HSMBROKER_AUDIT_LOG"], filepath.Join(dir, "audit.log"))
	}

	// What must survive a restart unchanged.
	keep := map[string]string{}
	for _, f := range []string{"softhsm/user.pin", "softhsm/so.pin", "tls/ca.pem", "tls/ca-key.pem", "tls/node.pem", "tls/admin.pem", "kms-credentials.json"} {
		keep[f] = readFile(t, filepath.Join(dir, f))
	}
	tokens := listDir(t, filepath.Join(dir, "softhsm", "tokens"))
	if len(tokens) != 1 {
		t.Fatalf("token directory holds %v, want one token", tokens)
	}

	// Second run, on the same ports when they are still free: everything
	// is reopened, nothing made again.
	if err := os.Remove(filepath.Join(dir, "dev.env")); err != nil {
		t.Fatal(err)
	}
	p = startDev(t, module, dir, &addrs)
	firstEnv := env
	env = readEnvFile(t, filepath.Join(dir, "dev.env"))
	if env["AWS_ACCESS_KEY_ID"] != firstEnv["AWS_ACCESS_KEY_ID"] || env["AWS_SECRET_ACCESS_KEY"] != firstEnv["AWS_SECRET_ACCESS_KEY"] {
		t.Error("the AWS access key changed across a restart")
	}
	conn = dial(t, env["HSMBROKER_ADDR"], env["HSMBROKER_CA"], env["HSMBROKER_CERT"], env["HSMBROKER_KEY"])
	waitServing(t, p, conn)
	waitHTTPReady(t, p, env["HSMBROKER_METRICS_ADDR"])
	checkAWSEncrypt(t, env)

	out = p.out.String()
	if !strings.Contains(out, "dev token reopened") {
		t.Error("second run did not reopen the token")
	}
	for _, unwanted := range []string{"dev token initialized", "dev CA created", "dev certificate issued", "domain key created",
		"bootstrapped a new cluster", "AWS access key created"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("second run logged %q: state was made again instead of reopened", unwanted)
		}
	}
	for f, before := range keep {
		if readFile(t, filepath.Join(dir, f)) != before {
			t.Errorf("%s changed across a restart", f)
		}
	}
	if got := listDir(t, filepath.Join(dir, "softhsm", "tokens")); !slices.Equal(got, tokens) {
		t.Errorf("tokens after restart %v, want %v", got, tokens)
	}
	checkNoPINs(t, dir, out)
	checkNoSecret(t, env["AWS_SECRET_ACCESS_KEY"], out)
	p.stop(t)
	checkAuditLog(t, filepath.Join(dir, "audit.log"), firstRun)
}

// checkAuditLog verifies the audit log's chain and that it has grown past
// lines (the restart continued it rather than starting over), and returns
// its number of lines. The AWS requests of checkAWSEncrypt are in it.
func checkAuditLog(t *testing.T, path string, lines int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := audit.Verify(f)
	if err != nil {
		t.Fatalf("audit log %s: %v", path, err)
	}
	if rep.Lines <= lines || rep.Continues {
		t.Errorf("audit log %s: %d lines (continues %v), want more than %d in one chain", path, rep.Lines, rep.Continues, lines)
	}
	body := readFile(t, path)
	for _, op := range []string{"Encrypt", "Decrypt", "CreateKey"} {
		if !strings.Contains(body, op) {
			t.Errorf("audit log %s has no %s", path, op)
		}
	}
	return rep.Lines
}

// checkLayout checks the data directory's files and their modes.
func checkLayout(t *testing.T, dir string) {
	t.Helper()
	modes := map[string]os.FileMode{
		".":                        0o700,
		"softhsm":                  0o700,
		"softhsm/tokens":           0o700,
		"tls":                      0o700,
		"softhsm/softhsm2.conf":    0o600,
		"softhsm/user.pin":         0o600,
		"softhsm/so.pin":           0o600,
		"tls/ca-key.pem":           0o600,
		"tls/node-key.pem":         0o600,
		"tls/admin-key.pem":        0o600,
		"tls/ca.pem":               0o600,
		"tls/node.pem":             0o600,
		"tls/admin.pem":            0o600,
		"kms-credentials.json":     0o600,
		"audit.log":                0o600,
		"dev.env":                  0o600,
		"vault-token":              0o600,
		"pkcs11.pin":               0o600,
		"tls/admin-key.pkcs11.pem": 0o600,
	}
	for f, want := range modes {
		if got := fileMode(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s: mode %04o, want %04o", f, got, want)
		}
	}
	if !exists(filepath.Join(dir, "raft", "raft.db")) {
		t.Error("raft/raft.db missing")
	}
	// Everything else under the data directory too, Raft's snapshot
	// store included.
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile (a temporary file)
		} else if err != nil {
			return err
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	conf := readFile(t, filepath.Join(dir, "softhsm", "softhsm2.conf"))
	if !strings.Contains(conf, filepath.Join(dir, "softhsm", "tokens")) {
		t.Errorf("softhsm2.conf does not point at the data directory's tokens:\n%s", conf)
	}
}

// checkDevCerts checks the identities dev mode issued.
func checkDevCerts(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.LoadCA(filepath.Join(dir, "tls", "ca.pem"), filepath.Join(dir, "tls", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := pki.ReadCertFile(filepath.Join(dir, "tls", "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1"} {
		if err := node.VerifyHostname(h); err != nil {
			t.Errorf("node certificate: %v", err)
		}
	}
	admin, err := pki.ReadCertFile(filepath.Join(dir, "tls", "admin.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if admin.Subject.CommonName != "admin" || authz.RoleOf(admin) != "admin" {
		t.Errorf("admin certificate: CN %q, role %q; want admin, admin", admin.Subject.CommonName, authz.RoleOf(admin))
	}
	if err := ca.Verify(admin, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("admin certificate does not chain to the dev CA: %v", err)
	}
}

// checkNoPINs requires that no PIN appears in the output.
func checkNoPINs(t *testing.T, dir, out string) {
	t.Helper()
	for _, f := range []string{"user.pin", "so.pin"} {
		pin := strings.TrimSpace(readFile(t, filepath.Join(dir, "softhsm", f)))
		if pin == "" || strings.Contains(out, pin) {
			t.Errorf("the PIN of %s appears in the output (or is empty)", f)
		}
	}
}
