package gate

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The gate skips outside CI and fails under CI=true, checked in a child
// test process so the failure it must produce does not fail this test.
func TestGate(t *testing.T) {
	if os.Getenv("GATE_CHILD") == "1" {
		Tool(t, "hsmbroker-no-such-program", "nothing installs it")
		t.Fatal("Tool returned for a missing program")
	}
	for _, ci := range []string{"", "true"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGate$", "-test.v")
		cmd.Env = append(os.Environ(), "GATE_CHILD=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		switch {
		case ci == "" && (err != nil || !strings.Contains(string(out), "--- SKIP: TestGate")):
			t.Errorf("outside CI: %v\n%s", err, out)
		case ci == "true" && (err == nil || !strings.Contains(string(out), "--- FAIL: TestGate") ||
			!strings.Contains(string(out), "hsmbroker-no-such-program is missing (nothing installs it)")):
			t.Errorf("under CI=true: %v\n%s", err, out)
		}
	}
	if p := Tool(t, "go", "the Go toolchain"); p == "" {
		t.Fatal("Tool found no path for go")
	}
}
