package kmip

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

func textChild(t *testing.T, it ttlv.Item, tag ttlv.Tag) string {
	t.Helper()
	return string(child(t, it, tag))
}

// Create Key Pair in the 2.0 form: the halves carry Links to each other
// (Get Attributes names them), the public key Get gives is the key the
// HSM signs with (checked with crypto/rsa and crypto/ecdsa), the private
// key is never returned, Destroy of a Deactivated private key removes it,
// and what is not served gets its KMIP reason.
func TestCreateKeyPairLinksAndSign(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{2, 0}
	msg := []byte("signed in the HSM")
	digest := sha256.Sum256(msg)
	for _, tc := range []struct {
		alg  uint32
		bits int32
	}{{4, 2048}, {6, 256}} {
		p := c.do(v, opCreateKeyPair, ttlv.Struct(tagCommonAttributes, ttlv.Enum(tagCryptographicAlgorithm, tc.alg), ttlv.Int(tagCryptographicLength, tc.bits)),
			ttlv.Struct(tagPrivateKeyAttributes, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "pair-priv"), ttlv.Enum(tagNameType, nameTypeText))))
		priv, pub := textChild(t, p, tagPrivateKeyUID), textChild(t, p, tagPublicKeyUID)
		for _, l := range []struct {
			id, other string
			typ       uint32
		}{{priv, pub, linkPublicKey}, {pub, priv, linkPrivateKey}} {
			ga := c.do(v, opGetAttributes, uid(l.id), ttlv.Enum(tagAttributeReference, uint32(tagLink)))
			as, _ := ga.Child(tagAttributes)
			link, ok := as.Child(tagLink)
			lt, _ := link.Child(tagLinkType)
			if !ok || uint32(lt.Int) != l.typ || textChild(t, link, tagLinkedObjectID) != l.other {
				t.Fatalf("Link of %s: %+v", l.id, as)
			}
		}
		if r := c.fail(v, opGet, uid(priv)); r != reasonPermissionDenied {
			t.Fatalf("Get of a private key: %s", reasonName(r))
		}
		g := c.do(v, opGet, uid(pub))
		pk, _ := g.Child(tagPublicKey)
		kb, _ := pk.Child(tagKeyBlock)
		kv, _ := kb.Child(tagKeyValue)
		key, err := x509.ParsePKIXPublicKey(child(t, kv, tagKeyMaterial))
		if err != nil {
			t.Fatal(err)
		}
		c.do(v, opActivate, uid(priv))
		sig := child(t, c.do(v, opSign, uid(priv), ttlv.Bytes(tagData, msg)), tagSignatureData)
		switch k := key.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() != 2048 || rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) != nil {
				t.Fatal("the default RSA signature is not PKCS#1 v1.5 SHA-256 by the public key Get returned")
			}
		case *ecdsa.PublicKey:
			if k.Curve.Params().BitSize != 256 || !ecdsa.VerifyASN1(k, digest[:], sig) {
				t.Fatal("the default EC signature is not ECDSA SHA-256 by the public key Get returned")
			}
		default:
			t.Fatalf("public key %T", key)
		}
		// Signature Verify with a Pre-Active public key is refused; Active, it answers.
		if r := c.fail(v, opSignatureVerify, uid(pub), ttlv.Bytes(tagData, msg), ttlv.Bytes(tagSignatureData, sig)); r != reasonWrongLifecycleState {
			t.Fatalf("verify with a Pre-Active key: %s", reasonName(r))
		}
		c.do(v, opActivate, uid(pub))
		vi, _ := c.do(v, opSignatureVerify, uid(pub), ttlv.Bytes(tagData, msg), ttlv.Bytes(tagSignatureData, sig)).Child(tagValidityIndicator)
		if vi.Int != 1 {
			t.Fatalf("Validity Indicator %d", vi.Int)
		}
		c.do(v, opRevoke, uid(priv), ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec)))
		if r := c.fail(v, opSign, uid(priv), ttlv.Bytes(tagData, msg)); r != reasonWrongLifecycleState {
			t.Fatalf("Sign with a revoked key: %s", reasonName(r))
		}
		c.do(v, opDestroy, uid(priv))
		if r := c.fail(v, opSign, uid(priv), ttlv.Bytes(tagData, msg)); r != reasonItemNotFound {
			t.Fatalf("Sign with a destroyed key: %s", reasonName(r))
		}
	}
	pair := func(alg uint32, bits int32) uint32 {
		return c.fail(v, opCreateKeyPair, ttlv.Struct(tagCommonAttributes, ttlv.Enum(tagCryptographicAlgorithm, alg), ttlv.Int(tagCryptographicLength, bits)))
	}
	if r := pair(5, 2048); r != reasonOperationNotSupported {
		t.Fatalf("DSA pair: %s", reasonName(r))
	}
	if r := pair(4, 1024); r != reasonInvalidField {
		t.Fatalf("RSA-1024 pair: %s", reasonName(r))
	}
	if r := c.fail(v, opCreateKeyPair); r != reasonMissingData {
		t.Fatalf("pair without attributes: %s", reasonName(r))
	}
	// A symmetric key does not sign.
	sym := ids(c.do(v, opCreate, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagAttributes,
		ttlv.Enum(tagCryptographicAlgorithm, 3), ttlv.Int(tagCryptographicLength, 256))))[0]
	c.do(v, opActivate, uid(sym))
	if r := c.fail(v, opSign, uid(sym), ttlv.Bytes(tagData, msg)); r != reasonInvalidField {
		t.Fatalf("Sign with an AES key: %s", reasonName(r))
	}
}

