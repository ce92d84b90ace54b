package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRaftRefusesClientCertificates: a certificate the cluster CA issued
// to a user (client authentication only) does not get a raft connection,
// so holding one is not enough to rewrite the replicated state.
func TestRaftRefusesClientCertificates(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	s, err := newTLSStreamLayer("127.0.0.1:0", nil, ca.nodeTLS(t, "n1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() {
		for {
			conn, err := s.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if tc, ok := conn.(*tls.Conn); ok && tc.Handshake() == nil {
					_, _ = conn.Write([]byte{1})
				}
			}()
		}
	}()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"admin"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	user := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13, NextProtos: []string{RaftALPN},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	conn, err := tls.Dial("tcp", s.Addr().String(), user)
	if err != nil {
		return // refused during the handshake
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the raft listener served a client certificate")
	}
	// A member still gets through.
	member, err := s.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	if _, err := member.Read(make([]byte, 1)); err != nil {
		t.Fatalf("member: %v", err)
	}
}
