package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/hsmbroker/hsmbroker/authz"
)

// Validity defaults. A CA outlives the certificates it issues; leaves are
// short enough that a leaked key stops working on its own.
const (
	DefaultCATTL     = 10 * 365 * 24 * time.Hour
	DefaultServerTTL = 365 * 24 * time.Hour
	DefaultClientTTL = 365 * 24 * time.Hour
)

// backdate absorbs clock skew between the issuer and the verifier.
const backdate = 5 * time.Minute

// maxCommonName is ub-common-name from RFC 5280; maxDNSName is the longest
// DNS name.
const (
	maxCommonName = 64
	maxDNSName    = 253
)

var (
	// ErrInvalid reports a bad argument: an empty or overlong name, an
	// unknown role, a non-positive validity.
	ErrInvalid = errors.New("pki: invalid argument")
	// ErrKeyMismatch reports a certificate and key that do not belong
	// together.
	ErrKeyMismatch = errors.New("pki: certificate does not match key")
	// ErrNotCA reports a certificate that cannot sign certificates.
	ErrNotCA = errors.New("pki: certificate is not a CA")
)

// CA is a certificate authority: its certificate and private key. It is
// safe for concurrent use once made.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer

	// now is the issuing clock; tests move it to mint expired certificates.
	now func() time.Time
}

// Issued is a freshly issued certificate with its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a self-signed CA with a new P-256 key, valid for
// DefaultCATTL.
func NewCA(commonName string) (*CA, error) {
	if err := checkName("CA common name", commonName); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	now := time.Now()
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(DefaultCATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: a stolen intermediate could not be minted from it.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its private key from PEM files and
// checks that they belong together.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := ReadCertFile(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotCA, certFile)
	}
	key, err := ReadKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	if err := matchKey(cert, key); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Save writes the CA certificate and key (both 0600).
func (ca *CA) Save(certFile, keyFile string) error {
	return saveCertAndKey(ca.Cert, ca.Key, certFile, keyFile)
}

// CertPEM returns the CA certificate as PEM, for trust bundles.
func (ca *CA) CertPEM() []byte { return EncodeCertPEM(ca.Cert) }

// Pool returns a pool holding only this CA, for ClientCAs and RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServer issues a node certificate valid for ttl, for the given DNS
// names and IP addresses. It carries both the server and the client
// authentication usages, because the same certificate serves gRPC and
// authenticates the node to its Raft peers in both directions.
func (ca *CA) IssueServer(commonName string, dnsNames []string, ips []net.IP, ttl time.Duration) (*Issued, error) {
	if err := checkName("server common name", commonName); err != nil {
		return nil, err
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, invalid("a server certificate needs at least one DNS name or IP address")
	}
	for _, n := range dnsNames {
		if err := checkLen("DNS name", n, maxDNSName); err != nil {
			return nil, err
		}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		DNSNames:    append([]string(nil), dnsNames...),
		IPAddresses: append([]net.IP(nil), ips...),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, ttl)
}

// IssueClient issues a client certificate valid for ttl. The principal is
// the subject common name and the role the organizational unit; see
// authz.RoleOf.
func (ca *CA) IssueClient(principal string, role authz.Role, ttl time.Duration) (*Issued, error) {
	if err := checkName("principal", principal); err != nil {
		return nil, err
	}
	if problem := authz.NewPrincipalProblem(principal); problem != "" {
		return nil, invalid("principal %s (got %q)", problem, principal)
	}
	if !role.Issuable() {
		return nil, invalid("role %q (want %s, %s or %s)", role, authz.RoleAdmin, authz.RoleUser, authz.RoleAuditor)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: principal, OrganizationalUnit: []string{string(role)}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, ttl)
}

// Verify checks that cert chains to this CA and is valid now for usage.
func (ca *CA) Verify(cert *x509.Certificate, usage x509.ExtKeyUsage) error {
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: ca.clock(),
		KeyUsages:   []x509.ExtKeyUsage{usage},
	})
	return err
}

// Save writes the certificate and key (both 0600).
func (i *Issued) Save(certFile, keyFile string) error {
	return saveCertAndKey(i.Cert, i.Key, certFile, keyFile)
}

func (ca *CA) clock() time.Time {
	if ca.now != nil {
		return ca.now()
	}
	return time.Now()
}

func (ca *CA) issue(tmpl *x509.Certificate, ttl time.Duration) (*Issued, error) {
	if ttl <= 0 {
		return nil, invalid("validity must be positive, got %v", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.clock()
	if end := ca.Cert.NotAfter; now.Add(ttl).After(end) {
		return nil, invalid("a validity of %v would end after the CA's own, on %s: at most %v", ttl, end.UTC().Format(time.DateOnly),
			end.Sub(now).Truncate(time.Hour))
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(ttl)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse issued certificate: %w", err)
	}
	return &Issued{Cert: cert, Key: key}, nil
}

// randomSerial is a positive 128-bit serial number (RFC 5280 allows up to
// 20 octets).
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// invalidArg is an ErrInvalid whose message is only what is wrong, for
// the command lines that show it.
type invalidArg struct{ msg string }

func (e *invalidArg) Error() string        { return e.msg }
func (e *invalidArg) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error {
	return &invalidArg{fmt.Sprintf(format, args...)}
}

func checkName(what, s string) error { return checkLen(what, s, maxCommonName) }

func checkLen(what, s string, max int) error {
	if strings.TrimSpace(s) == "" {
		return invalid("%s is empty", what)
	}
	if len(s) > max {
		return invalid("%s is longer than %d bytes", what, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid("%s contains a control character", what)
		}
	}
	return nil
}

// matchKey checks that key is the private half of cert's public key.
func matchKey(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}
