package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/fsutil"
)

// File modes of what Save and the helpers write.
const (
	CertFileMode os.FileMode = 0o600
	KeyFileMode  os.FileMode = 0o600
)

// EncodeCertPEM returns cert as a PEM "CERTIFICATE" block.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKeyPEM returns key as a PKCS#8 PEM "PRIVATE KEY" block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM returns every certificate in PEM data, in order. Blocks of
// other types are skipped; no certificate at all is an error.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("pki: no PEM certificate found")
	}
	return certs, nil
}

// ParseKeyPEM parses the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"),
// so that keys made by openssl or other CAs load too.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("pki: no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("pki: %T is not a signing key", k)
		}
		return s, nil
	}
}

// ReadCertFile reads the first certificate of a PEM file: the leaf, when
// the file holds a chain.
func ReadCertFile(path string) (*x509.Certificate, error) {
	certs, err := ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ReadCertsFile reads every certificate of a PEM file.
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	certs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ReadKeyFile reads a private key from a PEM file, which group and others
// must not be able to access (config.CheckPrivateFile).
func ReadKeyFile(path string) (crypto.Signer, error) {
	if err := config.CheckPrivateFile(path); err != nil {
		return nil, fmt.Errorf("pki: private key: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read private key: %w", err)
	}
	k, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// CertPoolFromFile returns a pool of every certificate in a PEM bundle.
func CertPoolFromFile(path string) (*x509.CertPool, error) {
	certs, err := ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// WriteFileAtomic writes data to path with mode perm through a temporary
// file in the same directory and a rename, so readers see the old file or
// the new one, never a part. The mode is set before any byte is written.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	// The renamed entry survives a power loss once the directory is synced.
	if err := fsutil.SyncDir(dir); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

// saveCertAndKey writes the key first: a certificate on disk without its
// key would look usable and is not.
func saveCertAndKey(cert *x509.Certificate, key crypto.Signer, certFile, keyFile string) error {
	kp, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(keyFile, kp, KeyFileMode); err != nil {
		return err
	}
	return WriteFileAtomic(certFile, EncodeCertPEM(cert), CertFileMode)
}
