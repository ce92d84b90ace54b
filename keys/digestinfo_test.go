package keys

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// TestDigestInfo: DigestInfo is what crypto/rsa signs for PKCS#1 v1.5 (a
// raw signature over DigestInfo verifies as a signature of the digest),
// and SplitDigestInfo takes it apart again.
func TestDigestInfo(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		d := h.New()
		d.Write([]byte("digest info"))
		digest := d.Sum(nil)
		di := DigestInfo(h, digest)
		sig, err := rsa.SignPKCS1v15(nil, key, 0, di) // hash 0: sign the bytes as given
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(&key.PublicKey, h, digest, sig); err != nil {
			t.Errorf("%s: a raw signature of DigestInfo does not verify as PKCS#1 v1.5: %v", h, err)
		}
		gh, gd, ok := SplitDigestInfo(di)
		if !ok || gh != h || !bytes.Equal(gd, digest) {
			t.Errorf("%s: SplitDigestInfo = %s %x %v", h, gh, gd, ok)
		}
		if _, _, ok := SplitDigestInfo(di[:len(di)-1]); ok {
			t.Errorf("%s: a short DigestInfo was split", h)
		}
	}
	if DigestInfo(crypto.SHA1, make([]byte, 20)) != nil {
		t.Error("DigestInfo of SHA-1, which no signing algorithm uses")
	}
}
