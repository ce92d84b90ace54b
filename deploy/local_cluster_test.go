package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Deadlines: generous, since CI machines are slow.
const (
	scriptTimeout = 3 * time.Minute
	pollTimeout   = 60 * time.Second
)

// localCluster is a run of deploy/local-cluster.sh in a test's directory.
type localCluster struct {
	t      *testing.T
	dir    string
	env    []string // the script's environment: binaries, port base
	bins   string
	output bytes.Buffer // everything the script printed
}

// TestLocalCluster drives deploy/local-cluster.sh as an operator would: up,
// status, a key made through one node and used through others, the leader
// killed, a write through the SDK with every endpoint, the dead node
// started again and serving, down.
func TestLocalCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes; skipped with -short")
	}
	requireSoftHSM(t)
	c := startLocalCluster(t)

	// Three members, a leader, everyone healthy.
	st := c.waitStatus("3 healthy nodes and a leader", func(st clusterStatus) error {
		return st.allHealthy(3)
	})
	for _, n := range st.Nodes {
		if n.Role != "leader" && n.Role != "follower" {
			t.Errorf("node %s has role %q", n.ID, n.Role)
		}
	}

	// A key made through node2, used through node3 and node1.
	var key struct {
		KeyID string `json:"keyId"`
	}
	c.hsmctlJSON(&key, "node2", "keys", "create", "--alias", "alias/local-cluster")
	plain := filepath.Join(c.dir, "message.txt")
	enc := filepath.Join(c.dir, "message.enc")
	if err := os.WriteFile(plain, []byte("replicated to every node"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.hsmctl("node3", "encrypt", "--key", "alias/local-cluster", "--in", plain, "--out", enc)
	if out := c.hsmctl("node1", "decrypt", "--in", enc); out != "replicated to every node" {
		t.Fatalf("decrypt through node1: %q", out)
	}
	awsRoundTrip(t, c.envFile("node3"), key.KeyID)

	// The leader dies; the others elect a new one and take writes.
	old := st.Leader
	killed := time.Now()
	c.script("kill", c.dir, strings.TrimPrefix(old, "node"))
	st = c.waitStatus("a new leader", func(st clusterStatus) error {
		if st.Leader == "" || st.Leader == old {
			return fmt.Errorf("leader %q", st.Leader)
		}
		if n := st.node(old); n == nil || n.Healthy {
			return fmt.Errorf("the killed %s is not reported unhealthy: %+v", old, n)
		}
		return nil
	})
	t.Logf("%s killed; %s leads after %v", old, st.Leader, time.Since(killed).Round(time.Millisecond))

	sdk := c.sdkClient()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	created, err := sdk.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-failover"})
	if err != nil {
		t.Fatalf("CreateKey through the SDK with every endpoint, %s dead: %v", old, err)
	}
	ct, err := os.ReadFile(enc)
	if err != nil {
		t.Fatal(err)
	}
	if dec, err := sdk.Crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: ct}); err != nil || string(dec.GetPlaintext()) != "replicated to every node" {
		t.Fatalf("Decrypt through the SDK after failover: %q, %v", dec.GetPlaintext(), err)
	}
	t.Logf("first write acknowledged %v after the kill", time.Since(killed).Round(time.Millisecond))

	// The dead node comes back from its state, catches up and serves.
	c.script("start", c.dir, strings.TrimPrefix(old, "node"))
	c.waitStatus("the restarted node healthy again", func(st clusterStatus) error {
		return st.allHealthy(3)
	})
	var md struct {
		KeyID string `json:"keyId"`
	}
	c.hsmctlJSON(&md, old, "keys", "describe", "alias/after-failover")
	if md.KeyID != created.GetKeyMetadata().GetKeyId() {
		t.Fatalf("the restarted %s describes alias/after-failover as %q, want %q", old, md.KeyID, created.GetKeyMetadata().GetKeyId())
	}
	if out := c.hsmctl(old, "decrypt", "--in", enc); out != "replicated to every node" {
		t.Fatalf("decrypt through the restarted %s: %q", old, out)
	}

	// up on a running cluster starts nothing and makes nothing anew.
	if out := c.script("up", c.dir); strings.Count(out, "already running") != 3 {
		t.Errorf("up on a running cluster:\n%s", out)
	}

	pids := c.pids()
	c.script("down", c.dir)
	for n, pid := range pids {
		if running(pid) {
			t.Errorf("%s (pid %d) still runs after down", n, pid)
		}
		if _, err := os.Stat(filepath.Join(c.dir, n+".pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s.pid left behind: %v", n, err)
		}
	}

	// up after down brings the whole cluster back from its state: the
	// members start together, since one alone cannot be ready before a
	// majority elects a leader.
	c.script("up", c.dir)
	c.waitStatus("every node healthy after down and up", func(st clusterStatus) error {
		return st.allHealthy(3)
	})
	for _, n := range []string{"node1", "node2", "node3"} {
		var again struct {
			KeyID string `json:"keyId"`
		}
		c.hsmctlJSON(&again, n, "keys", "describe", "alias/after-failover")
		if again.KeyID != md.KeyID {
			t.Fatalf("after down and up, %s describes alias/after-failover as %q, want %q", n, again.KeyID, md.KeyID)
		}
	}
	c.script("down", c.dir)

	c.checkNoSecrets()
	c.checkAuditLogs()
}

