package kmip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

func cryptParams(mode, padding uint32) ttlv.Item {
	return ttlv.Struct(tagCryptographicParams, ttlv.Enum(tagBlockCipherMode, mode), ttlv.Enum(tagPaddingMethod, padding), ttlv.Enum(tagCryptographicAlgorithm, 3))
}

func child(t *testing.T, it ttlv.Item, tag ttlv.Tag) []byte {
	t.Helper()
	c, ok := it.Child(tag)
	if !ok {
		t.Fatalf("no tag 0x%06x in %+v", uint32(tag), it)
	}
	return c.Bytes
}

// Encrypt and Decrypt run in the HSM with the object's key: what they
// produce is what AES with that key produces (checked with crypto/aes), in
// CBC with and without padding and in GCM.
func TestEncryptDecrypt(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	key := randBytes(t, 32)
	id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Cryptographic Usage Mask", ttlv.Int(0, 12))), symKey(key)))[0]
	// Pre-Active keys do not encrypt.
	if r := c.fail(v, opEncrypt, uid(id), ttlv.Bytes(tagData, []byte("x"))); r != reasonPermissionDenied {
		t.Fatalf("Encrypt with a Pre-Active key: %s", reasonName(r))
	}
	c.do(v, opActivate, uid(id))
	block, _ := aes.NewCipher(key)
	msg := []byte("sixteen byte msg and then some more")

	// CBC with PKCS#5 padding (the default) and a server-made IV.
	p := c.do(v, opEncrypt, uid(id), ttlv.Bytes(tagData, msg))
	ct, iv := child(t, p, tagData), child(t, p, tagIVCounterNonce)
	want := make([]byte, 48)
	padded := append(append([]byte(nil), msg...), bytes.Repeat([]byte{13}, 13)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(want, padded)
	if !bytes.Equal(ct, want) {
		t.Fatal("CBC-PAD ciphertext is not AES-CBC with the registered key")
	}
	pt := child(t, c.do(v, opDecrypt, uid(id), ttlv.Bytes(tagData, ct), ttlv.Bytes(tagIVCounterNonce, iv)), tagData)
	if !bytes.Equal(pt, msg) {
		t.Fatalf("CBC-PAD round trip: %q", pt)
	}

	// CBC without padding, client IV.
	iv = randBytes(t, 16)
	p = c.do(v, opEncrypt, uid(id), cryptParams(modeCBC, paddingNone), ttlv.Bytes(tagData, msg[:32]), ttlv.Bytes(tagIVCounterNonce, iv))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(want[:32], msg[:32])
	if !bytes.Equal(child(t, p, tagData), want[:32]) {
		t.Fatal("CBC ciphertext differs")
	}
	if r := c.fail(v, opEncrypt, uid(id), cryptParams(modeCBC, paddingNone), ttlv.Bytes(tagData, msg[:5]), ttlv.Bytes(tagIVCounterNonce, iv)); r != reasonInvalidField {
		t.Fatalf("CBC without padding on a partial block: %s", reasonName(r))
	}

	// GCM with additional data; a changed tag fails as a cryptographic failure.
	aad := []byte("header")
	p = c.do(v, opEncrypt, uid(id), cryptParams(modeGCM, paddingNone), ttlv.Bytes(tagData, msg), ttlv.Bytes(tagAEADData, aad))
	ct, iv, tag := child(t, p, tagData), child(t, p, tagIVCounterNonce), child(t, p, tagAEADTag)
	gcm, _ := cipher.NewGCM(block)
	if opened, err := gcm.Open(nil, iv, append(append([]byte(nil), ct...), tag...), aad); err != nil || !bytes.Equal(opened, msg) {
		t.Fatalf("GCM output does not open with crypto/cipher: %v", err)
	}
	pt = child(t, c.do(v, opDecrypt, uid(id), cryptParams(modeGCM, paddingNone), ttlv.Bytes(tagData, ct), ttlv.Bytes(tagIVCounterNonce, iv),
		ttlv.Bytes(tagAEADData, aad), ttlv.Bytes(tagAEADTag, tag)), tagData)
	if !bytes.Equal(pt, msg) {
		t.Fatal("GCM round trip")
	}
	tag[0] ^= 1
	if r := c.fail(v, opDecrypt, uid(id), cryptParams(modeGCM, paddingNone), ttlv.Bytes(tagData, ct), ttlv.Bytes(tagIVCounterNonce, iv),
		ttlv.Bytes(tagAEADData, aad), ttlv.Bytes(tagAEADTag, tag)); r != reasonCryptographicFailure {
		t.Fatalf("GCM with a bad tag: %s", reasonName(r))
	}

	// The usage mask is enforced: a decrypt-only key does not encrypt.
	dec := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Cryptographic Usage Mask", ttlv.Int(0, 8))), symKey(randBytes(t, 16))))[0]
	c.do(v, opActivate, uid(dec))
	if r := c.fail(v, opEncrypt, uid(dec), ttlv.Bytes(tagData, msg)); r != reasonInvalidField {
		t.Fatalf("Encrypt with a decrypt-only key: %s", reasonName(r))
	}
	// A revoked (Deactivated) key still decrypts, no longer encrypts.
	p = c.do(v, opEncrypt, uid(id), ttlv.Bytes(tagData, msg))
	ct, iv = child(t, p, tagData), child(t, p, tagIVCounterNonce)
	c.do(v, opRevoke, uid(id), ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec)))
	if r := c.fail(v, opEncrypt, uid(id), ttlv.Bytes(tagData, msg)); r != reasonPermissionDenied {
		t.Fatalf("Encrypt with a Deactivated key: %s", reasonName(r))
	}
	if pt := child(t, c.do(v, opDecrypt, uid(id), ttlv.Bytes(tagData, ct), ttlv.Bytes(tagIVCounterNonce, iv)), tagData); !bytes.Equal(pt, msg) {
		t.Fatal("Decrypt with a Deactivated key")
	}
}