// The Cryptographic Parameters of Sign map to the KMS signing algorithm
// the HSM runs, and what it cannot run is refused, not run differently.
func TestSigningAlgorithm(t *testing.T) {
	params := func(cs ...ttlv.Item) ttlv.Item {
		return ttlv.Struct(tagRequestPayload, ttlv.Struct(tagCryptographicParams, cs...))
	}
	e := func(tag ttlv.Tag, v uint32) ttlv.Item { return ttlv.Enum(tag, v) }
	for _, tc := range []struct {
		p    ttlv.Item
		want string // "" with ok: the key's default; "!" : refused
	}{
		{ttlv.Struct(tagRequestPayload), ""},
		{params(e(tagDigitalSignatureAlg, dsaSHA384RSA)), "RSASSA_PKCS1_V1_5_SHA_384"},
		{params(e(tagDigitalSignatureAlg, dsaRSASSAPSS)), "RSASSA_PSS_SHA_256"},
		{params(e(tagDigitalSignatureAlg, dsaRSASSAPSS), e(tagHashingAlgorithm, hashSHA512), ttlv.Int(tagSaltLength, 64)), "RSASSA_PSS_SHA_512"},
		{params(e(tagDigitalSignatureAlg, dsaRSASSAPSS), ttlv.Int(tagSaltLength, 20)), "!"},
		{params(e(tagDigitalSignatureAlg, dsaRSASSAPSS), e(tagMaskGeneratorHashing, hashSHA512)), "!"},
		{params(e(tagDigitalSignatureAlg, dsaECDSASHA384)), "ECDSA_SHA_384"},
		{params(e(tagDigitalSignatureAlg, dsaECDSASHA256), e(tagHashingAlgorithm, hashSHA512)), "!"},
		{params(e(tagDigitalSignatureAlg, 3)), "!"}, // SHA-1 with RSA
		{params(e(tagCryptographicAlgorithm, 4), e(tagPaddingMethod, paddingPSS), e(tagHashingAlgorithm, hashSHA384)), "RSASSA_PSS_SHA_384"},
		{params(e(tagCryptographicAlgorithm, 4)), "RSASSA_PKCS1_V1_5_SHA_256"},
		{params(e(tagCryptographicAlgorithm, 4), e(tagPaddingMethod, paddingNone)), "!"},
		{params(e(tagCryptographicAlgorithm, 6), e(tagHashingAlgorithm, hashSHA384)), "ECDSA_SHA_384"},
		{params(e(tagCryptographicAlgorithm, 4), e(tagHashingAlgorithm, 4)), "!"}, // SHA-1
		{params(e(tagCryptographicAlgorithm, 3)), "!"},                            // AES
		{params(ttlv.Int(tagDigitalSignatureAlg, 5)), "!"},                        // wrong type
	} {
		got, err := signingAlgorithm(tc.p)
		if tc.want == "!" {
			if err == nil {
				t.Errorf("%+v: %q, want a refusal", tc.p, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v, want %q", tc.p, got, err, tc.want)
		}
	}
}
