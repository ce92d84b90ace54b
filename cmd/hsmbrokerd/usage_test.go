package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A bad command line is a usage error (exit status 2) naming the
// command's --help; a failure of the work itself is not.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"bogus"}, true, "unknown command"},
		{[]string{"serve", "--bogus"}, true, "Run 'hsmbrokerd serve --help' for usage"},
		{[]string{"serve"}, true, `required flag(s) "config" not set`},
		{[]string{"access-key", "delete", "--file", filepath.Join(dir, "c.json")}, true, "Run 'hsmbrokerd access-key delete --help'"},
		{[]string{"access-key", "create", "--file", filepath.Join(dir, "c.json"), "--principal", "p", "--role", "root"}, true, "--role"},
		{[]string{"dev", "--data-dir", dir, "--log-level", "verbose"}, true, "--log-level"},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, false, "missing.yaml"},
		{[]string{"access-key", "list", "--file", filepath.Join(dir, "none.json")}, false, "none.json"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, &out, &out)
		var ue *usageError
		if err == nil || errors.As(err, &ue) != tt.usage || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("hsmbrokerd %s: %v (usage error: %v); want usage error %v mentioning %q", strings.Join(tt.args, " "), err, errors.As(err, &ue), tt.usage, tt.want)
		}
	}
	// Through the binary: the status.
	buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "serve")
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(b), "--help") {
		t.Fatalf("hsmbrokerd serve without --config: %v\n%s", err, b)
	}
}
