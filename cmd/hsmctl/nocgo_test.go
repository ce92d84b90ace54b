package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildsWithoutCgo: hsmctl is a client, so it builds with
// CGO_ENABLED=0 and links no PKCS#11 binding; only the direct baseline of
// `hsmctl bench` needs cgo, and such a build says so instead of running.
func TestBuildsWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	env := append(os.Environ(), "CGO_ENABLED=0")
	deps := exec.Command("go", "list", "-deps", ".")
	deps.Env = env
	out, err := deps.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/miekg/pkcs11" || strings.HasSuffix(dep, "/broker/hsm") {
			t.Errorf("hsmctl without cgo depends on %s", dep)
		}
	}
	bin := filepath.Join(t.TempDir(), "hsmctl")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	run := exec.Command(bin, "bench", "--baseline-direct", "--token-label", "any", "--duration", "1s", "--addr", "127.0.0.1:1")
	out, err = run.CombinedOutput()
	if err == nil {
		t.Fatalf("bench --baseline-direct without cgo succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "built without cgo") {
		t.Errorf("bench --baseline-direct without cgo: want an error naming cgo, got:\n%s", out)
	}
}
