package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestBenchLibraryVsGRPC compares the library's throughput with hsmctl
// bench's over gRPC, against one broker, for the same operation and
// concurrency, in one run. Three processes: `hsmbrokerd dev` (the broker,
// on a SoftHSM token of its own), testdata/bench.c (threads with a session
// each in one library instance) and `hsmctl bench` (Go SDK clients, a
// connection each). The two clients take turns: a window of the library,
// then a window of hsmctl bench (a fresh process each time, whose set-up
// and warm-up are not measured), then the library again, and so on, so
// that load from other work on the machine falls on both alike. It logs,
// per operation, the ratio library/gRPC of each hsmctl window to the mean
// of the library windows around it, their median and spread, and the CPU
// time per operation of each client and of the broker. It asserts
// nothing about time (figures belong in docs/PKCS11.md); it runs only with
// HSMBROKER_BENCH=1:
//
//	HSMBROKER_BENCH=1 go test -count=1 -timeout 30m -run TestBenchLibraryVsGRPC -v ./pkcs11lib/e2e
//
// HSMBROKER_BENCH_CONCURRENCY (default 8), HSMBROKER_BENCH_WINDOWS (hsmctl
// windows, default 15) and HSMBROKER_BENCH_WINDOW (default 1s) change the
// run; HSMBROKER_BENCH_OPS (default sign-rsa,sign-p256,aes-cbc) picks the
// operations.
func TestBenchLibraryVsGRPC(t *testing.T) {
	if os.Getenv("HSMBROKER_BENCH") != "1" {
		t.Skip("set HSMBROKER_BENCH=1")
	}
	requireTool(t, cc, "gcc")
	module := requireTool(t, "/usr/lib/softhsm/libsofthsm2.so", "softhsm2")
	lib, hsmctl := artifacts(t)
	dir := t.TempDir()
	daemon := filepath.Join(dir, "hsmbrokerd")
	build := exec.Command("go", "build", "-o", daemon, "./cmd/hsmbrokerd")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hsmbrokerd: %v\n%s", err, out)
	}
	bin := filepath.Join(dir, "bench")
	src, _ := filepath.Abs("testdata/bench.c")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", bin, src, "-ldl", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("cc bench.c: %v\n%s", err, out)
	}

	conc, pairs, window := 8, 15, time.Second
	if v, err := strconv.Atoi(os.Getenv("HSMBROKER_BENCH_CONCURRENCY")); err == nil && v > 0 {
		conc = v
	}
	if v, err := strconv.Atoi(os.Getenv("HSMBROKER_BENCH_WINDOWS")); err == nil && v > 0 {
		pairs = v
	}
	if v, err := time.ParseDuration(os.Getenv("HSMBROKER_BENCH_WINDOW")); err == nil && v > 0 {
		window = v
	}
	ops := []string{"sign-rsa", "sign-p256", "aes-cbc"}
	if v := os.Getenv("HSMBROKER_BENCH_OPS"); v != "" {
		ops = strings.Split(v, ",")
	}

	broker, vars := startDevBroker(t, daemon, module, filepath.Join(dir, "data"))
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), vars...)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				out = append(out, ee.Stderr...)
			}
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The library's keys, made by hsmctl and found by the library by label
	// (alias name). hsmctl bench makes its own at each run.
	run(hsmctl, "keys", "create", "--alias", "alias/lib-rsa", "--spec", "RSA_2048", "--usage", "SIGN_VERIFY")
	run(hsmctl, "keys", "create", "--alias", "alias/lib-p256", "--spec", "ECC_NIST_P256", "--usage", "SIGN_VERIFY")
	run(hsmctl, "keys", "create", "--alias", "alias/lib-aes", "--spec", "SYMMETRIC_DEFAULT", "--usage", "RAW_ENCRYPT_DECRYPT")

	t.Logf("broker: hsmbrokerd dev (pid %d); %d clients a side; %d pairs of %v windows", broker.Process.Pid, conc, pairs, window)
	for _, op := range ops {
		// The library's operation on its key, and hsmctl bench's: CKM_RSA_PKCS
		// over a SHA-256 DigestInfo / Sign of a SHA-256 digest; CKM_ECDSA /
		// Sign; raw CKM_AES_CBC_PAD / Encrypt (AES-256-GCM, the broker's
		// format), 4096 bytes each.
		var label, grpcOp string
		switch op {
		case "sign-rsa":
			label, grpcOp = "lib-rsa", "sign-rsa"
		case "sign-p256":
			label, grpcOp = "lib-p256", "sign-p256"
		case "aes-cbc":
			label, grpcOp = "lib-aes", "encrypt"
		default:
			t.Fatalf("unknown operation %q", op)
		}
		lb := startLibBench(t, bin, lib, op, label, conc, vars)
		lb.window(window) // warm-up: connection, sessions, key handles
		// libWindow runs one measured window of the library and returns its
		// ops/s, adding its own and the broker's CPU time to the totals.
		var libCPU, libBrokerCPU, grpcCPU, grpcBrokerCPU float64
		var libN, grpcN int64
		libWindow := func() float64 {
			b0, c0 := procCPU(t, broker.Process.Pid), procCPU(t, lb.cmd.Process.Pid)
			n, bad := lb.window(window)
			c1, b1 := procCPU(t, lb.cmd.Process.Pid), procCPU(t, broker.Process.Pid)
			if bad != 0 || n == 0 {
				t.Fatalf("library %s: %d operations, %d errors in a window", op, n, bad)
			}
			libCPU += c1 - c0
			libBrokerCPU += b1 - b0
			libN += n
			return float64(n) / window.Seconds()
		}
		// Each hsmctl bench window is compared with the mean of the library
		// windows just before and just after it, so that a drift of the
		// machine's load during the run does not fall on one side.
		libs := []float64{libWindow()}
		var ratios []float64
		var grpcSum float64
		for range pairs {
			var res struct {
				Broker struct {
					Ops         int      `json:"ops"`
					Errors      int      `json:"errors"`
					OpsPerSec   float64  `json:"opsPerSecond"`
					FirstError  string   `json:"firstError"`
					ClientCPUUs *float64 `json:"clientCpuUsPerOp"`
					BrokerCPUUs *float64 `json:"brokerCpuUsPerOp"`
				} `json:"broker"`
			}
			out := run(hsmctl, "bench", "--op", grpcOp, "--size", "4096", "--concurrency", strconv.Itoa(conc),
				"--duration", window.String(), "--window", window.String(), "-o", "json")
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("hsmctl bench -o json: %v\n%s", err, out)
			}
			if res.Broker.Errors != 0 || res.Broker.Ops == 0 {
				t.Fatalf("hsmctl bench %s: %d operations, %d errors (%s)", grpcOp, res.Broker.Ops, res.Broker.Errors, res.Broker.FirstError)
			}
			g := res.Broker.OpsPerSec
			grpcN += int64(res.Broker.Ops)
			if res.Broker.ClientCPUUs != nil {
				grpcCPU += *res.Broker.ClientCPUUs * float64(res.Broker.Ops) / 1e6
			}
			if res.Broker.BrokerCPUUs != nil {
				grpcBrokerCPU += *res.Broker.BrokerCPUUs * float64(res.Broker.Ops) / 1e6
			}
			libs = append(libs, libWindow())
			ratios = append(ratios, (libs[len(libs)-2]+libs[len(libs)-1])/2/g)
			grpcSum += g
		}
		lb.close()
		slices.Sort(ratios)
		med := ratios[len(ratios)/2]
		if len(ratios)%2 == 0 {
			med = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
		}
		var libSum float64
		for _, l := range libs {
			libSum += l
		}
		q1, q3 := ratios[len(ratios)/4], ratios[(3*len(ratios))/4]
		t.Logf("%-9s library %.0f ops/s (%d windows), hsmctl bench (gRPC) %.0f ops/s (%d windows); ratio median %.2f, middle half %.2f-%.2f, min %.2f, max %.2f (%s)",
			op, libSum/float64(len(libs)), len(libs), grpcSum/float64(pairs), pairs, med, q1, q3, ratios[0], ratios[len(ratios)-1], fmtRatios(ratios))
		t.Logf("%-9s CPU µs/op: library client %.0f, broker %.0f | hsmctl client %.0f, broker %.0f",
			op, libCPU/float64(libN)*1e6, libBrokerCPU/float64(libN)*1e6, grpcCPU/float64(grpcN)*1e6, grpcBrokerCPU/float64(grpcN)*1e6)
	}
}

