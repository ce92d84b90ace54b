package hsmtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DialAs connects to node i as principal with role (admin, user, auditor,
// or anything else for a certificate without a usable role).
func (c *Cluster) DialAs(i int, principal string, role authz.Role) *grpc.ClientConn {
	c.t.Helper()
	return DialTLS(c.t, c.Nodes[i].GRPCAddr, ClientTLS(c.t, c.CA, principal, role))
}

// DialTLS connects to addr with a client TLS configuration; the
// connection closes when the test ends.
func DialTLS(t testing.TB, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// ClientTLS is a client configuration trusting ca, with a fresh client
// certificate from ca for principal and role. A role pki does not know
// gives a certificate whose organizational unit is that string.
func ClientTLS(t testing.TB, ca *pki.CA, principal string, role authz.Role) *tls.Config {
	t.Helper()
	now := time.Now()
	return clientTLS(t, ca, ca, principal, role, now.Add(-time.Minute), now.Add(time.Hour))
}

// ExpiredClientTLS is ClientTLS with a certificate that expired an hour
// ago.
func ExpiredClientTLS(t testing.TB, ca *pki.CA, principal string, role authz.Role) *tls.Config {
	t.Helper()
	now := time.Now()
	return clientTLS(t, ca, ca, principal, role, now.Add(-48*time.Hour), now.Add(-time.Hour))
}

// ForeignClientTLS trusts ca but presents a certificate (of principal,
// role) from another CA, which the server must refuse.
func ForeignClientTLS(t testing.TB, ca *pki.CA, principal string, role authz.Role) *tls.Config {
	t.Helper()
	other, err := pki.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return clientTLS(t, ca, other, principal, role, now.Add(-time.Minute), now.Add(time.Hour))
}

// NoCertTLS trusts ca and presents no client certificate.
func NoCertTLS(ca *pki.CA) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool()}
}

func clientTLS(t testing.TB, trust, issuer *pki.CA, principal string, role authz.Role, notBefore, notAfter time.Time) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: principal, OrganizationalUnit: []string{string(role)}},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.Cert, key.Public(), issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: trust.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// AuditPath is the node's audit log when the cluster keeps them (Audit).
func (nd *Node) AuditPath() string { return filepath.Join(nd.DataDir, "audit.log") }

// openAuditLog opens the node's audit log, continuing it across restarts,
// or returns nil when the cluster keeps none.
func (nd *Node) openAuditLog() *audit.Log {
	if !nd.c.Audit {
		return nil
	}
	t := nd.c.t
	t.Helper()
	if err := os.MkdirAll(nd.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(nd.AuditPath(), audit.Options{CheckpointEvery: nd.c.AuditCheckpointLines})
	if err != nil {
		t.Fatalf("%s: audit log: %v", nd.ID, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}
