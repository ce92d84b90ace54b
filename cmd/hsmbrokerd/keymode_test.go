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

// TestServeLooseKey: serve refuses to start with a TLS private key that
// group or others can read, naming the file and the fix.
func TestServeLooseKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("mode test CA")
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
	key := filepath.Join(dir, "node-key.pem")
	if err := node.Save(filepath.Join(dir, "node.pem"), key); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user.pin"), []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "loose-key.yaml")
	body := "node_id: n\nraft_addr: 127.0.0.1:7401\ndata_dir: data\n" +
		"tls: {ca: ca.pem, cert: node.pem, key: node-key.pem}\n" +
		"hsm: {module: /nonexistent/lib.so, token_label: t, pin_file: user.pin}\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, []string{"serve", "--config", conf}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Fatalf("serve with a 0644 TLS key: %v; want a refusal naming chmod 600 %s", err, key)
	}
}

// TestDevLooseCAKey: dev refuses to start on a data directory whose CA
// key group or others can read, naming the file and the fix.
func TestDevLooseCAKey(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("hsmbroker dev CA")
	if err != nil {
		t.Fatal(err)
	}
	caKey := filepath.Join(tlsDir, "ca-key.pem")
	if err := ca.Save(filepath.Join(tlsDir, "ca.pem"), caKey); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(caKey, 0o644); err != nil {
		t.Fatal(err)
	}
	a := freeAddrs(t, 4)
	env := environ("SOFTHSM2_CONF=" + filepath.Join(t.TempDir(), "elsewhere.conf"))
	p := startProc(t, env, "dev", "--data-dir", dir, "--module", module,
		"--grpc-addr", a[0], "--raft-addr", a[1], "--metrics-addr", a[2], "--kms-addr", a[3])
	select {
	case <-p.done:
	case <-time.After(startTimeout):
		p.stop(t)
		t.Fatal("dev started with a 0644 CA key")
	}
	if p.err == nil || !strings.Contains(p.out.String(), "chmod 600 "+caKey) {
		t.Fatalf("dev with a 0644 CA key exited with %v:\n%s", p.err, p.out.String())
	}
	if exists(filepath.Join(dir, "dev.env")) {
		t.Error("dev wrote dev.env")
	}
}
