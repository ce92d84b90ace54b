package peerbench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// localKMS finds the local-kms binary that `make tools` installs (on
// PATH), or the one HSMBROKER_LOCAL_KMS names. Without it the test is
// skipped, except under CI=true.
func localKMS(t *testing.T) string {
	t.Helper()
	p := os.Getenv("HSMBROKER_LOCAL_KMS")
	if p == "" {
		p, _ = exec.LookPath("local-kms")
	}
	if _, err := os.Stat(p); p == "" || err != nil {
		msg := "local-kms is missing (make tools installs it, or set HSMBROKER_LOCAL_KMS)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestPeerBench runs the comparison very briefly, in a network namespace of
// its own (the test binary starts itself again there), and checks that it
// measured both servers on every operation: calls made, almost none failed, CPU
// read from /proc. No timing is asserted.
func TestPeerBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds hsmbrokerd and starts two servers")
	}
	hsmtest.RequireSoftHSM(t)
	lk := localKMS(t)
	if os.Getenv(EnvIsolated) == "" {
		bin := filepath.Join(t.TempDir(), "hsmbrokerd")
		build := exec.Command("go", "build", "-o", bin, "github.com/hsmbroker/hsmbroker/cmd/hsmbrokerd")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build hsmbrokerd: %v\n%s", err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := Isolated(ctx, os.Args[0], "-test.run=^TestPeerBench$", "-test.v")
		cmd.Env = append(cmd.Env, "HSMBROKER_PEERBENCH_HSMBROKERD="+bin, "HSMBROKER_LOCAL_KMS="+lk)
		out, err := cmd.CombinedOutput()
		t.Logf("in the namespace:\n%s", out)
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			// The namespace could not be made: a missing capability of this
			// host, like a missing dependency.
			if os.Getenv("CI") == "true" {
				t.Fatalf("%v: %v", ErrNoNamespace, err)
			}
			t.Skipf("%v: %v", ErrNoNamespace, err)
		}
		if err != nil {
			t.Fatalf("run in a network namespace: %v", err)
		}
		if !bytes.Contains(out, []byte("--- PASS: TestPeerBench")) {
			t.Fatal("the run in the namespace did not pass")
		}
		return
	}

	if err := LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := Run(context.Background(), Config{
		LocalKMS: lk, Hsmbrokerd: os.Getenv("HSMBROKER_PEERBENCH_HSMBROKERD"),
		Clients: 4, Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res.Rows) != len(AllOps) {
		t.Fatalf("%d rows, want %d", len(res.Rows), len(AllOps))
	}
	var cpuB, cpuL, clientB, clientL time.Duration
	for _, r := range res.Rows {
		for name, s := range map[string]Side{"hsmbroker": r.Broker, "local-kms": r.LocalKMS} {
			// At most 1% failed: see newClient on the one client-side
			// failure seen against both servers.
			if s.Ops == 0 || s.Errors*100 > s.Ops || s.Measured <= 0 {
				t.Errorf("%s %s: %d calls, %d errors (%s) in %s", r.Op, name, s.Ops, s.Errors, s.FirstErr, s.Measured)
			}
		}
		if len(r.PairRatios) == 0 || r.Ratio() <= 0 {
			t.Errorf("%s: no throughput ratio", r.Op)
		}
		cpuB += r.Broker.CPU
		cpuL += r.LocalKMS.CPU
		clientB += r.Broker.ClientCPU
		clientL += r.LocalKMS.ClientCPU
		for _, sh := range []float64{r.Broker.IdleShare(), r.LocalKMS.IdleShare()} {
			if sh < 0 || sh > 1.05 {
				t.Errorf("%s: idle share %.2f out of range", r.Op, sh)
			}
		}
	}
	if cpuB <= 0 || cpuL <= 0 {
		t.Errorf("server CPU not measured: hsmbroker %s, local-kms %s", cpuB, cpuL)
	}
	if clientB <= 0 || clientL <= 0 {
		t.Errorf("client CPU not measured: against hsmbroker %s, against local-kms %s", clientB, clientL)
	}
	var table strings.Builder
	if err := res.WriteText(&table); err != nil {
		t.Fatal(err)
	}
	for _, op := range AllOps {
		if !strings.Contains(table.String(), "| "+string(op)+" | ") {
			t.Errorf("table lacks %s:\n%s", op, table.String())
		}
	}
	t.Log("\n" + table.String())
}

// TestProcCPUAndParseEnv checks the /proc readers, the dev.env parser and
// the operation list.
func TestProcCPUAndParseEnv(t *testing.T) {
	d, err := procCPU(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("procCPU: %v %v", d, err)
	}
	env := parseEnv("# c\nexport A='x'\\''y'\nexport B=plain\n")
	if env["A"] != "x'y" || env["B"] != "plain" {
		t.Fatalf("parseEnv: %q", env)
	}
	if _, err := ParseOps("encrypt,nope"); err == nil {
		t.Fatal("unknown operation accepted")
	}
	idle, err := parseIdle("cpu  10 0 5 700 30 0 2 0 0 0\ncpu0 5 0 2 350 15 0 1 0 0 0\n")
	if err != nil || idle != 7300*time.Millisecond {
		t.Fatalf("parseIdle: %v %v, want 7.3s", idle, err)
	}
	if _, err := parseIdle("intr 1 2 3\n"); err == nil {
		t.Fatal("parseIdle accepted a file without the cpu line first")
	}
	if d, err := machineIdle(); err != nil || d <= 0 {
		t.Fatalf("machineIdle: %v %v", d, err)
	}
}
