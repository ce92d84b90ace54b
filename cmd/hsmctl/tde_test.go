package main

import (
	"strings"
	"testing"
)

// Usage errors of hsmctl tde are caught before any connection is made.
func TestTDEUsageErrors(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"tde", "create"},
		{"tde", "create", "1", "2"},
		{"tde", "rotate"},
		{"tde", "retire", "1"},
		{"tde", "token", "issue"},
		{"tde", "token", "revoke"},
	} {
		r := e.run(args...)
		if r.code != 2 || r.stderr == "" {
			t.Errorf("hsmctl %s: exit %d, stderr %q; want 2 with a message", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if out := e.ok("tde", "--help"); !strings.Contains(out, "hsmctl tde token issue --principal") {
		t.Errorf("tde --help has no token example:\n%s", out)
	}
}
