package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"errors"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// MACWithValue computes in a real SoftHSM token exactly the HMAC that
// crypto/hmac computes with the same key, for each hash; keys shorter than
// the hash and unsupported hashes are refused as bad input.
func TestMACWithValue(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := context.Background()
	msg := []byte("message to authenticate")
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		key := bytes.Repeat([]byte{byte(h)}, h.Size()+3)
		got, err := p.MACWithValue(ctx, key, h, msg)
		if err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		m := hmac.New(h.New, key)
		m.Write(msg)
		if !bytes.Equal(got, m.Sum(nil)) {
			t.Fatalf("%v: the token's HMAC differs from crypto/hmac's", h)
		}
		if _, err := p.MACWithValue(ctx, key[:h.Size()-1], h, msg); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("%v with a short key: %v, want ErrInvalidInput", h, err)
		}
	}
	if _, err := p.MACWithValue(ctx, make([]byte, 32), crypto.SHA1, msg); !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("HMAC-SHA1: %v, want ErrUnsupported", err)
	}
	if _, err := p.MACWithValue(ctx, make([]byte, 32), crypto.SHA256, make([]byte, hsm.MaxGCMInput+1)); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("oversized message: %v", err)
	}
}
