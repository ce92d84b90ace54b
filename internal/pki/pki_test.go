package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
)

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestIssueAndVerifyChains(t *testing.T) {
	ca := newCA(t, "test CA")
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero {
		t.Fatalf("CA certificate: IsCA=%v MaxPathLenZero=%v", ca.Cert.IsCA, ca.Cert.MaxPathLenZero)
	}
	srv, err := ca.IssueServer("node-1", []string{"localhost", "node-1.example"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatalf("IssueServer: %v", err)
	}
	cli, err := ca.IssueClient("alice", authz.RoleUser, time.Hour)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		usage   x509.ExtKeyUsage
		host    string
		wantErr bool
	}{
		{"server as server", srv.Cert, x509.ExtKeyUsageServerAuth, "node-1.example", false},
		{"server by IP", srv.Cert, x509.ExtKeyUsageServerAuth, "127.0.0.1", false},
		{"server as raft client", srv.Cert, x509.ExtKeyUsageClientAuth, "", false},
		{"server wrong host", srv.Cert, x509.ExtKeyUsageServerAuth, "other.example", true},
		{"client as client", cli.Cert, x509.ExtKeyUsageClientAuth, "", false},
		{"client as server", cli.Cert, x509.ExtKeyUsageServerAuth, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cert.Verify(x509.VerifyOptions{
				Roots: ca.Pool(), DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage},
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify: err=%v, wantErr=%v", err, tt.wantErr)
			}
		})
	}
	if got := cli.Cert.Subject.CommonName; got != "alice" {
		t.Errorf("client CN = %q, want alice", got)
	}
	if got := authz.RoleOf(cli.Cert); got != authz.RoleUser {
		t.Errorf("authz.RoleOf = %q, want %q", got, authz.RoleUser)
	}
	if len(cli.Cert.URIs) != 0 {
		t.Errorf("client certificate has URI SANs %v; the principal must come from the CN", cli.Cert.URIs)
	}
	if err := ca.Verify(cli.Cert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("CA.Verify: %v", err)
	}
	if err := newCA(t, "other").Verify(cli.Cert, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("a foreign CA verified the client certificate")
	}
}