func fmtRatios(rs []float64) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = strconv.FormatFloat(r, 'f', 2, 64)
	}
	return strings.Join(s, " ")
}

// procCPU is the CPU time (user + system, seconds) process pid has used.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces), from field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// startDevBroker runs `hsmbrokerd dev` in a process of its own on free
// loopback ports and returns it with the variables of its dev.env.
func startDevBroker(t *testing.T, daemon, module, dataDir string) (*exec.Cmd, []string) {
	t.Helper()
start:
	for attempt := 0; ; attempt++ {
		var addrs []string
		var lns []net.Listener
		for range 6 {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			lns = append(lns, ln)
			addrs = append(addrs, ln.Addr().String())
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
		var out hsmtest.SyncBuffer
		cmd := exec.Command(daemon, "dev", "--data-dir", dataDir, "--module", module, "--grpc-addr", addrs[0],
			"--raft-addr", addrs[1], "--metrics-addr", addrs[2], "--kms-addr", addrs[3], "--vault-addr", addrs[4], "--kmip-addr", addrs[5])
		// A SOFTHSM2_CONF of the caller's must not leak into dev mode.
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+filepath.Join(t.TempDir(), "elsewhere.conf"))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		envFile := filepath.Join(dataDir, "dev.env")
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if vars := readDevEnv(envFile); vars != nil {
				if err := waitReady(addrs[2], deadline); err != nil {
					t.Fatalf("hsmbrokerd dev: %v\n%s", err, out.String())
				}
				return cmd, vars
			}
			select {
			case <-done:
				if strings.Contains(out.String(), "address already in use") && attempt < 3 {
					t.Logf("port collision on %v; retrying", addrs)
					continue start
				}
				t.Fatalf("hsmbrokerd dev exited before writing dev.env:\n%s", out.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("hsmbrokerd dev wrote no dev.env in 2 minutes:\n%s", out.String())
			}
		}
	}
}

