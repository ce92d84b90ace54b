package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// Deadlines of the end-to-end tests. Generous: CI machines are slow and
// the binary may carry the race detector.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

var binPath string // the hsmbrokerd binary, built on first use

// initTokenEnv makes the test binary, re-executed, initialize a SoftHSM
// token and exit: SoftHSM reads SOFTHSM2_CONF once per process, so a token
// in a test's own SoftHSM directory is made in a process of its own.
const initTokenEnv = "HSMBROKERD_TEST_INIT_TOKEN"

func TestMain(m *testing.M) {
	if os.Getenv(initTokenEnv) != "" {
		os.Exit(initTokenHelper())
	}
	dir, err := os.MkdirTemp("", "hsmbrokerd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "hsmbrokerd")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildOnce builds the binary the first time a test needs it, with the
// race detector when the tests have it.
var buildOnce = sync.OnceValue(func() error {
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
})

func buildBinary(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of the hsmbrokerd binary; skipped with -short")
	}
	if err := buildOnce(); err != nil {
		t.Fatal(err)
	}
}

// defaultTestModule is where Debian's softhsm2 package installs the
// library; HSMBROKER_TEST_MODULE overrides it, as for the other packages.
const defaultTestModule = "/usr/lib/softhsm/libsofthsm2.so"

// requireSoftHSM returns the SoftHSM library, skipping the test when it is
// absent, except under CI=true.
func requireSoftHSM(t *testing.T) string {
	t.Helper()
	mod := defaultTestModule
	if m := os.Getenv("HSMBROKER_TEST_MODULE"); m != "" {
		mod = m
	}
	if _, err := os.Stat(mod); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSMv2 library %s is missing (apt-get install softhsm2): %v", mod, err)
		}
		t.Skipf("SoftHSMv2 library %s is missing (apt-get install softhsm2)", mod)
	}
	return mod
}

// proc is a running hsmbrokerd.
type proc struct {
	cmd  *exec.Cmd
	out  *hsmtest.SyncBuffer
	done chan struct{}
	err  error // from Wait, valid once done is closed
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &hsmtest.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start hsmbrokerd: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("hsmbrokerd %s output:\n%s", strings.Join(args, " "), p.out)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and requires a clean exit within stopTimeout.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("hsmbrokerd still running %v after SIGTERM", stopTimeout)
	}
	if p.err != nil {
		t.Fatalf("hsmbrokerd exited with %v after SIGTERM, want status 0", p.err)
	}
}

// waitFor polls cond until it returns nil, the process (if any) exits, or
// the deadline passes; cond's last error says what was still missing.
func waitFor(t *testing.T, p *proc, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("hsmbrokerd exited (%v) while waiting for %s (last: %v)", p.err, what, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last: %v)", startTimeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago. Another process may take one before hsmbrokerd binds it; callers
// retry on "address already in use".
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

func portCollision(p *proc) bool {
	return p.exited() && strings.Contains(p.out.String(), "address already in use")
}

// environ is the test's environment with overrides (KEY=value).
func environ(overrides ...string) []string {
	env := os.Environ()
	for _, o := range overrides {
		k, _, _ := strings.Cut(o, "=")
		env = append(filterEnv(env, k), o)
	}
	return env
}

func filterEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}

// readEnvFile parses the export lines of dev.env.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
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

// dial connects with mutual TLS; certFile and keyFile empty dials without a
// client certificate.
func dial(t *testing.T, addr, caFile, certFile, keyFile string) *grpc.ClientConn {
	t.Helper()
	tc, err := pki.ClientTLSConfig(certFile, keyFile, caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitServing polls gRPC health until every service is SERVING.
func waitServing(t *testing.T, p *proc, conn *grpc.ClientConn) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", pb.KeyService_ServiceDesc.ServiceName, pb.CryptoService_ServiceDesc.ServiceName, pb.ClusterService_ServiceDesc.ServiceName} {
		waitFor(t, p, fmt.Sprintf("health of %q to be SERVING", svc), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return errors.New(r.GetStatus().String())
			}
			return nil
		})
	}
}

// checkReflection lists the services through gRPC reflection.
func checkReflection(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatalf("reflection send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection recv: %v", err)
	}
	_ = stream.CloseSend()
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.GetName()] = true
	}
	for _, want := range []string{pb.KeyService_ServiceDesc.ServiceName, pb.CryptoService_ServiceDesc.ServiceName, "grpc.health.v1.Health"} {
		if !got[want] {
			t.Errorf("reflection lists %v, missing %s", got, want)
		}
	}
}

// checkNoCertRefused requires a client without a certificate to be turned
// away, even for the health service.
func checkNoCertRefused(t *testing.T, addr, caFile string) {
	t.Helper()
	conn := dial(t, addr, caFile, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}

// httpGet returns the status code and body of a GET.
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func waitHTTPReady(t *testing.T, p *proc, metricsAddr string) {
	t.Helper()
	waitFor(t, p, "/readyz to answer 200", func() error {
		code, body, err := httpGet("http://" + metricsAddr + "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
}

func checkHTTP(t *testing.T, metricsAddr string) {
	t.Helper()
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "go_goroutines"} {
		code, body, err := httpGet("http://" + metricsAddr + path)
		if err != nil || code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d %q %v; want 200 with %q", path, code, body, err, want)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}
