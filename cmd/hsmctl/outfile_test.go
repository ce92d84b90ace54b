package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestOutputFiles runs every command that writes --out (or another output
// file) against a real broker, and holds each to the same rules: the file
// is new, mode 0600 (0644 for public keys), an existing file is refused
// and left as it was unless --force, and a symlink is never followed: with
// --force it is replaced by the new file, its target untouched. Nothing
// is left behind.
func TestOutputFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	nd := c.AddNode()
	ca, cert, key := c.TLSFiles("olive", authz.RoleAdmin)
	conn := []string{"--addr", nd.GRPCAddr, "--ca", ca, "--cert", cert, "--tls-key", key}
	dir := t.TempDir()
	cli := func(args ...string) result {
		t.Helper()
		return runArgs(append(args, conn...)...)
	}
	mustRun := func(args ...string) {
		t.Helper()
		if r := cli(args...); r.code != 0 {
			t.Fatalf("hsmctl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}

	mustRun("keys", "create", "--alias", "alias/out")
	mustRun("keys", "create", "--alias", "alias/sig", "--spec", "ECC_NIST_P256", "--usage", "SIGN_VERIFY")
	mustRun("keys", "create", "--alias", "alias/mac", "--spec", "HMAC_256", "--usage", "GENERATE_VERIFY_MAC")
	const secret = "the password is swordfish"
	plain := write("plain.txt", secret, 0o600)
	blob := filepath.Join(dir, "blob.enc")
	mustRun("encrypt", "--key", "alias/out", "--in", plain, "--out", blob)

	tests := []struct {
		name string
		args []string // the command, without its output file
		out  string   // the flag that names the output file, "" for a trailing argument
		mode os.FileMode
		want string // the new file's content, if known
	}{
		{"decrypt", []string{"decrypt", "--in", blob}, "--out", 0o600, secret},
		{"decrypt json", []string{"decrypt", "--in", blob, "-o", "json"}, "--out", 0o600, secret},
		{"encrypt", []string{"encrypt", "--key", "alias/out", "--in", plain}, "--out", 0o600, ""},
		{"random", []string{"random", "--bytes", "32"}, "--out", 0o600, ""},
		{"sign", []string{"sign", "--key", "alias/sig", "--algorithm", "ECDSA_SHA_256", "--in", plain}, "--out", 0o600, ""},
		{"mac", []string{"mac", "--key", "alias/mac", "--algorithm", "HMAC_SHA_256", "--in", plain}, "--out", 0o600, ""},
		{"pubkey", []string{"pubkey", "alias/sig"}, "--out", 0o644, ""},
		{"audit fetch", []string{"audit", "fetch"}, "--out", 0o600, ""},
		{"join-token", []string{"cluster", "join-token", "--any-node"}, "--out", 0o600, ""},
		{"tde token", []string{"tde", "token", "issue", "--principal", "mariadb"}, "--out", 0o600, ""},
		{"cluster backup", []string{"cluster", "backup"}, "", 0o600, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "-")
			with := func(path string, extra ...string) []string {
				args := append([]string(nil), tt.args...)
				if tt.out == "" {
					args = append(args, path)
				} else {
					args = append(args, tt.out, path)
				}
				return append(args, extra...)
			}
			check := func(path string) {
				t.Helper()
				fi, err := os.Lstat(path)
				if err != nil {
					t.Fatal(err)
				}
				if !fi.Mode().IsRegular() || fi.Mode().Perm() != tt.mode {
					t.Errorf("%s: mode %v, want a regular file of mode %v", path, fi.Mode(), tt.mode)
				}
				if got, _ := os.ReadFile(path); tt.want != "" && string(got) != tt.want {
					t.Errorf("%s holds %q, want %q", path, got, tt.want)
				}
			}

			// A new file.
			fresh := filepath.Join(dir, name+".new")
			mustRun(with(fresh)...)
			check(fresh)

			// An existing file, mode 0644: refused and untouched; with --force,
			// replaced by a file of the right mode.
			old := write(name+".old", "old", 0o644)
			r := cli(with(old)...)
			if r.code != exitError || !strings.Contains(r.stderr, old+" exists; use --force to replace it") {
				t.Fatalf("over an existing file: exit %d, %q", r.code, r.stderr)
			}
			if got, _ := os.ReadFile(old); string(got) != "old" {
				t.Fatalf("the existing file was changed: %q", got)
			}
			if fi, _ := os.Stat(old); fi.Mode().Perm() != 0o644 {
				t.Fatalf("the existing file's mode was changed: %v", fi.Mode())
			}
			mustRun(with(old, "--force")...)
			check(old)

			// A symlink, to a file or to nothing: refused; with --force the
			// link is replaced and its target untouched.
			victim := write(name+".victim", "victim", 0o644)
			link := filepath.Join(dir, name+".link")
			if err := os.Symlink(victim, link); err != nil {
				t.Fatal(err)
			}
			dangling := filepath.Join(dir, name+".dangling")
			if err := os.Symlink(filepath.Join(dir, name+".nothing"), dangling); err != nil {
				t.Fatal(err)
			}
			for _, l := range []string{link, dangling} {
				if r := cli(with(l)...); r.code != exitError || !strings.Contains(r.stderr, "exists; use --force") {
					t.Fatalf("over a symlink %s: exit %d, %q", l, r.code, r.stderr)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, name+".nothing")); !os.IsNotExist(err) {
				t.Fatalf("the dangling symlink was followed: %v", err)
			}
			mustRun(with(link, "--force")...)
			check(link)
			if got, _ := os.ReadFile(victim); string(got) != "victim" {
				t.Fatalf("the symlink was followed: its target holds %q", got)
			}

			// A directory: refused, with --force too, before any work.
			sub := filepath.Join(dir, name+".dir")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			if r := cli(with(sub, "--force")...); r.code != exitError || !strings.Contains(r.stderr, sub+" is a directory") {
				t.Fatalf("over a directory: exit %d, %q", r.code, r.stderr)
			}
		})
	}

	for _, e := range entries(t, dir) {
		if strings.Contains(e, ".tmp") {
			t.Errorf("temporary file left behind: %s", e)
		}
	}
	// Nothing was written but what the commands named.
	if got, _ := os.ReadFile(plain); !bytes.Equal(got, []byte(secret)) {
		t.Errorf("--in changed: %q", got)
	}
}