// waitReady polls the broker's /readyz until it answers 200.
func waitReady(metricsAddr string, deadline time.Time) error {
	for {
		c, err := net.DialTimeout("tcp", metricsAddr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.WriteString(c, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			_ = c.Close()
			if strings.Contains(line, " 200 ") {
				return nil
			}
			err = errors.New(strings.TrimSpace(line))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readDevEnv reads the export lines of dev.env, nil until it is complete.
func readDevEnv(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "HSMBROKER_PKCS11_PIN=") {
		return nil
	}
	var vars []string
	for _, line := range strings.Split(string(b), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			vars = append(vars, k+"="+strings.Trim(v, "'\""))
		}
	}
	return vars
}

// libBench is testdata/bench.c in window mode.
type libBench struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startLibBench(t *testing.T, bin, lib, op, label string, conc int, vars []string) *libBench {
	t.Helper()
	cmd := exec.Command(bin, lib, op, label, strconv.Itoa(conc), "0")
	cmd.Env = append(os.Environ(), vars...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &libBench{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	if line, err := b.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("library bench did not start: %q %v", line, err)
	}
	return b
}

// window runs the library's threads for d and returns their ops and errors.
func (b *libBench) window(d time.Duration) (int64, int64) {
	b.t.Helper()
	if _, err := fmt.Fprintf(b.in, "%d\n", d.Milliseconds()); err != nil {
		b.t.Fatal(err)
	}
	line, err := b.out.ReadString('\n')
	var ops, errs int64
	if err != nil {
		b.t.Fatalf("library bench: %v", err)
	}
	if _, err := fmt.Sscanf(line, "ops %d errors %d", &ops, &errs); err != nil {
		b.t.Fatalf("library bench said %q: %v", line, err)
	}
	return ops, errs
}

func (b *libBench) close() {
	b.t.Helper()
	_ = b.in.Close()
	if err := b.cmd.Wait(); err != nil {
		b.t.Fatalf("library bench: %v", err)
	}
}
