package pki

import (
	"crypto/tls"
	"fmt"

	"github.com/hsmbroker/hsmbroker/internal/config"
)

// ServerTLSConfig serves TLS 1.3 with the certificate in certFile/keyFile
// and requires every client to present a certificate that chains to the
// CA in caFile.
func ServerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := CertPoolFromFile(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLSConfig dials TLS 1.3 servers whose certificate chains to the CA
// in caFile and matches serverName ("" lets the dialer use the host it
// dials). certFile and keyFile are the client certificate; both empty
// dials without one.
func ClientTLSConfig(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	pool, err := CertPoolFromFile(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: serverName,
	}
	if certFile != "" || keyFile != "" {
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// PeerTLSConfig is for connections where both ends are cluster nodes, as
// between Raft peers: the node certificate is presented in either role and
// the other end is verified against the CA in caFile, as server (RootCAs)
// and as client (ClientCAs). It is the shape cluster.Config.TLS expects.
func PeerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg, err := ServerTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = cfg.ClientCAs
	return cfg, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, invalid("a certificate needs both a certificate file and a key file")
	}
	if err := config.CheckPrivateFile(keyFile); err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: private key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load %s and %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}
