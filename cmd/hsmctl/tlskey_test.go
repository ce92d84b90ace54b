package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestKeyFlagHasOneMeaning: --key names a KMS key; the TLS client key is
// --tls-key or HSMBROKER_KEY. The global --key of earlier releases still
// works, with a warning, on commands that take no KMS key.
func TestKeyFlagHasOneMeaning(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	ca, cert, tlsKey := c.TLSFiles("ops", "admin")
	conn := []string{"--addr", c.Nodes[0].GRPCAddr, "--ca", ca, "--cert", cert}
	const deprecated = "--key as the TLS client key is deprecated"
	ok := func(r result) result {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
		return r
	}
	whoami := func(r result) string {
		t.Helper()
		var who map[string]string
		if err := json.Unmarshal([]byte(ok(r).stdout), &who); err != nil {
			t.Fatalf("whoami -o json: %v: %q", err, r.stdout)
		}
		return who["principal"]
	}

	// --tls-key: no warning.
	r := runArgs(append([]string{"whoami", "-o", "json", "--tls-key", tlsKey}, conn...)...)
	if whoami(r) != "ops" || r.stderr != "" {
		t.Fatalf("whoami --tls-key: %q, stderr %q", r.stdout, r.stderr)
	}
	// HSMBROKER_KEY: no warning.
	t.Setenv("HSMBROKER_KEY", tlsKey)
	r = runArgs(append([]string{"whoami", "-o", "json"}, conn...)...)
	if whoami(r) != "ops" || r.stderr != "" {
		t.Fatalf("whoami with HSMBROKER_KEY: %q, stderr %q", r.stdout, r.stderr)
	}
	t.Setenv("HSMBROKER_KEY", "")

	// The old global --key on a command without a KMS key: used as the TLS
	// key, with the warning on stderr and stdout left to the command.
	r = runArgs(append([]string{"whoami", "-o", "json", "--key", tlsKey}, conn...)...)
	if whoami(r) != "ops" || !strings.Contains(r.stderr, deprecated) || !strings.Contains(r.stderr, "--tls-key") {
		t.Fatalf("whoami --key: %q, stderr %q", r.stdout, r.stderr)
	}
	r = runArgs(append([]string{"--key", tlsKey, "keys", "list", "-o", "json"}, conn...)...)
	if ok(r); !strings.Contains(r.stderr, deprecated) || !strings.HasPrefix(r.stdout, "{") {
		t.Fatalf("--key before the command: %q, stderr %q", r.stdout, r.stderr)
	}
	// Two different TLS keys are a usage error, not a guess.
	r = runArgs(append([]string{"whoami", "--key", tlsKey, "--tls-key", tlsKey + ".other"}, conn...)...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--tls-key only") {
		t.Fatalf("whoami --key A --tls-key B: exit %d, stderr %q", r.code, r.stderr)
	}

	// On a command that takes a KMS key, --key is that key, and nothing
	// else: without --tls-key (or HSMBROKER_KEY) there is no TLS key.
	ok(runArgs(append([]string{"keys", "create", "--alias", "alias/one", "--tls-key", tlsKey}, conn...)...))
	ct := filepath.Join(t.TempDir(), "ct")
	var stdout, stderr bytes.Buffer
	args := append([]string{"encrypt", "--key", "alias/one", "--out", ct, "--tls-key", tlsKey}, conn...)
	if code := runWith(context.Background(), args, strings.NewReader("secret"), &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("encrypt --key alias/one --tls-key: exit %d, stderr %q", code, stderr.String())
	}
	if r := ok(runArgs(append([]string{"decrypt", "--in", ct, "--key", "alias/one", "--tls-key", tlsKey}, conn...)...)); r.stdout != "secret" {
		t.Fatalf("decrypt --key alias/one: %q", r.stdout)
	}
	r = runArgs(append([]string{"encrypt", "--key", "alias/one", "--base64"}, conn...)...)
	if r.code != exitError || !strings.Contains(r.stderr, "HSMBROKER_KEY") || strings.Contains(r.stderr, deprecated) {
		t.Fatalf("encrypt --key without a TLS key: exit %d, stderr %q", r.code, r.stderr)
	}

	// The old global --key given a KMS key, on a command that takes its key
	// as an argument: a usage error that says so, not a TLS key file that
	// cannot be read, and no deprecation warning.
	var created map[string]any
	if err := json.Unmarshal([]byte(ok(runArgs(append([]string{"keys", "describe", "alias/one", "-o", "json", "--tls-key", tlsKey}, conn...)...)).stdout), &created); err != nil {
		t.Fatal(err)
	}
	id, _ := created["keyId"].(string)
	r = runArgs(append([]string{"grants", "list", "--key", id, id, "--tls-key", tlsKey}, conn...)...)
	if r.code != exitUsage || r.stdout != "" || strings.Contains(r.stderr, deprecated) ||
		!strings.Contains(r.stderr, "hsmctl grants list takes the key as an argument, not --key (usage: hsmctl grants list KEY [--grantee PRINCIPAL] [flags]); the TLS client key is --tls-key") {
		t.Fatalf("grants list --key KEY KEY: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Help: --key is a KMS key wherever it is shown, and the global flags
	// list --tls-key only.
	r = ok(runArgs("--help"))
	if strings.Contains(r.stdout, "--key string") || !strings.Contains(r.stdout, "--tls-key string") {
		t.Fatalf("hsmctl --help shows a global --key, or no --tls-key:\n%s", r.stdout)
	}
	r = ok(runArgs("encrypt", "--help"))
	if !strings.Contains(r.stdout, "--key string") || !strings.Contains(r.stdout, "alias/NAME") || strings.Contains(r.stdout, "TLS client key is then") {
		t.Fatalf("encrypt --help:\n%s", r.stdout)
	}
}
