package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
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

// serveCluster is what an operator prepares before `hsmbrokerd serve`: a
// SoftHSM directory, a cluster CA, and per node a token, a PIN file, a node
// certificate and a config file.
type serveCluster struct {
	dir        string
	module     string
	softhsm    string // SOFTHSM2_CONF
	ca         *pki.CA
	caFile     string
	clientCert string
	clientKey  string
}

// serveNode is one node's files and addresses.
type serveNode struct {
	id, dir  string
	config   string
	userPIN  string
	grpcAddr string
	metrics  string
	extra    string // more config lines
}

func newServeCluster(t *testing.T, module string) *serveCluster {
	t.Helper()
	c := &serveCluster{dir: t.TempDir(), module: module}
	tokens := filepath.Join(c.dir, "softhsm", "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	c.softhsm = filepath.Join(c.dir, "softhsm", "softhsm2.conf")
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(c.softhsm, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.ca, err = pki.NewCA("serve test CA"); err != nil {
		t.Fatal(err)
	}
	c.caFile = filepath.Join(c.dir, "ca.pem")
	if err := c.ca.Save(c.caFile, filepath.Join(c.dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	client, err := c.ca.IssueClient("alice", authz.RoleAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.clientCert, c.clientKey = filepath.Join(c.dir, "alice.pem"), filepath.Join(c.dir, "alice-key.pem")
	if err := client.Save(c.clientCert, c.clientKey); err != nil {
		t.Fatal(err)
	}
	return c
}

// node prepares a node: its own token (initialized in a helper process),
// PIN file, node certificate and config file, all under its directory.
func (c *serveCluster) node(t *testing.T, id, extra string) *serveNode {
	t.Helper()
	n := &serveNode{id: id, dir: filepath.Join(c.dir, id), extra: extra}
	if err := os.MkdirAll(filepath.Join(n.dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	soFile, userFile := filepath.Join(n.dir, "so.pin"), filepath.Join(n.dir, "user.pin")
	for _, file := range []string{soFile, userFile} {
		pin, err := randomPIN()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(pin+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.userPIN = strings.TrimSpace(readFile(t, userFile))
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = environ(initTokenEnv+"="+id, "SOFTHSM2_CONF="+c.softhsm,
		helperModuleEnv+"="+c.module, helperSOPINEnv+"="+soFile, helperUserPINEnv+"="+userFile)
	if out, err := helper.CombinedOutput(); err != nil {
		t.Fatalf("initialize token %s: %v\n%s", id, err, out)
	}
	cert, err := c.ca.IssueServer(id, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Save(filepath.Join(n.dir, "tls", "node.pem"), filepath.Join(n.dir, "tls", "node-key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(c.caFile, filepath.Join(n.dir, "tls", "ca.pem")); err != nil {
		t.Fatal(err)
	}
	n.config = filepath.Join(n.dir, "hsmbrokerd.yaml")
	n.writeConfig(t, c.module, freeAddrs(t, 3))
	return n
}

// writeConfig writes the config file with relative paths, which must
// resolve against the file's directory.
func (n *serveNode) writeConfig(t *testing.T, module string, addrs []string) {
	t.Helper()
	n.grpcAddr, n.metrics = addrs[0], addrs[2]
	doc := fmt.Sprintf(`node_id: %s
data_dir: data
grpc_addr: %s
raft_addr: %s
metrics_addr: %s
tls: {ca: tls/ca.pem, cert: tls/node.pem, key: tls/node-key.pem}
hsm: {module: %s, token_label: %s, pin_file: user.pin}
raft: {heartbeat_timeout: 300ms, election_timeout: 300ms, leader_lease_timeout: 150ms, promote_settle: 300ms}
%s`, n.id, addrs[0], addrs[1], addrs[2], module, n.id, n.extra)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs `hsmbrokerd serve` and waits for /readyz, moving to fresh
// ports on a collision.
func (c *serveCluster) start(t *testing.T, n *serveNode) *proc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p := startProc(t, environ("SOFTHSM2_CONF="+c.softhsm), "serve", "--config", n.config)
		var code int
		waitFor(t, nil, n.id+" /readyz or exit", func() error {
			var err error
			code, _, err = httpGet("http://" + n.metrics + "/readyz")
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
			n.writeConfig(t, c.module, freeAddrs(t, 3))
			continue
		}
		t.Fatalf("hsmbrokerd serve (%s) exited (%v) before it was ready", n.id, p.err)
	}
}

// startToExit starts serve on a node that must fail to start (what says
// which), and returns the process once it has exited.
func (c *serveCluster) startToExit(t *testing.T, n *serveNode, what string) *proc {
	t.Helper()
	p := startProc(t, environ("SOFTHSM2_CONF="+c.softhsm), "serve", "--config", n.config)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not exit", what)
	}
	return p
}

// checkServing runs the client-side checks against a running node.
func (c *serveCluster) checkServing(t *testing.T, p *proc, n *serveNode) {
	t.Helper()
	conn := dial(t, n.grpcAddr, c.caFile, c.clientCert, c.clientKey)
	waitServing(t, p, conn)
	checkReflection(t, conn)
	checkNoCertRefused(t, n.grpcAddr, c.caFile)
	checkHTTP(t, n.metrics)
}

// checkOutput checks a stopped node's logs: JSON only, and no PIN.
func checkOutput(t *testing.T, n *serveNode, out string) {
	t.Helper()
	checkJSONLines(t, out)
	if strings.Contains(out, n.userPIN) {
		t.Errorf("%s: the PIN appears in the output", n.id)
	}
}

func TestServeStartStopRestart(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	n := c.node(t, "node-1", "bootstrap: true\n")

	for run := 1; run <= 2; run++ {
		p := c.start(t, n)
		c.checkServing(t, p, n)
		if run == 1 {
			// systemctl reload sends SIGHUP; with nothing to reload it
			// must not stop the node.
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, p, "the SIGHUP log line", func() error {
				if !strings.Contains(p.out.String(), "SIGHUP: nothing to reload") {
					return errors.New("not logged yet")
				}
				return nil
			})
			waitHTTPReady(t, p, n.metrics)
		}
		p.stop(t)
		out := p.out.String()
		checkOutput(t, n, out)
		checkProcs(t, out)
		if created := strings.Contains(out, "domain key created"); created != (run == 1) {
			t.Errorf("run %d: domain key created=%v, want %v", run, created, run == 1)
		}
		if !exists(filepath.Join(n.dir, "data", "raft", "raft.db")) {
			t.Fatal("data_dir was not resolved against the config file's directory")
		}
	}

	// A PIN the HSM refuses ends the daemon with its own status, which the
	// systemd unit does not restart: retries would lock a real HSM.
	if err := os.WriteFile(filepath.Join(n.dir, "user.pin"), []byte("000000-wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := c.startToExit(t, n, "a node with a wrong PIN")
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != exitPINRefused || !strings.Contains(p.out.String(), "check hsm.pin_file") {
		t.Fatalf("a node with a wrong PIN: %v, want exit status %d\n%s", p.err, exitPINRefused, p.out.String())
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "deploy", "hsmbrokerd.service"))
	if err != nil || !strings.Contains(string(unit), fmt.Sprintf("RestartPreventExitStatus=%d", exitPINRefused)) {
		t.Errorf("deploy/hsmbrokerd.service does not keep status %d from being restarted: %v", exitPINRefused, err)
	}
}

// TestServeJoin starts a second node with a join list and a join token; it
// becomes ready only once it holds the cluster's domain key, which reaches
// its HSM from the first node's. Restarted, it reopens its membership
// instead of joining again.
func TestServeJoin(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	n1 := c.node(t, "node-1", "bootstrap: true\n")
	p1 := c.start(t, n1)

	conn := dial(t, n1.grpcAddr, c.caFile, c.clientCert, c.clientKey)
	waitServing(t, p1, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := pb.NewClusterServiceClient(conn).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node-2"})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	tokenFile := filepath.Join(c.dir, "join.token")
	n2 := c.node(t, "node-2", fmt.Sprintf("join: [%s]\njoin_token_file: %s\n", n1.grpcAddr, tokenFile))

	// A file that holds no join token is refused before anything is
	// asked of the cluster. A first join that fails (here a token the
	// cluster never issued) exits, and leaves no member state behind: the
	// next start, with a good token, joins rather than waiting as a member
	// no one knows.
	if err := os.WriteFile(tokenFile, []byte("hbj.0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := c.startToExit(t, n2, "a node with a file that holds no join token")
	if bad.err == nil || !strings.Contains(bad.out.String(), "does not hold a join token") {
		t.Fatalf("a node with a file that holds no join token: %v\n%s", bad.err, bad.out.String())
	}
	if err := os.WriteFile(tokenFile, []byte("hsmbj_"+strings.Repeat("A", 42)+"Q\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad = c.startToExit(t, n2, "a node with a made-up join token")
	if bad.err == nil || !strings.Contains(bad.out.String(), "unknown, already used, expired") {
		t.Fatalf("a node with a made-up join token: %v\n%s", bad.err, bad.out.String())
	}
	if err := os.WriteFile(tokenFile, []byte(tok.GetToken()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		p2 := c.start(t, n2)
		c.checkServing(t, p2, n2)
		p2.stop(t)
		out := p2.out.String()
		checkOutput(t, n2, out)
		if strings.Contains(out, tok.GetToken()) {
			t.Error("the join token appears in the output")
		}
		if joined := strings.Contains(out, "joining the cluster"); joined != (run == 1) {
			t.Errorf("run %d: joined=%v, want %v", run, joined, run == 1)
		}
		if strings.Contains(out, "domain key created") {
			t.Errorf("run %d: the joining node made its own domain key", run)
		}
	}
	p1.stop(t)
	checkOutput(t, n1, p1.out.String())
}

// checkProcs reads GOMAXPROCS from the "serving" record: the environment's
// value when it sets one, else half of what Go chose, at least one
// (tuneProcs). Go's choice may follow a container's CPU limit, so without
// the variable the check is a bound: at most half the CPUs.
func checkProcs(t *testing.T, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		var rec struct {
			Msg        string `json:"msg"`
			GOMAXPROCS *int   `json:"gomaxprocs"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "serving" {
			continue
		}
		if rec.GOMAXPROCS == nil {
			t.Fatalf("the serving record does not give gomaxprocs: %s", line)
		}
		n := *rec.GOMAXPROCS
		if env, set := os.LookupEnv("GOMAXPROCS"); set {
			if want, err := strconv.Atoi(env); err == nil && n != want {
				t.Errorf("with GOMAXPROCS=%s the daemon ran with %d", env, n)
			}
			return
		}
		if n < 1 || (runtime.NumCPU() >= 2 && n > runtime.NumCPU()/2) {
			t.Errorf("without GOMAXPROCS the daemon ran with %d on %d CPUs, want 1 to %d", n, runtime.NumCPU(), max(1, runtime.NumCPU()/2))
		}
		return
	}
	t.Fatal("no serving record in the output")
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
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		t.Error(err)
	}
}
