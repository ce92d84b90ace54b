package broker

import (
	"errors"
	"strings"
	"testing"
)

// TestTLSHint: a join that fails in the TLS handshake with the members
// (a node certificate from another CA gives anything from "unknown
// certificate authority" to a broken pipe) says what to check; other
// failures get no such hint.
func TestTLSHint(t *testing.T) {
	for msg, want := range map[string]bool{
		"seed 127.0.0.1:7400: connection error: desc = \"transport: authentication handshake failed: tls: unknown certificate authority\"": true,
		"seed 127.0.0.1:7400: write tcp 127.0.0.1:5->127.0.0.1:7400: write: broken pipe":                                                   true,
		"seed 127.0.0.1:7400: dial tcp 127.0.0.1:7400: connect: connection refused":                                                        false,
		"the join token is unknown, already used or expired":                                                                               false,
	} {
		if got := tlsHint(errors.New(msg)) != ""; got != want {
			t.Errorf("tlsHint(%q) given: %v, want %v", msg, got, want)
		}
	}
	if h := tlsHint(errors.New("tls: bad certificate")); !strings.Contains(h, "tls.ca") {
		t.Errorf("hint %q does not name tls.ca", h)
	}
	if tlsHint(nil) != "" {
		t.Error("a hint for no error")
	}
}
