package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// Environment of the token-initializing helper process (see TestMain).
const (
	helperModuleEnv  = "HSMBROKERD_TEST_MODULE_PATH"
	helperSOPINEnv   = "HSMBROKERD_TEST_SO_PIN_FILE"
	helperUserPINEnv = "HSMBROKERD_TEST_USER_PIN_FILE"
)

// initTokenHelper initializes the token labelled $HSMBROKERD_TEST_INIT_TOKEN
// in the SoftHSM directory of $SOFTHSM2_CONF, with PINs read from files.
func initTokenHelper() int {
	so, err := hsm.LoadPIN(os.Getenv(helperSOPINEnv), "")
	if err == nil {
		var user string
		if user, err = hsm.LoadPIN(os.Getenv(helperUserPINEnv), ""); err == nil {
			_, err = hsm.InitToken(os.Getenv(helperModuleEnv), os.Getenv(initTokenEnv), so, user)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "init token:", err)
		return 1
	}
	return 0
}

// serveFixture is what an operator prepares before `hsmbrokerd serve`: a
// token, a PIN file, a CA and certificates, a config file.
type serveFixture struct {
	dir        string
	softhsm    string // SOFTHSM2_CONF
	config     string
	userPIN    string
	caFile     string
	clientCert string
	clientKey  string
	grpcAddr   string
	metrics    string
}

func newServeFixture(t *testing.T, module string) *serveFixture {
	t.Helper()
	f := &serveFixture{dir: t.TempDir()}
	tokens := filepath.Join(f.dir, "softhsm", "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	f.softhsm = filepath.Join(f.dir, "softhsm", "softhsm2.conf")
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(f.softhsm, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	soFile, userFile := filepath.Join(f.dir, "so.pin"), filepath.Join(f.dir, "user.pin")
	for _, file := range []string{soFile, userFile} {
		pin, err := randomPIN()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(pin+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.userPIN = strings.TrimSpace(readFile(t, userFile))
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = environ(initTokenEnv+"=serve-test", "SOFTHSM2_CONF="+f.softhsm,
		helperModuleEnv+"="+module, helperSOPINEnv+"="+soFile, helperUserPINEnv+"="+userFile)
	if out, err := helper.CombinedOutput(); err != nil {
		t.Fatalf("initialize token: %v\n%s", err, out)
	}

	tlsDir := filepath.Join(f.dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("serve test CA")
	if err != nil {
		t.Fatal(err)
	}
	f.caFile = filepath.Join(tlsDir, "ca.pem")
	if err := ca.Save(f.caFile, filepath.Join(tlsDir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueServer("node-1", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Save(filepath.Join(tlsDir, "node.pem"), filepath.Join(tlsDir, "node-key.pem")); err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("alice", pki.RoleUser, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.clientCert, f.clientKey = filepath.Join(tlsDir, "alice.pem"), filepath.Join(tlsDir, "alice-key.pem")
	if err := client.Save(f.clientCert, f.clientKey); err != nil {
		t.Fatal(err)
	}
	f.config = filepath.Join(f.dir, "hsmbrokerd.yaml")
	f.writeConfig(t, module, freeAddrs(t, 3))
	return f
}

// writeConfig writes the config file with relative paths, which must
// resolve against the file's directory.
func (f *serveFixture) writeConfig(t *testing.T, module string, addrs []string) {
	t.Helper()
	f.grpcAddr, f.metrics = addrs[0], addrs[2]
	doc := fmt.Sprintf(`node_id: node-1
data_dir: data
grpc_addr: %s
raft_addr: %s
metrics_addr: %s
bootstrap: true
tls: {ca: tls/ca.pem, cert: tls/node.pem, key: tls/node-key.pem}
hsm: {module: %s, token_label: serve-test, pin_file: user.pin}
raft: {heartbeat_timeout: 200ms, election_timeout: 200ms, leader_lease_timeout: 100ms}
`, addrs[0], addrs[1], addrs[2], module)
	if err := os.WriteFile(f.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs `hsmbrokerd serve` and waits for /readyz, moving to fresh
// ports on a collision.
func (f *serveFixture) start(t *testing.T, module string) *proc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p := startProc(t, environ("SOFTHSM2_CONF="+f.softhsm), "serve", "--config", f.config)
		var code int
		waitFor(t, nil, "/readyz or exit", func() error {
			var err error
			code, _, err = httpGet("http://" + f.metrics + "/readyz")
			if code == http.StatusOK || p.exited() {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
		if code == http.StatusOK {
			return p
		}
		if portCollision(p) && attempt < 3 {
			f.writeConfig(t, module, freeAddrs(t, 3))
			continue
		}
		t.Fatalf("hsmbrokerd serve exited (%v) before it was ready", p.err)
	}
}

func TestServeStartStopRestart(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	f := newServeFixture(t, module)

	for run := 1; run <= 2; run++ {
		p := f.start(t, module)
		conn := dial(t, f.grpcAddr, f.caFile, f.clientCert, f.clientKey)
		waitServing(t, p, conn)
		checkReflection(t, conn)
		checkNoCertRefused(t, f.grpcAddr, f.caFile)
		checkHTTP(t, f.metrics)
		p.stop(t)

		out := p.out.String()
		checkJSONLines(t, out)
		if strings.Contains(out, f.userPIN) {
			t.Error("the PIN appears in the output")
		}
		created := strings.Contains(out, "domain key created")
		if created != (run == 1) {
			t.Errorf("run %d: domain key created=%v, want %v", run, created, run == 1)
		}
		if !exists(filepath.Join(f.dir, "data", "raft", "raft.db")) {
			t.Fatal("data_dir was not resolved against the config file's directory")
		}
	}
}

// checkJSONLines requires every line of output to be a JSON log record
// (serve logs JSON by default).
func checkJSONLines(t *testing.T, out string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
			t.Errorf("not a JSON log record: %q", line)
		}
	}
}