// checkAuditLogs verifies each node's audit chain, the killed node's
// included: a line torn by SIGKILL is cut off when the node reopens it.
func (c *localCluster) checkAuditLogs() {
	c.t.Helper()
	for _, n := range []string{"node1", "node2", "node3"} {
		f, err := os.Open(filepath.Join(c.dir, n, "data", "audit.log"))
		if err != nil {
			c.t.Error(err)
			continue
		}
		rep, err := audit.Verify(f)
		f.Close()
		if err != nil || rep.Lines == 0 {
			c.t.Errorf("%s audit log: %d lines, %v", n, rep.Lines, err)
		}
	}
}

// startLocalCluster builds the binaries and runs `up` on free ports,
// moving to other ports if another process takes one meanwhile.
func startLocalCluster(t *testing.T) *localCluster {
	t.Helper()
	bins := buildBinaries(t)
	for attempt := 1; ; attempt++ {
		c := &localCluster{t: t, dir: filepath.Join(t.TempDir(), "cluster"), bins: bins}
		c.env = append(os.Environ(),
			"HSMBROKERD="+filepath.Join(bins, "hsmbrokerd"),
			"HSMCTL="+filepath.Join(bins, "hsmctl"),
			"HSMBROKER_PORT_BASE="+strconv.Itoa(freePortBase(t)),
			"HSMBROKER_WAIT=90",
		)
		t.Cleanup(c.cleanup)
		out, err := c.run("up", c.dir)
		if err == nil {
			for _, want := range []string{"node1 ready", "node2 ready", "node3 ready"} {
				if !strings.Contains(out, want) {
					t.Errorf("up output lacks %q:\n%s", want, out)
				}
			}
			// node1 founds the cluster and usually leads, but on a loaded
			// host an election may already have moved the lead: the
			// output must name a leader, any of the three.
			if !regexp.MustCompile(`(?m)^Leader node[123], term `).MatchString(out) {
				t.Errorf("up output names no leader:\n%s", out)
			}
			return c
		}
		if attempt < 3 && c.portCollision() {
			t.Logf("port collision; retrying on other ports")
			c.cleanup()
			continue
		}
		c.logNodeLogs()
		t.Fatalf("local-cluster.sh up: %v\n%s", err, out)
	}
}

