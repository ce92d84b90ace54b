package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/awskms"
)

func TestAccessKeyCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kms-credentials.json")
	run := func(args ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"access-key"}, args...), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("access-key %v: %v\n%s", args, err, out)
		}
		return out
	}

	aliceEnv := filepath.Join(dir, "alice.env")
	out := must("create", "--file", file, "--principal", "alice", "--out", aliceEnv)
	must("create", "--file", file, "--principal", "bob", "--role", "admin")
	// An XKS proxy credential goes in a file of its own: create refuses
	// to mix the kinds, either way.
	if out, err := run("create", "--file", file, "--principal", "aws-kms", "--xks"); err == nil || !strings.Contains(err.Error(), "kms.xks.credentials_file") {
		t.Errorf("an XKS credential into a file of endpoint keys: %v\n%s", err, out)
	}
	xksFile, xksEnv := filepath.Join(dir, "xks-credentials.json"), filepath.Join(dir, "xks.env")
	xksOut := must("create", "--file", xksFile, "--principal", "aws-kms", "--xks", "--out", xksEnv)
	if out, err := run("create", "--file", xksFile, "--principal", "carol"); err == nil || !strings.Contains(err.Error(), "kms.credentials_file") {
		t.Errorf("an endpoint key into a file of XKS credentials: %v\n%s", err, out)
	}
	xksKeys, err := readAccessKeys(xksFile)
	if err != nil || len(xksKeys) != 1 || !xksKeys[0].XKS || xksKeys[0].Role != "" || !strings.Contains(xksOut, "XKS proxy credential, no role") {
		t.Fatalf("XKS file %v, %v; create printed %q", xksKeys, err, xksOut)
	}
	if len(xksKeys[0].ID) != 28 || len(xksKeys[0].Secret) != 44 {
		t.Errorf("XKS credential %s has a %d-character secret; want a 28-character id and a 44-character secret", xksKeys[0].ID, len(xksKeys[0].Secret))
	}
	if env, err := os.ReadFile(xksEnv); err != nil || !strings.Contains(string(env), "XKS_PROXY_ACCESS_KEY_ID="+xksKeys[0].ID) || strings.Contains(string(env), "AWS_") {
		t.Errorf("--out of an XKS credential: %q, %v", env, err)
	}
	keys, err := readAccessKeys(file)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	alice := keys[0]
	if alice.Role != "user" || keys[1].Role != "admin" || keys[0].XKS || keys[1].XKS {
		t.Errorf("keys %+v; want roles user (the default) and admin, no XKS", keys)
	}
	if alice.Principal != "alice" || !strings.Contains(out, alice.ID) || strings.Contains(out, alice.Secret) || !strings.Contains(out, "role user") {
		t.Errorf("create printed %q for %v (the secret must not be printed)", out, alice)
	}
	env, err := os.ReadFile(aliceEnv)
	if err != nil || !strings.Contains(string(env), "AWS_ACCESS_KEY_ID="+alice.ID) || !strings.Contains(string(env), alice.Secret) {
		t.Errorf("--out file: %q, %v", env, err)
	}
	for _, f := range []string{file, aliceEnv} {
		if m := fileMode(t, f); m != 0o600 {
			t.Errorf("%s: mode %04o", f, m)
		}
	}
	if _, err := awskms.LoadCredentialsFile(file); err != nil {
		t.Errorf("the endpoint cannot load the file: %v", err)
	}

	list := must("list", "--file", file)
	for _, k := range keys {
		if !strings.Contains(list, k.ID) || !strings.Contains(list, k.Principal) || strings.Contains(list, k.Secret) {
			t.Errorf("list: %q", list)
		}
	}

	must("delete", "--file", file, keys[1].ID)
	if after, _ := readAccessKeys(file); len(after) != 1 || after[0].ID != alice.ID {
		t.Errorf("after delete: %v", after)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--file", file, "--principal", "carol", "--out", aliceEnv}, "--out"},
		{[]string{"create", "--file", file}, "principal"},
		{[]string{"create", "--file", file, "--principal", "carol", "--role", "root"}, "--role"},
		{[]string{"create", "--file", file, "--principal", "carol smith"}, "--principal \"carol smith\": must not contain spaces"},
		{[]string{"delete", "--file", file, "AKIANOSUCHKEY"}, "no access key AKIANOSUCHKEY"},
		{[]string{"list"}, "file"},
		{[]string{"list", "--file", filepath.Join(dir, "none.json")}, "none.json"},
	} {
		if out, err := run(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("access-key %v: %v (%s); want an error mentioning %q", tt.args, err, out, tt.want)
		}
	}
	if after, _ := readAccessKeys(file); len(after) != 1 {
		t.Errorf("a failed create changed the file: %v", after)
	}
}

// TestEnsureAccessKey: dev and init-node make their admin key once, and
// give a key made before keys carried roles the role it needs.
func TestEnsureAccessKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kms-credentials.json")
	old, err := awskms.GenerateAccessKey("admin")
	if err != nil {
		t.Fatal(err)
	}
	other, err := awskms.GenerateAccessKey("bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := awskms.WriteCredentialsFile(file, []awskms.AccessKey{other, old}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	k, err := ensureAccessKey(log, file, "admin", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != old.ID || k.Secret != old.Secret || k.Role != "admin" {
		t.Errorf("ensureAccessKey = %v (role %q); want the existing key %v with role admin", k, k.Role, old)
	}
	keys, err := readAccessKeys(file)
	if err != nil || len(keys) != 2 || keys[1].Role != "admin" || keys[0].Role != "" {
		t.Errorf("file after: %v, %v", keys, err)
	}
	again, err := ensureAccessKey(log, file, "admin", "admin")
	if err != nil || again != k {
		t.Errorf("second call: %v, %v", again, err)
	}
	fresh, err := ensureAccessKey(log, file, "carol", "auditor")
	if err != nil || fresh.Principal != "carol" || fresh.Role != "auditor" || fresh.ID == "" {
		t.Errorf("new key: %v (role %q), %v", fresh, fresh.Role, err)
	}
}
