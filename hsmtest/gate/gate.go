// Package gate is how tests treat a missing dependency (a system library,
// an external program, a device): outside CI the test is skipped with the
// reason; under CI=true, where everything `make deps` and `make tools`
// install must be present, it fails. It imports nothing of the project, so
// any package's tests can use it.
package gate

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under CI=true.
func CI() bool { return os.Getenv("CI") == "true" }

// Missing ends the test for a missing dependency: Skip outside CI, Fatal
// under CI=true.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatal(msg + " (CI=true: a missing dependency fails the run)")
	}
	t.Skip(msg)
}

// Tool returns the path of program name on PATH, or ends the test as
// Missing, with how to install it.
func Tool(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is missing (%s): %v", name, install, err)
	}
	return path
}
