package hsm_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
)

// TestRawAES runs every raw mode on a real SoftHSM token: round trips,
// the shapes PKCS#11 promises, tampering, and the separation between raw
// keys and the broker's own format.
func TestRawAES(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := context.Background()
	g, err := p.GenerateKey(ctx, keys.SpecSymmetricDefault)
	if err != nil {
		t.Fatal(err)
	}
	raw := hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: keys.SpecSymmetricDefault, Usage: keys.UsageRawEncryptDecrypt, Wrapped: g.Wrapped}
	normal := raw
	normal.ID, normal.Usage = keys.NewKeyID(), keys.UsageEncryptDecrypt
	iv := bytes.Repeat([]byte{7}, 16)
	pt32 := bytes.Repeat([]byte("table-key-"), 4)[:32]
	largest := bytes.Repeat([]byte("0123456789abcdef"), hsm.MaxRawInput/16)
	for _, tc := range []struct {
		name   string
		op     hsm.RawOp
		pt     []byte
		ctSize int
	}{
		{"CBC", hsm.RawOp{Mode: hsm.RawCBC, IV: iv}, pt32, 32},
		{"CBC_PAD", hsm.RawOp{Mode: hsm.RawCBCPad, IV: iv}, pt32, 48},
		{"CBC_PAD short", hsm.RawOp{Mode: hsm.RawCBCPad, IV: iv}, []byte("abc"), 16},
		{"CTR", hsm.RawOp{Mode: hsm.RawCTR, IV: iv}, []byte("seventeen bytes!!"), 17},
		{"GCM", hsm.RawOp{Mode: hsm.RawGCM, IV: iv[:12], AAD: []byte("aad")}, pt32, 48},
		// The largest plaintext: its ciphertext, a block longer, decrypts
		// in one call too.
		{"CBC_PAD largest", hsm.RawOp{Mode: hsm.RawCBCPad, IV: iv}, largest, hsm.MaxRawInput + 16},
		{"GCM largest", hsm.RawOp{Mode: hsm.RawGCM, IV: iv[:12]}, largest, hsm.MaxRawInput + 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, err := p.EncryptRaw(ctx, raw, tc.op, tc.pt)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct) != tc.ctSize || bytes.Contains(ct, tc.pt) {
				t.Fatalf("ciphertext of %d bytes, want %d, not holding the plaintext", len(ct), tc.ctSize)
			}
			again, err := p.EncryptRaw(ctx, raw, tc.op, tc.pt)
			if err != nil || !bytes.Equal(again, ct) {
				t.Fatalf("the same IV and data give another ciphertext: %v", err)
			}
			got, err := p.DecryptRaw(ctx, raw, tc.op, ct)
			if err != nil || !bytes.Equal(got, tc.pt) {
				t.Fatalf("decrypt: %v %q", err, got)
			}
			if tc.op.Mode == hsm.RawGCM {
				ct[0] ^= 1
				if _, err := p.DecryptRaw(ctx, raw, tc.op, ct); !errors.Is(err, hsm.ErrDecrypt) {
					t.Fatalf("tampered GCM: %v, want ErrDecrypt", err)
				}
			}
		})
	}
	op := hsm.RawOp{Mode: hsm.RawCBC, IV: iv}
	if _, err := p.EncryptRaw(ctx, normal, op, pt32); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("raw AES with an ENCRYPT_DECRYPT key: %v", err)
	}
	if _, err := p.EncryptGCM(ctx, raw, iv[:12], pt32, nil); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("the broker's GCM with a raw key: %v", err)
	}
	for _, bad := range []struct {
		op hsm.RawOp
		in []byte
	}{
		{hsm.RawOp{Mode: hsm.RawCBC, IV: iv[:8]}, pt32},
		{hsm.RawOp{Mode: hsm.RawCBC, IV: iv}, pt32[:31]},
		{hsm.RawOp{Mode: hsm.RawCTR, IV: iv, AAD: []byte("x")}, pt32},
		{hsm.RawOp{Mode: 9, IV: iv}, pt32},
		{hsm.RawOp{Mode: hsm.RawCBCPad, IV: iv}, make([]byte, hsm.MaxRawInput+1)},
		{hsm.RawOp{Mode: hsm.RawGCM, IV: iv[:12]}, make([]byte, hsm.MaxRawInput+1)},
	} {
		if _, err := p.EncryptRaw(ctx, raw, bad.op, bad.in); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("bad input %+v (%d bytes): %v", bad.op.Mode, len(bad.in), err)
		}
	}
	for _, op := range []hsm.RawOp{{Mode: hsm.RawCBCPad, IV: iv}, {Mode: hsm.RawGCM, IV: iv[:12]}} {
		if _, err := p.DecryptRaw(ctx, raw, op, make([]byte, hsm.MaxRawInput+32)); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("a ciphertext two blocks over the largest plaintext, mode %d: %v", op.Mode, err)
		}
	}
}
