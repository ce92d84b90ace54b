package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// TestRunErrors covers the command line and the start-up checks that fail
// before any HSM or network is touched.
func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const hsmPart = "hsm: {module: /nonexistent/lib.so, token_label: t, pin_file: user.pin}\n"
	missingTLS := write("missing-tls.yaml", "node_id: n\nraft_addr: 127.0.0.1:7401\n"+
		"tls: {ca: nope/ca.pem, cert: nope/node.pem, key: nope/node-key.pem}\n"+hsmPart)

	// A complete TLS identity, to get as far as the PIN.
	ca, err := pki.NewCA("run test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueServer("n", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Save(filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")); err != nil {
		t.Fatal(err)
	}
	tlsOK := "tls: {ca: ca.pem, cert: node.pem, key: node-key.pem}\n"
	missingPIN := write("missing-pin.yaml", "node_id: n\nraft_addr: 127.0.0.1:7401\ndata_dir: data\n"+tlsOK+hsmPart)
	write("loose.pin", "1234\n")
	if err := os.Chmod(filepath.Join(dir, "loose.pin"), 0o644); err != nil {
		t.Fatal(err)
	}
	loosePIN := write("loose-pin.yaml", "node_id: n\nraft_addr: 127.0.0.1:7401\ndata_dir: data\n"+tlsOK+
		"hsm: {module: /nonexistent/lib.so, token_label: t, pin_file: loose.pin}\n")
	if err := os.Mkdir(filepath.Join(dir, "pin.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dirPIN := write("dir-pin.yaml", "node_id: n\nraft_addr: 127.0.0.1:7401\ndata_dir: data\n"+tlsOK+
		"hsm: {module: /nonexistent/lib.so, token_label: t, pin_file: pin.d}\n")

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no command", []string{"nonsense"}, []string{"unknown command"}},
		{"dev without data dir", []string{"dev"}, []string{`"data-dir" not set`}},
		{"dev with argument", []string{"dev", "--data-dir", dir, "extra"}, []string{"unknown command"}},
		{"unknown flag", []string{"dev", "--data-dri", dir}, []string{"unknown flag", "--help"}},
		{"bad log level", []string{"--log-level", "loud", "dev", "--data-dir", dir}, []string{"--log-level"}},
		{"bad log format", []string{"--log-format", "xml", "dev", "--data-dir", dir}, []string{"--log-format"}},
		{"serve without config", []string{"serve"}, []string{`"config" not set`}},
		{"serve with missing config", []string{"serve", "--config", filepath.Join(dir, "none.yaml")}, []string{"none.yaml"}},
		{"serve with invalid config", []string{"serve", "--config", write("invalid.yaml", "node_id: n\n")}, []string{"hsm.module: required", "tls.ca: required"}},
		{"serve with missing TLS files", []string{"serve", "--config", missingTLS}, []string{"tls:", filepath.Join(dir, "nope")}},
		{"serve with missing PIN file", []string{"serve", "--config", missingPIN}, []string{"hsm: pin_file ", "user.pin: no such file or directory"}},
		{"serve with loose PIN file", []string{"serve", "--config", loosePIN}, []string{"chmod 600"}},
		{"serve with a directory as PIN file", []string{"serve", "--config", dirPIN}, []string{"hsm: pin_file ", "pin.d is a directory, not a file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("run %v succeeded; want an error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "1234") {
				t.Errorf("error %q shows the PIN", err)
			}
			if strings.Contains(err.Error(), "hsm: hsm:") || strings.Contains(err.Error(), "login failed") {
				t.Errorf("error %q repeats its prefix or reports a login that was not tried", err)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"version"}, []string{"hsmbrokerd ", "go1"}},
		{[]string{"--help"}, []string{"dev", "serve", "version", "Examples:"}},
		{[]string{"dev", "--help"}, []string{"--data-dir", "--grpc-addr", "--raft-addr", "--metrics-addr", "--kms-addr", "dev.env", "Examples:"}},
		{[]string{"serve", "--help"}, []string{"--config", "deploy/hsmbrokerd.example.yaml", "Examples:"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), tt.args, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/tmp/data/tls/ca.pem", "/tmp/data/tls/ca.pem"},
		{"127.0.0.1:7400", "127.0.0.1:7400"},
		{"/tmp/my data/ca.pem", "'/tmp/my data/ca.pem'"},
		{"/tmp/it's/ca.pem", `'/tmp/it'\''s/ca.pem'`},
		{"$HOME", "'$HOME'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestDevRefusesInconsistentState: dev mode never re-initializes a token,
// PIN or CA it finds, and says how to start over instead. These checks run
// before the PKCS#11 library is loaded.
func TestDevRefusesInconsistentState(t *testing.T) {
	t.Setenv("SOFTHSM2_CONF", "") // dev mode sets it; restored afterwards
	mkdirs := func(t *testing.T, dir string, sub ...string) {
		t.Helper()
		for _, s := range sub {
			if err := os.MkdirAll(filepath.Join(dir, s), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeFile := func(t *testing.T, path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"token without PIN", func(t *testing.T, dir string) {
			mkdirs(t, dir, "softhsm/tokens/some-token")
		}, "user PIN file is missing"},
		{"raft state without token", func(t *testing.T, dir string) {
			mkdirs(t, dir, "softhsm/tokens", "raft")
			writeFile(t, filepath.Join(dir, "raft", "raft.db"), "")
		}, "token is gone"},
		{"CA certificate without key", func(t *testing.T, dir string) {
			mkdirs(t, dir, "softhsm/tokens/some-token", "tls")
			writeFile(t, filepath.Join(dir, "softhsm", "user.pin"), "1234\n")
			writeFile(t, filepath.Join(dir, "tls", "ca.pem"), "")
		}, "dev CA incomplete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			var stderr bytes.Buffer
			// Any existing file passes for the module: it is never loaded.
			err := run(context.Background(), []string{"dev", "--data-dir", dir, "--module", os.Args[0]}, &stderr, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "remove "+dir) {
				t.Errorf("err = %v does not say how to start over", err)
			}
		})
	}
}