func TestIssueRejectsBadArguments(t *testing.T) {
	ca := newCA(t, "test CA")
	tests := []struct {
		name  string
		issue func() error
	}{
		{"empty principal", func() error { _, err := ca.IssueClient("", authz.RoleAdmin, time.Hour); return err }},
		{"unknown role", func() error { _, err := ca.IssueClient("bob", "root", time.Hour); return err }},
		{"zero ttl", func() error { _, err := ca.IssueClient("bob", authz.RoleAdmin, 0); return err }},
		{"long principal", func() error {
			_, err := ca.IssueClient(strings.Repeat("a", 65), authz.RoleAdmin, time.Hour)
			return err
		}},
		{"control character", func() error { _, err := ca.IssueClient("bob\n", authz.RoleAdmin, time.Hour); return err }},
		{"space in principal", func() error { _, err := ca.IssueClient("bob smith", authz.RoleAdmin, time.Hour); return err }},
		{"principal as an ARN", func() error {
			_, err := ca.IssueClient("arn:aws:iam::000000000000:user/bob", authz.RoleAdmin, time.Hour)
			return err
		}},
		{"server without names", func() error { _, err := ca.IssueServer("n", nil, nil, time.Hour); return err }},
		{"negative server ttl", func() error {
			_, err := ca.IssueServer("n", []string{"localhost"}, nil, -time.Hour)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.issue(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := NewCA(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewCA(\"\") err = %v, want ErrInvalid", err)
	}
}

func TestSaveLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "test CA")
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.Save(certFile, keyFile); err != nil {
		t.Fatalf("Save: %v", err)
	}
	for file, want := range map[string]os.FileMode{certFile: CertFileMode, keyFile: KeyFileMode} {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %04o, want %04o", filepath.Base(file), got, want)
		}
	}
	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA certificate differs")
	}
	// The loaded CA must be able to issue certificates the original trusts.
	leaf, err := loaded.IssueClient("carol", authz.RoleAuditor, time.Hour)
	if err != nil {
		t.Fatalf("IssueClient from loaded CA: %v", err)
	}
	if err := ca.Verify(leaf.Cert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	t.Run("key of another CA", func(t *testing.T) {
		other := newCA(t, "other")
		otherKey := filepath.Join(dir, "other-key.pem")
		if err := other.Save(filepath.Join(dir, "other.pem"), otherKey); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(certFile, otherKey); !errors.Is(err, ErrKeyMismatch) {
			t.Fatalf("err = %v, want ErrKeyMismatch", err)
		}
	})
	t.Run("leaf is not a CA", func(t *testing.T) {
		lc, lk := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf-key.pem")
		if err := leaf.Save(lc, lk); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(lc, lk); !errors.Is(err, ErrNotCA) {
			t.Fatalf("err = %v, want ErrNotCA", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadCA(filepath.Join(dir, "nope.pem"), keyFile)
		if err == nil || !strings.Contains(err.Error(), "nope.pem") {
			t.Fatalf("err = %v, want one naming the missing file", err)
		}
	})
}

func TestParseKeyPEMFormats(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := EncodeKeyPEM(ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"pkcs8", pkcs8, false},
		{"sec1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), false},
		{"pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), false},
		{"no key", []byte("not pem"), true},
		{"garbage key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyPEM(tt.data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

// pair is a certificate and key written to files, as the TLS helpers read
// them.
type pair struct{ cert, key string }

func save(t *testing.T, dir, name string, i *Issued) pair {
	t.Helper()
	p := pair{filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")}
	if err := i.Save(p.cert, p.key); err != nil {
		t.Fatal(err)
	}
	return p
}

func saveCA(t *testing.T, dir, name string, ca *CA) string {
	t.Helper()
	f := filepath.Join(dir, name+".pem")
	if err := ca.Save(f, filepath.Join(dir, name+"-key.pem")); err != nil {
		t.Fatal(err)
	}
	return f
}

// handshake runs one TLS connection over loopback and returns the server's
// and the client's error. The server writes a byte once its handshake
// succeeds and the client reads it, because under TLS 1.3 the client
// finishes its handshake before the server has checked the client
// certificate.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{1})
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	tc.Close()
	return <-done, clientErr
}

func TestTLSHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster CA")
	caFile := saveCA(t, dir, "ca", ca)
	foreign := newCA(t, "foreign CA")
	foreignFile := saveCA(t, dir, "foreign", foreign)

	// past issues certificates that expired an hour ago.
	past := &CA{Cert: ca.Cert, Key: ca.Key, now: func() time.Time { return time.Now().Add(-48 * time.Hour) }}

	mustIssue := func(i *Issued, err error) *Issued {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	node := save(t, dir, "node", mustIssue(ca.IssueServer("node", []string{"localhost"}, loopback, time.Hour)))
	expiredNode := save(t, dir, "expired-node", mustIssue(past.IssueServer("node", []string{"localhost"}, loopback, 24*time.Hour)))
	foreignNode := save(t, dir, "foreign-node", mustIssue(foreign.IssueServer("node", []string{"localhost"}, loopback, time.Hour)))
	admin := save(t, dir, "admin", mustIssue(ca.IssueClient("admin", authz.RoleAdmin, time.Hour)))
	expiredAdmin := save(t, dir, "expired-admin", mustIssue(past.IssueClient("admin", authz.RoleAdmin, 24*time.Hour)))
	foreignAdmin := save(t, dir, "foreign-admin", mustIssue(foreign.IssueClient("admin", authz.RoleAdmin, time.Hour)))

	tests := []struct {
		name       string
		server     pair
		client     *pair // nil: no client certificate
		clientCA   string
		serverName string
		wantErr    string // in the server's or the client's error; "" for success
	}{
		{"valid", node, &admin, caFile, "localhost", ""},
		{"valid by IP", node, &admin, caFile, "127.0.0.1", ""},
		{"node cert as client (raft)", node, &node, caFile, "localhost", ""},
		{"expired client cert", node, &expiredAdmin, caFile, "localhost", "expired"},
		{"client cert from foreign CA", node, &foreignAdmin, caFile, "localhost", "unknown authority"},
		{"no client cert", node, nil, caFile, "localhost", "certificate"},
		{"expired server cert", expiredNode, &admin, caFile, "localhost", "expired"},
		{"server cert from foreign CA", foreignNode, &admin, caFile, "localhost", "unknown authority"},
		{"client trusts only a foreign CA", node, &admin, foreignFile, "localhost", "unknown authority"},
		{"wrong server name", node, &admin, caFile, "node.example", "not node.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg, err := ServerTLSConfig(tt.server.cert, tt.server.key, caFile)
			if err != nil {
				t.Fatalf("ServerTLSConfig: %v", err)
			}
			var ccfg *tls.Config
			if tt.client != nil {
				ccfg, err = ClientTLSConfig(tt.client.cert, tt.client.key, tt.clientCA, tt.serverName)
			} else {
				ccfg, err = ClientTLSConfig("", "", tt.clientCA, tt.serverName)
			}
			if err != nil {
				t.Fatalf("ClientTLSConfig: %v", err)
			}
			if len(ccfg.Certificates) > 0 {
				// Present the certificate even when the server's list of
				// acceptable CAs does not name its issuer, as a hostile
				// client would: the server must reject it by itself.
				c := ccfg.Certificates[0]
				ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
			}
			serr, cerr := handshake(t, scfg, ccfg)
			if tt.wantErr == "" {
				if serr != nil || cerr != nil {
					t.Fatalf("handshake failed (server: %v; client: %v)", serr, cerr)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatalf("handshake succeeded, want a failure mentioning %q", tt.wantErr)
			}
			if msg := fmt.Sprint(serr, cerr); !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("handshake errors (server: %v; client: %v) do not mention %q", serr, cerr, tt.wantErr)
			}
		})
	}
}

func TestTLSConfigShapes(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster CA")
	caFile := saveCA(t, dir, "ca", ca)
	n, err := ca.IssueServer("node", []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node := save(t, dir, "node", n)

	s, err := ServerTLSConfig(node.cert, node.key, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if s.MinVersion != tls.VersionTLS13 || s.ClientAuth != tls.RequireAndVerifyClientCert || s.ClientCAs == nil {
		t.Errorf("server config: min=%x auth=%v clientCAs=%v", s.MinVersion, s.ClientAuth, s.ClientCAs != nil)
	}
	p, err := PeerTLSConfig(node.cert, node.key, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if p.RootCAs == nil || p.ClientCAs == nil || len(p.Certificates) != 1 {
		t.Errorf("peer config lacks RootCAs, ClientCAs or its certificate")
	}
	if _, err := ServerTLSConfig(node.cert, "", caFile); !errors.Is(err, ErrInvalid) {
		t.Errorf("ServerTLSConfig without key: err = %v, want ErrInvalid", err)
	}
	if _, err := ClientTLSConfig("", "", filepath.Join(dir, "missing.pem"), ""); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("ClientTLSConfig with missing CA: err = %v, want one naming the file", err)
	}
}
