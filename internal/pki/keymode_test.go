package pki

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/config"
)

// TestLooseKeyRefused: a CA key or TLS private key that group or others
// may read is refused when loaded, with the file and the fix named; at
// 0600 the same files load.
func TestLooseKeyRefused(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("mode test CA")
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.Save(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueServer("n1", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	if err := node.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	loads := map[string]struct {
		file string
		load func() error
	}{
		"CA":     {caKey, func() error { _, err := LoadCA(caCert, caKey); return err }},
		"server": {key, func() error { _, err := ServerTLSConfig(cert, key, caCert); return err }},
		"peer":   {key, func() error { _, err := PeerTLSConfig(cert, key, caCert); return err }},
		"client": {key, func() error { _, err := ClientTLSConfig(cert, key, caCert, ""); return err }},
	}
	for name, l := range loads {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
			if err := os.Chmod(l.file, mode); err != nil {
				t.Fatal(err)
			}
			err := l.load()
			if !errors.Is(err, config.ErrLooseFile) || !strings.Contains(err.Error(), "chmod 600 "+l.file) {
				t.Errorf("%s with its key at %04o: %v, want a refusal naming chmod 600 %s", name, mode, err, l.file)
			}
		}
		if err := os.Chmod(l.file, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l.load(); err != nil {
			t.Errorf("%s with its key at 0600: %v", name, err)
		}
	}
}
