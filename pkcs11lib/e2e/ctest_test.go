package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

const cc = "/usr/bin/cc"

// cProgram compiles testdata/tde.c.
func (e *env) cProgram() string {
	e.t.Helper()
	requireTool(e.t, cc, "gcc")
	src, err := filepath.Abs("testdata/tde.c")
	if err != nil {
		e.t.Fatal(err)
	}
	bin := e.path("tde")
	e.run(cc, "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", bin, src, "-ldl")
	return bin
}

// TestOracleTDESequence follows Oracle's calls: one process makes the
// master key and the data objects and wraps table keys with CBC_PAD; a
// second process finds the key by label and unwraps them.
func TestOracleTDESequence(t *testing.T) {
	e := newEnv(t, 1)
	bin := e.cProgram()
	wrapped := e.path("wrapped.bin")
	if out := e.run(bin, e.lib, "set", wrapped); !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("set:\n%s", out)
	}
	if out := e.run(bin, e.lib, "open", wrapped); !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("open:\n%s", out)
	}
}

// TestBadInputAndFork: bad arguments get a CKR and no crash; a forked
// child gets CKR_CRYPTOKI_NOT_INITIALIZED without entering Go (no hang).
func TestBadInputAndFork(t *testing.T) {
	e := newEnv(t, 1)
	bin := e.cProgram()
	for _, mode := range []string{"bad", "fork"} {
		if out := e.run(bin, e.lib, mode, e.path("unused")); !strings.HasSuffix(out, "ok\n") {
			t.Fatalf("%s:\n%s", mode, out)
		}
	}
}

// TestManyThreads: eight threads, a session each, sign and encrypt at once
// through one library instance; every call must succeed.
func TestManyThreads(t *testing.T) {
	e := newEnv(t, 1)
	requireTool(t, cc, "gcc")
	src, err := filepath.Abs("testdata/bench.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := e.path("bench")
	e.run(cc, "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", bin, src, "-ldl", "-lpthread")
	e.hsmctlKey("threads-p256", "ECC_NIST_P256", "SIGN_VERIFY")
	out := e.run(bin, e.lib, "sign-p256", "threads-p256", "8", "2")
	var ops, errs int64
	if _, err := fmt.Sscanf(out, "ops %d errors %d", &ops, &errs); err != nil || ops == 0 || errs != 0 {
		t.Fatalf("8 threads: %v\n%s", err, out)
	}
}
