package hsmtest

import (
	"os"
	"os/exec"
	"testing"
)

// PythonPath is the system Python, which has Debian's python3-pykmip.
const PythonPath = "/usr/bin/python3"

// RequirePyKMIP makes sure the system Python can import PyKMIP and returns
// its path. Without it the test is skipped, except under CI=true, where a
// missing dependency fails the run.
func RequirePyKMIP(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(PythonPath, "-c", "import kmip.pie.client, kmip.core.enums").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PyKMIP is missing (apt-get install python3-pykmip): %v: %s", err, out)
		}
		t.Skipf("PyKMIP is missing (apt-get install python3-pykmip): %v", err)
	}
	return PythonPath
}
