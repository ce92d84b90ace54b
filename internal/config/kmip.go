package config

import (
	"net"
	"strings"
)

// DefaultKMIPWrappingKey is the alias of the KMS key that seals KMIP
// objects' material.
const DefaultKMIPWrappingKey = "alias/kmip"

// KMIP configures the KMIP server (TTLV over mutual TLS; docs/KMIP.md).
// Clients authenticate with client certificates from the cluster CA
// (tls.ca), mapped to principals and roles exactly as on gRPC.
type KMIP struct {
	// Addr is the listen address (the KMIP port is 5696). Empty: not
	// served.
	Addr string `yaml:"addr"`
	// Cert and Key are the server certificate (PEM). Default: the node
	// certificate (tls.cert, tls.key). Set both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// WrappingKey is the alias of the symmetric KMS key whose ciphertexts
	// hold every KMIP object's material. Default DefaultKMIPWrappingKey;
	// created, with a policy that lets users use KMIP objects, when it does
	// not exist.
	WrappingKey string `yaml:"wrapping_key"`
}

// validateKMIP checks the kmip section.
func (c Config) validateKMIP(bad func(field, format string, args ...any)) {
	k := c.KMIP
	if k.Addr == "" {
		if k.Cert != "" || k.Key != "" || k.WrappingKey != "" {
			bad("kmip.addr", "required when other kmip fields are set")
		}
		return
	}
	if _, port, err := net.SplitHostPort(k.Addr); err != nil || port == "" || port == "0" {
		bad("kmip.addr", "%q is not host:port with a fixed port", k.Addr)
	}
	if (k.Cert == "") != (k.Key == "") {
		bad("kmip.cert", "set both kmip.cert and kmip.key, or neither to use the node certificate")
	}
	if k.WrappingKey != "" && !strings.HasPrefix(k.WrappingKey, "alias/") {
		bad("kmip.wrapping_key", "must be an alias (alias/NAME)")
	}
}
