package hsm_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestAuditMAC: the audit key is made in the token on first use, is a
// sensitive, never-extractable, sign-only HMAC key, survives a reopen of
// the partition (a token object), and differs between tokens; its MACs
// are HMAC-SHA-256 sized, deterministic, and check only for their message.
func TestAuditMAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := hsmtest.NewToken(t)
	p := hsmtest.Open(t, tok)
	msg := []byte("checkpoint n1 seg 42 head")
	m1, err := p.AuditMAC(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(m1) != 32 {
		t.Fatalf("MAC of %d bytes", len(m1))
	}
	attrs, err := p.AuditKeyAttributes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"CKA_TOKEN": true, "CKA_SENSITIVE": true, "CKA_EXTRACTABLE": false,
		"CKA_NEVER_EXTRACTABLE": true, "CKA_SIGN": true, "CKA_VERIFY": false, "CKA_ENCRYPT": false, "CKA_WRAP": false, "CKA_DERIVE": false} {
		if attrs[name] != want {
			t.Errorf("%s = %v, want %v", name, attrs[name], want)
		}
	}
	if ok, err := p.VerifyAuditMAC(ctx, msg, m1); err != nil || !ok {
		t.Fatalf("own MAC: %v %v", ok, err)
	}
	other := bytes.Clone(msg)
	other[0] ^= 1
	if ok, err := p.VerifyAuditMAC(ctx, other, m1); err != nil || ok {
		t.Fatalf("MAC of another message verified: %v %v", ok, err)
	}
	if _, err := p.AuditMAC(ctx, make([]byte, hsm.MaxAuditMACInput+1)); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("oversized input: %v", err)
	}
	// The same key after the partition is closed and opened again.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p2 := hsmtest.Open(t, tok)
	if m2, err := p2.AuditMAC(ctx, msg); err != nil || !bytes.Equal(m1, m2) {
		t.Fatalf("MAC after reopen: %x vs %x (%v)", m2, m1, err)
	}
	// Another token has another key.
	if m3, err := hsmtest.NewPartition(t).AuditMAC(ctx, msg); err != nil || bytes.Equal(m1, m3) {
		t.Fatalf("another token's MAC: %x (%v)", m3, err)
	}
}