func (c *localCluster) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"local-cluster.sh"}, args...)...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The nodes it starts inherit no pipe of ours: their output goes to
	// their logs, so Wait returns when the script does.
	err := cmd.Run()
	fmt.Fprintf(&c.output, "$ local-cluster.sh %s\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

// script runs the script and requires success.
func (c *localCluster) script(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.logNodeLogs()
		c.t.Fatalf("local-cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// cleanup stops whatever still runs: down, then SIGKILL for any node left.
func (c *localCluster) cleanup() {
	if _, err := os.Stat(c.dir); err != nil {
		return
	}
	pids := c.pids()
	if len(pids) == 0 {
		return
	}
	_, _ = c.run("down", c.dir)
	for _, pid := range pids {
		if running(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if c.t.Failed() {
		c.t.Logf("script output:\n%s", c.output.String())
	}
}

// pids returns the pid of each node with a pid file.
func (c *localCluster) pids() map[string]int {
	pids := map[string]int{}
	for _, n := range []string{"node1", "node2", "node3"} {
		b, err := os.ReadFile(filepath.Join(c.dir, n+".pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids[n] = pid
		}
	}
	return pids
}

// running reports whether pid is a live process, not a zombie.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func (c *localCluster) portCollision() bool {
	for _, n := range []string{"node1", "node2", "node3"} {
		b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
		if bytes.Contains(b, []byte("address already in use")) {
			return true
		}
	}
	return false
}

func (c *localCluster) logNodeLogs() {
	for _, n := range []string{"node1", "node2", "node3"} {
		if b, err := os.ReadFile(filepath.Join(c.dir, n+".log")); err == nil {
			c.t.Logf("%s.log:\n%s", n, b)
		}
	}
}

// envFile reads the exports of DIR/NAME.env.
func (c *localCluster) envFile(name string) map[string]string {
	c.t.Helper()
	f, err := os.Open(filepath.Join(c.dir, name+".env"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		vars[k] = strings.Trim(v, "'")
	}
	return vars
}

// hsmctl runs hsmctl with the exports of DIR/NODE.env, as a user who
// sourced it would, and returns its standard output.
func (c *localCluster) hsmctl(node string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bins, "hsmctl"), args...)
	cmd.Env = os.Environ()
	for k, v := range c.envFile(node) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("hsmctl %s (via %s): %v\n%s", strings.Join(args, " "), node, err, stderr.String())
	}
	return stdout.String()
}

func (c *localCluster) hsmctlJSON(v any, node string, args ...string) {
	c.t.Helper()
	out := c.hsmctl(node, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("hsmctl %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// clusterStatus is what `status DIR -o json` prints.
type clusterStatus struct {
	Leader string `json:"leader"`
	Nodes  []struct {
		ID        string `json:"id"`
		Role      string `json:"role"`
		Healthy   bool   `json:"healthy"`
		Reachable *bool  `json:"reachable"`
	} `json:"nodes"`
}

func (st clusterStatus) node(id string) *struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Healthy   bool   `json:"healthy"`
	Reachable *bool  `json:"reachable"`
} {
	for i := range st.Nodes {
		if st.Nodes[i].ID == id {
			return &st.Nodes[i]
		}
	}
	return nil
}

func (st clusterStatus) allHealthy(n int) error {
	if len(st.Nodes) != n || st.Leader == "" {
		return fmt.Errorf("%d nodes, leader %q", len(st.Nodes), st.Leader)
	}
	for i, nd := range st.Nodes {
		if want := fmt.Sprintf("node%d", i+1); nd.ID != want {
			return fmt.Errorf("node %d is %q, want %q", i, nd.ID, want)
		}
		if !nd.Healthy || nd.Reachable == nil || !*nd.Reachable {
			return fmt.Errorf("%s not healthy", nd.ID)
		}
	}
	return nil
}

// waitStatus polls `status DIR -o json` until cond accepts it.
func (c *localCluster) waitStatus(what string, cond func(clusterStatus) error) clusterStatus {
	c.t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		var st clusterStatus
		out, err := c.run("status", c.dir, "-o", "json", "--timeout", "2s")
		if err == nil {
			if err = json.Unmarshal([]byte(out), &st); err == nil {
				if err = cond(st); err == nil {
					return st
				}
			}
		}
		if time.Now().After(deadline) {
			c.logNodeLogs()
			c.t.Fatalf("timed out after %v waiting for %s (last: %v)\n%s", pollTimeout, what, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// sdkClient is a Go SDK client with all three nodes as endpoints, the
// HSMBROKER_* exports of cluster.env.
func (c *localCluster) sdkClient() *client.Client {
	c.t.Helper()
	env := c.envFile("cluster")
	if n := len(client.SplitEndpoints(env["HSMBROKER_ADDR"])); n != 3 {
		c.t.Fatalf("cluster.env lists %d endpoints, want 3", n)
	}
	cl, err := client.Dial(context.Background(), client.Config{
		Endpoints: client.SplitEndpoints(env["HSMBROKER_ADDR"]),
		CAFile:    env["HSMBROKER_CA"], CertFile: env["HSMBROKER_CERT"], KeyFile: env["HSMBROKER_KEY"],
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// checkNoSecrets requires that no PIN and no secret access key appears in
// the nodes' logs or the script's output.
func (c *localCluster) checkNoSecrets() {
	c.t.Helper()
	var logs bytes.Buffer
	logs.Write(c.output.Bytes())
	for _, n := range []string{"node1", "node2", "node3"} {
		b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
		logs.Write(b)
	}
	secrets := []string{c.envFile("node1")["AWS_SECRET_ACCESS_KEY"]}
	for _, n := range []string{"node1", "node2", "node3"} {
		for _, f := range []string{"user.pin", "so.pin"} {
			b, err := os.ReadFile(filepath.Join(c.dir, n, "softhsm", f))
			if err != nil {
				c.t.Fatal(err)
			}
			secrets = append(secrets, strings.TrimSpace(string(b)))
		}
	}
	for _, s := range secrets {
		if s == "" || bytes.Contains(logs.Bytes(), []byte(s)) {
			c.t.Error("a PIN or secret access key is empty or appears in the logs")
		}
	}
}

// awsRoundTrip encrypts and decrypts through a node's AWS KMS endpoint
// (HTTPS) with aws-sdk-go-v2, configured from the node's AWS_* exports.
func awsRoundTrip(t *testing.T, env map[string]string, keyID string) {
	t.Helper()
	pool, err := pki.CertPoolFromFile(env["AWS_CA_BUNDLE"])
	if err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{
		Region:      env["AWS_DEFAULT_REGION"],
		Credentials: credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], ""),
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}
	c := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(env["AWS_ENDPOINT_URL_KMS"]) })
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	out, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: []byte("via AWS")})
	if err != nil {
		t.Fatalf("kms.Encrypt through %s: %v", env["AWS_ENDPOINT_URL_KMS"], err)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "via AWS" {
		t.Fatalf("kms.Decrypt: %q, %v", dec.Plaintext, err)
	}
}

// buildBinaries builds hsmbrokerd and hsmctl into a temporary directory,
// so that the test never runs a stale bin/.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../cmd/hsmbrokerd", "../cmd/hsmctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// freePortBase finds a base whose fifteen ports (BASE+10*(N-1)+0..4 for
// nodes 1 to 3) are free at the moment. It stays below Linux's ephemeral
// range (32768 up), where the kernel picks the ports of outgoing
// connections and of the other tests' 127.0.0.1:0 listeners, so that no
// port is taken between a node's kill and its restart.
func freePortBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + 10*rand.IntN(1270)
		var lns []net.Listener
		ok := true
		for node := range 3 {
			for off := range 5 {
				ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+10*node+off))
				if err != nil {
					ok = false
					break
				}
				lns = append(lns, ln)
			}
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range found")
	return 0
}

// requireSoftHSM skips the test when SoftHSMv2 is missing, except under
// CI=true, where that is a failure.
func requireSoftHSM(t *testing.T) {
	t.Helper()
	mod := "/usr/lib/softhsm/libsofthsm2.so"
	if m := os.Getenv("HSMBROKER_TEST_MODULE"); m != "" {
		mod = m
	}
	if _, err := os.Stat(mod); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSMv2 library %s is missing (apt-get install softhsm2): %v", mod, err)
		}
		t.Skipf("SoftHSMv2 library %s is missing (apt-get install softhsm2)", mod)
	}
}
