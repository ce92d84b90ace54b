package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Environment variables read by ConfigFromEnv. `hsmbrokerd dev` writes them
// to <data-dir>/dev.env.
const (
	EnvAddr = "HSMBROKER_ADDR" // host:port, or a comma-separated list of them
	EnvCA   = "HSMBROKER_CA"   // PEM file of the CA that signed the brokers' certificates
	EnvCert = "HSMBROKER_CERT" // PEM file of the client certificate
	EnvKey  = "HSMBROKER_KEY"  // PEM file of the client certificate's private key
)

// Defaults for the zero values of Config fields.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultRetries        = 3
	DefaultMaxRecvMsgSize = 64 << 20
)

// Config says where the brokers are and how to authenticate to them. The
// zero value of every field but Endpoints and the TLS material means its
// default.
type Config struct {
	// Endpoints are the brokers' gRPC addresses, host:port. Any member of a
	// cluster serves every call, so list several: the client moves to the
	// next one when one fails. The order is the order of preference at
	// start; afterwards the last endpoint that answered is preferred.
	Endpoints []string

	// CAFile, CertFile and KeyFile are PEM files: the CA that signed the
	// brokers' certificates, and the client certificate and its private key
	// that name the caller to the brokers (mutual TLS). The private key file
	// should be readable by its owner only.
	CAFile, CertFile, KeyFile string

	// TLS, if set, is used instead of the three files. It must carry a client
	// certificate; MinVersion is raised to TLS 1.3 if lower.
	TLS *tls.Config

	// Timeout bounds each attempt of a call; a retry gets a fresh Timeout.
	// A deadline on the caller's context bounds the call as a whole. Zero
	// means DefaultTimeout.
	Timeout time.Duration

	// Retries is how many times a failed call may be retried, each time on
	// the next endpoint, after the first attempt (see the package doc for
	// which failures are retried). Zero means DefaultRetries; a negative
	// value disables retries.
	Retries int

	// MaxRecvMsgSize is the largest response message accepted, in bytes.
	// Zero means DefaultMaxRecvMsgSize. No response of the API comes near
	// it: ClusterService.Backup streams its snapshot in messages of at most
	// 1 MiB.
	MaxRecvMsgSize int
}

// ConfigFromEnv returns a Config filled from HSMBROKER_ADDR (one address or
// a comma-separated list), HSMBROKER_CA, HSMBROKER_CERT and HSMBROKER_KEY.
// Unset variables leave their fields empty; Dial reports what is missing.
func ConfigFromEnv() Config {
	return Config{
		Endpoints: SplitEndpoints(os.Getenv(EnvAddr)),
		CAFile:    os.Getenv(EnvCA),
		CertFile:  os.Getenv(EnvCert),
		KeyFile:   os.Getenv(EnvKey),
	}
}

// SplitEndpoints splits a comma-separated list of addresses, dropping
// blanks and surrounding spaces.
func SplitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// withDefaults returns c with its zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.MaxRecvMsgSize == 0 {
		c.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	return c
}

// tlsConfig builds the mutual TLS 1.3 configuration from c.TLS or the files.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLS != nil {
		t := c.TLS.Clone()
		if t.MinVersion < tls.VersionTLS13 {
			t.MinVersion = tls.VersionTLS13
		}
		return t, nil
	}
	var missing []string
	for _, f := range []struct{ name, val string }{
		{"CA file (" + EnvCA + ")", c.CAFile},
		{"client certificate (" + EnvCert + ")", c.CertFile},
		{"client key (" + EnvKey + ")", c.KeyFile},
	} {
		if f.val == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("client: no %s given", strings.Join(missing, ", "))
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("client: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", c.CAFile)
	}
	// LoadX509KeyPair's errors name the files and the problem, never the key.
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client: load client certificate %s and key %s: %w", c.CertFile, c.KeyFile, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
	}, nil
}

var errNoEndpoints = errors.New("client: no endpoints given (set " + EnvAddr + ")")
