package p11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// fixture is a one-node broker and an initialized module over it.
type fixture struct {
	t   *testing.T
	c   *hsmtest.Cluster
	cl  *client.Client
	m   *Module
	dir string
}

// newFixture starts a broker and points the library's environment at it.
// With pin set, the client key is sealed under it.
func newFixture(t *testing.T, pin string) *fixture {
	t.Helper()
	return newFixtureOn(t, hsmtest.NewCluster(t, 1), pin)
}

// newFixtureOn is newFixture on a cluster the test made.
func newFixtureOn(t *testing.T, c *hsmtest.Cluster, pin string) *fixture {
	t.Helper()
	ca, cert, key := c.TLSFiles("pkcs11app", authz.RoleAdmin)
	f := &fixture{t: t, c: c, dir: t.TempDir()}
	t.Setenv(EnvConfig, "")
	t.Setenv(client.EnvAddr, c.Nodes[0].GRPCAddr)
	t.Setenv(client.EnvCA, ca)
	t.Setenv(client.EnvCert, cert)
	t.Setenv(client.EnvKey, key)
	t.Setenv(EnvSealedKey, "")
	if pin != "" {
		keyPEM, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := SealKey(keyPEM, pin)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(f.dir, "sealed.pem")
		if err := os.WriteFile(p, sealed, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvSealedKey, p)
	}
	cl, err := client.Dial(context.Background(), client.Config{Endpoints: []string{c.Nodes[0].GRPCAddr}, CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	f.cl = cl
	f.m = New(&bytes.Buffer{})
	if rv := f.m.Initialize(InitArgs{}); rv != CKR_OK {
		t.Fatalf("Initialize: %#x", rv)
	}
	t.Cleanup(func() { f.m.Finalize() })
	return f
}

func (f *fixture) createKey(alias string, spec pb.KeySpec, usage pb.KeyUsage) string {
	f.t.Helper()
	resp, err := f.cl.Keys.CreateKey(context.Background(), &pb.CreateKeyRequest{AliasName: "alias/" + alias, KeySpec: spec, KeyUsage: usage})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.GetKeyMetadata().GetKeyId()
}

func (f *fixture) open() uint64 {
	f.t.Helper()
	h, rv := f.m.OpenSession(SlotID, CKF_SERIAL_SESSION|CKF_RW_SESSION)
	if rv != CKR_OK {
		f.t.Fatalf("OpenSession: %#x", rv)
	}
	return h
}

func ulong(v uint64) []byte { return ckULong(v) }

func (f *fixture) find(h uint64, tmpl ...Attribute) []uint64 {
	f.t.Helper()
	if rv := f.m.FindObjectsInit(h, tmpl); rv != CKR_OK {
		f.t.Fatalf("FindObjectsInit: %#x", rv)
	}
	got, rv := f.m.FindObjects(h, 100)
	if rv != CKR_OK {
		f.t.Fatalf("FindObjects: %#x", rv)
	}
	if rv := f.m.FindObjectsFinal(h); rv != CKR_OK {
		f.t.Fatalf("FindObjectsFinal: %#x", rv)
	}
	return got
}

func (f *fixture) one(h uint64, class uint64, label string) uint64 {
	f.t.Helper()
	got := f.find(h, Attribute{CKA_CLASS, ulong(class)}, Attribute{CKA_LABEL, []byte(label)})
	if len(got) != 1 {
		f.t.Fatalf("find class %d label %q: %d objects", class, label, len(got))
	}
	return got[0]
}

func (f *fixture) pub(alias string) any {
	f.t.Helper()
	resp, err := f.cl.Crypto.GetPublicKey(context.Background(), &pb.GetPublicKeyRequest{KeyId: "alias/" + alias})
	if err != nil {
		f.t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(resp.GetPublicKey())
	if err != nil {
		f.t.Fatal(err)
	}
	return pub
}

// sign runs a full sign with a length query first.
func (f *fixture) sign(h uint64, mech Mechanism, key uint64, data []byte) []byte {
	f.t.Helper()
	if rv := f.m.SignInit(h, mech, key); rv != CKR_OK {
		f.t.Fatalf("SignInit: %#x", rv)
	}
	res, rv := f.m.Sign(h, data, Out{Query: true})
	if rv != CKR_OK {
		f.t.Fatalf("Sign (length): %#x", rv)
	}
	if rv := f.m.SignInit(h, mech, key); rv != CKR_OPERATION_ACTIVE {
		f.t.Fatalf("SignInit during a sign: %#x, want CKR_OPERATION_ACTIVE", rv)
	}
	if _, rv := f.m.Sign(h, data, Out{Cap: uint64(len(res) - 1)}); rv != CKR_BUFFER_TOO_SMALL {
		f.t.Fatalf("Sign into a short buffer: %#x", rv)
	}
	sig, rv := f.m.Sign(h, data, Out{Cap: uint64(len(res))})
	if rv != CKR_OK {
		f.t.Fatalf("Sign: %#x", rv)
	}
	if _, rv := f.m.Sign(h, data, Out{Cap: 1024}); rv != CKR_OPERATION_NOT_INITIALIZED {
		f.t.Fatalf("Sign after the end: %#x", rv)
	}
	return sig
}

func TestSignVerifyDecryptWithKeysMadeElsewhere(t *testing.T) {
	f := newFixture(t, "")
	f.createKey("rsa-sign", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	f.createKey("ec-sign", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	f.createKey("rsa-enc", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	h := f.open()
	msg := []byte("sign me")
	digest := sha256.Sum256(msg)

	rsaPriv := f.one(h, CKO_PRIVATE_KEY, "rsa-sign")
	rsaPub := f.pub("rsa-sign").(*rsa.PublicKey)
	sig := f.sign(h, Mechanism{Type: CKM_SHA256_RSA_PKCS}, rsaPriv, msg)
	if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("CKM_SHA256_RSA_PKCS: %v", err)
	}
	di := keys.DigestInfo(crypto.SHA256, digest[:])
	sig = f.sign(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPriv, di)
	if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("CKM_RSA_PKCS: %v", err)
	}
	pss := Mechanism{Type: CKM_RSA_PKCS_PSS, HasParam: true, HashAlg: CKM_SHA256, MGF: CKG_MGF1_SHA256, SaltLen: 32}
	sig = f.sign(h, pss, rsaPriv, digest[:])
	if err := rsa.VerifyPSS(rsaPub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Fatalf("CKM_RSA_PKCS_PSS: %v", err)
	}
	// Verify in the library, through the public key object.
	pubObj := f.one(h, CKO_PUBLIC_KEY, "rsa-sign")
	if rv := f.m.VerifyInit(h, pss, pubObj); rv != CKR_OK {
		t.Fatalf("VerifyInit: %#x", rv)
	}
	if rv := f.m.Verify(h, digest[:], sig); rv != CKR_OK {
		t.Fatalf("Verify: %#x", rv)
	}
	sig[0] ^= 1
	_ = f.m.VerifyInit(h, pss, pubObj)
	if rv := f.m.Verify(h, digest[:], sig); rv != CKR_SIGNATURE_INVALID {
		t.Fatalf("Verify of a bad signature: %#x", rv)
	}

	ecPriv := f.one(h, CKO_PRIVATE_KEY, "ec-sign")
	ecPub := f.pub("ec-sign").(*ecdsa.PublicKey)
	for _, mech := range []Mechanism{{Type: CKM_ECDSA}, {Type: CKM_ECDSA_SHA256}} {
		in := msg
		if mech.Type == CKM_ECDSA {
			in = digest[:]
		}
		sig := f.sign(h, mech, ecPriv, in)
		if len(sig) != 64 {
			t.Fatalf("ECDSA signature of %d bytes, want r||s of 64", len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(ecPub, digest[:], r, s) {
			t.Fatalf("mechanism %#x: signature does not verify", mech.Type)
		}
	}

	// CKM_ECDSA fits its input to the curve as ECDSA does (Go's
	// ecdsa.Verify too): a longer one is cut, a shorter one padded. On
	// P-521 an input over 64 bytes is refused: its leftmost 521 bits are
	// no digest the broker takes.
	f.createKey("ec521", pb.KeySpec_KEY_SPEC_ECC_NIST_P521, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	ec521 := f.one(h, CKO_PRIVATE_KEY, "ec521")
	long := sha512.Sum512(msg)
	for _, c := range []struct {
		alias string
		key   uint64
		in    []byte
	}{{"ec-sign", ecPriv, long[:48]}, {"ec521", ec521, long[:]}, {"ec521", ec521, digest[:]}} {
		sig := f.sign(h, Mechanism{Type: CKM_ECDSA}, c.key, c.in)
		half := len(sig) / 2
		r, s := new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])
		if !ecdsa.Verify(f.pub(c.alias).(*ecdsa.PublicKey), c.in, r, s) {
			t.Fatalf("CKM_ECDSA with %s over %d bytes: signature does not verify", c.alias, len(c.in))
		}
	}
	if rv := f.m.SignInit(h, Mechanism{Type: CKM_ECDSA}, ec521); rv != CKR_OK {
		t.Fatalf("SignInit: %#x", rv)
	}
	if _, rv := f.m.Sign(h, append(long[:], 1, 2), Out{Cap: 200}); rv != CKR_DATA_LEN_RANGE {
		t.Fatalf("CKM_ECDSA with P-521 over 66 bytes: %#x, want CKR_DATA_LEN_RANGE", rv)
	}

	encPriv := f.one(h, CKO_PRIVATE_KEY, "rsa-enc")
	encPub := f.pub("rsa-enc").(*rsa.PublicKey)
	for _, hash := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		ct, err := rsa.EncryptOAEP(newHash(hash), rand.Reader, encPub, []byte("table key"), nil)
		if err != nil {
			t.Fatal(err)
		}
		ckm, mgf := uint64(CKM_SHA_1), uint64(CKG_MGF1_SHA1)
		if hash == crypto.SHA256 {
			ckm, mgf = CKM_SHA256, CKG_MGF1_SHA256
		}
		mech := Mechanism{Type: CKM_RSA_PKCS_OAEP, HasParam: true, HashAlg: ckm, MGF: mgf, OAEPSource: CKZ_DATA_SPECIFIED}
		if rv := f.m.DecryptInit(h, mech, encPriv); rv != CKR_OK {
			t.Fatalf("DecryptInit: %#x", rv)
		}
		pt, rv := f.m.Decrypt(h, ct, Out{Cap: 512})
		if rv != CKR_OK || string(pt) != "table key" {
			t.Fatalf("OAEP %v decrypt: %#x %q", hash, rv, pt)
		}
	}
	// A signing key does not decrypt, and a wrong mechanism is refused.
	mech := Mechanism{Type: CKM_RSA_PKCS_OAEP, HasParam: true, HashAlg: CKM_SHA256, MGF: CKG_MGF1_SHA256}
	if rv := f.m.DecryptInit(h, mech, rsaPriv); rv != CKR_KEY_FUNCTION_NOT_PERMITTED {
		t.Fatalf("DecryptInit with a signing key: %#x", rv)
	}
	if rv := f.m.SignInit(h, Mechanism{Type: 0x9999}, rsaPriv); rv != CKR_MECHANISM_INVALID {
		t.Fatalf("SignInit with an unknown mechanism: %#x", rv)
	}
	// The broker signs PKCS#1 v1.5 over SHA-256, SHA-384 and SHA-512 only:
	// the mechanisms of other hashes (and raw RSA) are not mechanisms of the
	// token, and CKM_RSA_PKCS over a DigestInfo of another hash (pkcs11-tool
	// --test sends one of SHA-1) is CKR_DATA_INVALID, ending the operation.
	const ckmRSAX509, ckmMD5RSA, ckmSHA1RSA, ckmRIPEMD160RSA, ckmSHA224RSA = 0x3, 0x5, 0x6, 0x8, 0x46
	for _, typ := range []uint64{ckmRSAX509, ckmMD5RSA, ckmSHA1RSA, ckmRIPEMD160RSA, ckmSHA224RSA} {
		if rv := f.m.SignInit(h, Mechanism{Type: typ}, rsaPriv); rv != CKR_MECHANISM_INVALID {
			t.Fatalf("SignInit with mechanism %#x: %#x", typ, rv)
		}
		if _, _, _, rv := f.m.MechanismInfo(0, typ); rv != CKR_MECHANISM_INVALID {
			t.Fatalf("MechanismInfo of %#x: %#x", typ, rv)
		}
		for _, mi := range Mechanisms {
			if mi.Type == typ {
				t.Fatalf("mechanism %#x is listed", typ)
			}
		}
	}
	sha1DI := []byte("\x30\x21\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00\x04\x14\x29\xb0\xe7\x87\x82\x71\x64\x5f\xff\xb7\xee\xc7\xdb\x4a\x74\x73\xa1\xc0\x0b\xc1")
	if rv := f.m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPriv); rv != CKR_OK {
		t.Fatalf("SignInit CKM_RSA_PKCS: %#x", rv)
	}
	if _, rv := f.m.Sign(h, sha1DI, Out{Cap: 512}); rv != CKR_DATA_INVALID {
		t.Fatalf("CKM_RSA_PKCS over a SHA-1 DigestInfo: %#x", rv)
	}
	if rv := f.m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPriv); rv != CKR_OK {
		t.Fatalf("SignInit after CKR_DATA_INVALID: %#x", rv)
	}
	if sig, rv := f.m.Sign(h, di, Out{Cap: 512}); rv != CKR_OK || rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, digest[:], sig) != nil {
		t.Fatalf("CKM_RSA_PKCS after CKR_DATA_INVALID: %#x", rv)
	}
	if rv := f.m.DecryptInit(h, Mechanism{Type: CKM_RSA_PKCS}, encPriv); rv != CKR_MECHANISM_INVALID {
		t.Fatalf("DecryptInit CKM_RSA_PKCS (PKCS#1 v1.5 decryption is not offered): %#x", rv)
	}
	if rv := f.m.SignInit(h, Mechanism{Type: CKM_ECDSA}, rsaPriv); rv != CKR_KEY_TYPE_INCONSISTENT {
		t.Fatalf("ECDSA with an RSA key: %#x", rv)
	}
	if rv := f.m.SignInit(h, Mechanism{Type: CKM_ECDSA}, 999999); rv != CKR_KEY_HANDLE_INVALID {
		t.Fatalf("SignInit with a wrong handle: %#x", rv)
	}
}

func TestAttributes(t *testing.T) {
	f := newFixture(t, "")
	id := f.createKey("attrs", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	h := f.open()
	priv := f.one(h, CKO_PRIVATE_KEY, "attrs")
	if got := f.find(h, Attribute{CKA_ID, []byte(id)}); len(got) != 2 {
		t.Fatalf("find by CKA_ID = key id: %d objects, want 2", len(got))
	}
	for typ, want := range map[uint64][]byte{CKA_SENSITIVE: {1}, CKA_EXTRACTABLE: {0}, CKA_SIGN: {1}, CKA_LABEL: []byte("attrs"), CKA_ID: []byte(id)} {
		v, rv := f.m.GetAttribute(h, priv, typ)
		if rv != CKR_OK || !bytes.Equal(v, want) {
			t.Fatalf("attribute %#x: %#x %q, want %q", typ, rv, v, want)
		}
	}
	for _, typ := range []uint64{CKA_VALUE, CKA_PRIVATE_EXPONENT, CKA_PRIME_1} {
		if _, rv := f.m.GetAttribute(h, priv, typ); rv != CKR_ATTRIBUTE_SENSITIVE {
			t.Fatalf("attribute %#x of a private key: %#x, want CKR_ATTRIBUTE_SENSITIVE", typ, rv)
		}
	}
	if _, rv := f.m.GetAttribute(h, priv, 0x7fff1234); rv != CKR_ATTRIBUTE_TYPE_INVALID {
		t.Fatalf("unknown attribute: %#x", rv)
	}
	mod, rv := f.m.GetAttribute(h, priv, CKA_MODULUS)
	if rv != CKR_OK || !bytes.Equal(mod, f.pub("attrs").(*rsa.PublicKey).N.Bytes()) {
		t.Fatalf("CKA_MODULUS: %#x", rv)
	}
	if _, rv := f.m.GetAttribute(h, 12345, CKA_CLASS); rv != CKR_OBJECT_HANDLE_INVALID {
		t.Fatalf("wrong object handle: %#x", rv)
	}
	if _, rv := f.m.GetAttribute(777, priv, CKA_CLASS); rv != CKR_SESSION_HANDLE_INVALID {
		t.Fatalf("wrong session handle: %#x", rv)
	}
}

func TestGenerateKeys(t *testing.T) {
	f := newFixture(t, "")
	h := f.open()
	label := "ORACLE.TDE.HSM.MK.0123ABCD"
	k, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{
		{CKA_CLASS, ulong(CKO_SECRET_KEY)}, {CKA_KEY_TYPE, ulong(CKK_AES)}, {CKA_VALUE_LEN, ulong(32)},
		{CKA_LABEL, []byte(label)}, {CKA_ID, []byte{1, 2, 3}}, {CKA_SENSITIVE, []byte{1}}, {CKA_TOKEN, []byte{1}},
	})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey: %#x", rv)
	}
	if got := f.one(h, CKO_SECRET_KEY, label); got != k {
		t.Fatalf("found %d, made %d", got, k)
	}
	if got := f.find(h, Attribute{CKA_ID, []byte{1, 2, 3}}); len(got) != 1 || got[0] != k {
		t.Fatalf("find by the given CKA_ID: %v", got)
	}
	if _, rv := f.m.GetAttribute(h, k, CKA_VALUE); rv != CKR_ATTRIBUTE_SENSITIVE {
		t.Fatalf("CKA_VALUE of a secret key: %#x", rv)
	}
	// Templates asking for an extractable or caller-given secret are refused.
	for _, a := range []Attribute{{CKA_EXTRACTABLE, []byte{1}}, {CKA_VALUE, make([]byte, 32)}, {CKA_TOKEN, []byte{0}}} {
		if _, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("x")}, a}); rv != CKR_ATTRIBUTE_VALUE_INVALID && rv != CKR_TEMPLATE_INCONSISTENT {
			t.Fatalf("GenerateKey with attribute %#x=%x: %#x", a.Type, a.Value, rv)
		}
	}
	// pkcs11-tool's --keygen template without --sensitive (CKA_SENSITIVE
	// and CKA_PRIVATE false, CKA_EXTRACTABLE false) makes a key that is
	// sensitive all the same: its value is never readable.
	k2, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{
		{CKA_TOKEN, []byte{1}}, {CKA_CLASS, ulong(CKO_SECRET_KEY)}, {CKA_KEY_TYPE, ulong(CKK_AES)},
		{CKA_SENSITIVE, []byte{0}}, {CKA_EXTRACTABLE, []byte{0}}, {CKA_PRIVATE, []byte{0}},
		{CKA_ENCRYPT, []byte{1}}, {CKA_DECRYPT, []byte{1}}, {CKA_VALUE_LEN, ulong(32)}, {CKA_LABEL, []byte("ORACLE.TDE.HSM.MK.0B")},
	})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey with CKA_SENSITIVE=false: %#x", rv)
	}
	for typ, want := range map[uint64][]byte{CKA_SENSITIVE: {1}, CKA_ALWAYS_SENSITIVE: {1}, CKA_EXTRACTABLE: {0}, CKA_NEVER_EXTRACTABLE: {1}} {
		if got, rv := f.m.GetAttribute(h, k2, typ); rv != CKR_OK || !bytes.Equal(got, want) {
			t.Fatalf("attribute %#x of a key asked with CKA_SENSITIVE=false: %x %#x", typ, got, rv)
		}
	}
	if _, rv := f.m.GetAttribute(h, k2, CKA_VALUE); rv != CKR_ATTRIBUTE_SENSITIVE {
		t.Fatalf("CKA_VALUE of a key asked with CKA_SENSITIVE=false: %#x", rv)
	}
	if _, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{0x7fff0001, []byte{1}}}); rv != CKR_ATTRIBUTE_TYPE_INVALID {
		t.Fatalf("unknown attribute: %#x", rv)
	}
	// A label the broker refuses is an attribute's value, as in C_CreateObject.
	for _, label := range []string{"a\x1b[2Jb", "a\u009bb", "a\u202eb"} {
		if _, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte(label)}, {CKA_VALUE_LEN, ulong(32)}}); rv != CKR_ATTRIBUTE_VALUE_INVALID {
			t.Fatalf("GenerateKey with label %q: %#x, want CKR_ATTRIBUTE_VALUE_INVALID", label, rv)
		}
	}

	pubH, privH, rv := f.m.GenerateKeyPair(h, Mechanism{Type: CKM_EC_KEY_PAIR_GEN},
		[]Attribute{{CKA_EC_PARAMS, ecParams(elliptic.P256())}, {CKA_LABEL, []byte("made-ec")}, {CKA_VERIFY, []byte{1}}},
		[]Attribute{{CKA_LABEL, []byte("made-ec")}, {CKA_SIGN, []byte{1}}, {CKA_SENSITIVE, []byte{1}}})
	if rv != CKR_OK {
		t.Fatalf("GenerateKeyPair EC: %#x", rv)
	}
	sig := f.sign(h, Mechanism{Type: CKM_ECDSA_SHA256}, privH, []byte("m"))
	if rv := f.m.VerifyInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, pubH); rv != CKR_OK {
		t.Fatal(rv)
	}
	if rv := f.m.Verify(h, []byte("m"), sig); rv != CKR_OK {
		t.Fatalf("verify: %#x", rv)
	}
	point, rv := f.m.GetAttribute(h, pubH, CKA_EC_POINT)
	if rv != CKR_OK || len(point) != 67 {
		t.Fatalf("CKA_EC_POINT: %#x, %d bytes", rv, len(point))
	}
	_, _, rv = f.m.GenerateKeyPair(h, Mechanism{Type: CKM_RSA_PKCS_KEY_PAIR_GEN},
		[]Attribute{{CKA_MODULUS_BITS, ulong(1024)}}, []Attribute{{CKA_LABEL, []byte("small")}})
	if rv != CKR_KEY_SIZE_RANGE {
		t.Fatalf("RSA-1024: %#x", rv)
	}
}

func TestLoginWithSealedKey(t *testing.T) {
	f := newFixture(t, "1234-pin")
	f.createKey("after-login", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	h := f.open()
	ti, _ := f.m.GetTokenInfo(SlotID)
	if ti.Flags&CKF_LOGIN_REQUIRED == 0 {
		t.Fatal("token does not require login with a sealed key")
	}
	if got := f.find(h); len(got) != 0 {
		t.Fatalf("%d objects visible before login", len(got))
	}
	if rv := f.m.Login(h, CKU_USER, []byte("wrong-pin")); rv != CKR_PIN_INCORRECT {
		t.Fatalf("wrong PIN: %#x", rv)
	}
	if rv := f.m.Login(h, CKU_SO, []byte("1234-pin")); rv != CKR_USER_TYPE_INVALID {
		t.Fatalf("SO login: %#x", rv)
	}
	if rv := f.m.Login(h, CKU_USER, []byte("1234-pin")); rv != CKR_OK {
		t.Fatalf("right PIN: %#x", rv)
	}
	if rv := f.m.Login(h, CKU_USER, []byte("1234-pin")); rv != CKR_USER_ALREADY_LOGGED_IN {
		t.Fatalf("second login: %#x", rv)
	}
	f.one(h, CKO_PRIVATE_KEY, "after-login")
	buf := make([]byte, 2000)
	if rv := f.m.GenerateRandom(h, buf); rv != CKR_OK || bytes.Equal(buf[:32], make([]byte, 32)) {
		t.Fatalf("GenerateRandom: %#x", rv)
	}
	if rv := f.m.Logout(h); rv != CKR_OK {
		t.Fatal(rv)
	}
	if rv := f.m.GenerateRandom(h, buf); rv != CKR_USER_NOT_LOGGED_IN {
		t.Fatalf("GenerateRandom after logout: %#x", rv)
	}
	// Finalize, then Initialize again.
	if rv := f.m.Finalize(); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := f.m.OpenSession(SlotID, CKF_SERIAL_SESSION); rv != CKR_CRYPTOKI_NOT_INITIALIZED {
		t.Fatalf("OpenSession after Finalize: %#x", rv)
	}
	if rv := f.m.Initialize(InitArgs{Present: true, Flags: CKF_OS_LOCKING_OK}); rv != CKR_OK {
		t.Fatalf("Initialize again: %#x", rv)
	}
	if rv := f.m.Initialize(InitArgs{}); rv != CKR_CRYPTOKI_ALREADY_INITIALIZED {
		t.Fatalf("Initialize twice: %#x", rv)
	}
}

func TestInitializeArgs(t *testing.T) {
	m := New(&bytes.Buffer{})
	if rv := m.Initialize(InitArgs{Present: true, Flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS}); rv != CKR_NEED_TO_CREATE_THREADS {
		t.Fatalf("CKF_LIBRARY_CANT_CREATE_OS_THREADS: %#x", rv)
	}
	if rv := m.Initialize(InitArgs{Present: true, MutexFuncs: 4}); rv != CKR_CANT_LOCK {
		t.Fatalf("application mutexes only: %#x", rv)
	}
	// Some but not all of the four mutex functions: PKCS#11 v2.40 says
	// CKR_ARGUMENTS_BAD, with or without CKF_OS_LOCKING_OK.
	for n := 1; n < 4; n++ {
		for _, flags := range []uint64{0, CKF_OS_LOCKING_OK} {
			if rv := m.Initialize(InitArgs{Present: true, MutexFuncs: n, Flags: flags}); rv != CKR_ARGUMENTS_BAD {
				t.Fatalf("%d of the 4 mutex functions, flags %#x: %#x", n, flags, rv)
			}
		}
	}
}

func TestSealedKey(t *testing.T) {
	sealed, err := SealKey([]byte("-----BEGIN PRIVATE KEY-----\nabc\n"), "good-pin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSealedKey(sealed, "bad-pin!"); err != ErrPINIncorrect {
		t.Fatalf("wrong PIN: %v", err)
	}
	got, err := OpenSealedKey(sealed, "good-pin")
	if err != nil || !bytes.HasPrefix(got, []byte("-----BEGIN PRIVATE KEY")) {
		t.Fatalf("open: %v", err)
	}
	if bytes.Contains(sealed, []byte("abc")) {
		t.Fatal("sealed file holds the key in the clear")
	}
}

func TestConfigFileRefusedWhenWritableByOthers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "p11.yaml")
	if err := os.WriteFile(p, []byte("endpoints: [127.0.0.1:1]\nca: a\ncert: b\nkey: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == EnvConfig {
			return p
		}
		return ""
	}
	cs, err := LoadConfig(env)
	if err != nil || len(cs) != 1 || cs[0].TokenLabel != DefaultTokenLabel || cs[0].Endpoints[0] != "127.0.0.1:1" {
		t.Fatalf("0600 file: %+v %v", cs, err)
	}
	if err := os.Chmod(p, 0o620); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(env); err == nil {
		t.Fatal("group-writable configuration accepted")
	}
}

// crypt runs a one-call encryption or decryption with a length query.
func (f *fixture) crypt(h uint64, enc bool, mech Mechanism, key uint64, in []byte) ([]byte, uint64) {
	f.t.Helper()
	init, run := f.m.DecryptInit, f.m.Decrypt
	if enc {
		init, run = f.m.EncryptInit, f.m.Encrypt
	}
	if rv := init(h, mech, key); rv != CKR_OK {
		return nil, rv
	}
	n, rv := run(h, in, Out{Query: true})
	if rv != CKR_OK {
		return nil, rv
	}
	return run(h, in, Out{Cap: uint64(len(n))})
}

func TestRawAESAndDataObjects(t *testing.T) {
	f := newFixture(t, "")
	h := f.open()
	key, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("ORACLE.TDE.HSM.MK.AB01")}, {CKA_VALUE_LEN, ulong(32)}})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey: %#x", rv)
	}
	iv := bytes.Repeat([]byte{3}, 16)
	tableKey := bytes.Repeat([]byte{0x5a}, 32)
	gcm := Mechanism{Type: CKM_AES_GCM, HasParam: true, IV: iv[:12], AAD: []byte("aad"), TagBits: 128}
	ctr := Mechanism{Type: CKM_AES_CTR, HasParam: true, IV: iv, CounterBits: 128}
	for _, mech := range []Mechanism{{Type: CKM_AES_CBC_PAD, Param: iv}, {Type: CKM_AES_CBC, Param: iv}, ctr, gcm} {
		ct, rv := f.crypt(h, true, mech, key, tableKey)
		if rv != CKR_OK || bytes.Equal(ct, tableKey) {
			t.Fatalf("encrypt %#x: %#x", mech.Type, rv)
		}
		pt, rv := f.crypt(h, false, mech, key, ct)
		if rv != CKR_OK || !bytes.Equal(pt, tableKey) {
			t.Fatalf("decrypt %#x: %#x", mech.Type, rv)
		}
		// Multi-part: the same result.
		if rv := f.m.EncryptInit(h, mech, key); rv != CKR_OK {
			t.Fatal(rv)
		}
		ct1, _, rv := f.m.EncryptUpdate(h, tableKey[:7], Out{Cap: 100})
		if rv != CKR_OK {
			t.Fatalf("first update %#x: %#x", mech.Type, rv)
		}
		part, _, rv := f.m.EncryptUpdate(h, tableKey[7:], Out{Cap: 100})
		if rv != CKR_OK {
			t.Fatalf("second update %#x: %#x", mech.Type, rv)
		}
		ct1 = append(ct1, part...)
		ct2, rv := f.m.EncryptFinal(h, Out{Cap: 100})
		if rv != CKR_OK || !bytes.Equal(append(ct1, ct2...), ct) {
			t.Fatalf("multi-part %#x: %#x", mech.Type, rv)
		}
		// C_Encrypt after C_EncryptUpdate is refused, and, as PKCS#11
		// has C_Encrypt do on every error but a short buffer, ends the
		// operation.
		_ = f.m.EncryptInit(h, mech, key)
		if _, _, rv := f.m.EncryptUpdate(h, tableKey[:7], Out{Cap: 100}); rv != CKR_OK {
			t.Fatal(rv)
		}
		if _, rv := f.m.Encrypt(h, tableKey, Out{Cap: 100}); rv != CKR_OPERATION_ACTIVE {
			t.Fatalf("C_Encrypt after C_EncryptUpdate: %#x", rv)
		}
		if _, rv := f.m.EncryptFinal(h, Out{Cap: 100}); rv != CKR_OPERATION_NOT_INITIALIZED {
			t.Fatalf("C_EncryptFinal after the refused C_Encrypt: %#x, want the operation ended", rv)
		}
	}
	if _, rv := f.crypt(h, true, Mechanism{Type: CKM_AES_CBC, Param: iv}, key, tableKey[:31]); rv != CKR_DATA_LEN_RANGE {
		t.Fatalf("CBC of 31 bytes: %#x", rv)
	}
	if _, rv := f.crypt(h, true, Mechanism{Type: CKM_AES_CBC, Param: iv[:8]}, key, tableKey); rv != CKR_MECHANISM_PARAM_INVALID {
		t.Fatalf("short IV: %#x", rv)
	}
	if _, rv := f.crypt(h, true, Mechanism{Type: CKM_AES_ECB}, key, tableKey); rv != CKR_MECHANISM_INVALID {
		t.Fatalf("ECB: %#x", rv)
	}
	// The largest single-part plaintext: its CBC_PAD or GCM ciphertext, a
	// block longer, opens in one C_Decrypt too; a byte more is the
	// plaintext's length error, not a broker refusal.
	largest := bytes.Repeat([]byte{0x11}, maxRawInput)
	for _, mech := range []Mechanism{{Type: CKM_AES_CBC_PAD, Param: iv}, gcm} {
		ct, rv := f.crypt(h, true, mech, key, largest)
		if rv != CKR_OK || len(ct) != maxRawInput+aesBlock {
			t.Fatalf("%#x, encrypt %d bytes: %#x, %d bytes out", mech.Type, len(largest), rv, len(ct))
		}
		if pt, rv := f.crypt(h, false, mech, key, ct); rv != CKR_OK || !bytes.Equal(pt, largest) {
			t.Fatalf("%#x, decrypt %d bytes: %#x", mech.Type, len(ct), rv)
		}
		if _, rv := f.crypt(h, true, mech, key, append(largest, 0)); rv != CKR_DATA_LEN_RANGE {
			t.Fatalf("%#x, encrypt %d bytes: %#x, want CKR_DATA_LEN_RANGE", mech.Type, len(largest)+1, rv)
		}
	}
	ct, _ := f.crypt(h, true, gcm, key, tableKey)
	ct[3] ^= 1
	if _, rv := f.crypt(h, false, gcm, key, ct); rv != CKR_ENCRYPTED_DATA_INVALID {
		t.Fatalf("tampered GCM: %#x", rv)
	}
	cb := append(bytes.Repeat([]byte{7}, 15), 0xff)
	if got := ctrAdd(cb, 8, 1); !bytes.Equal(got, append(bytes.Repeat([]byte{7}, 15), 0)) || ctrRoom(cb, 8) != 1 || ctrRoom(cb, 12) != 4096-0x7ff {
		t.Fatalf("an 8-bit counter after %x: %x", cb, got)
	}
	if got := ctrAdd(bytes.Repeat([]byte{0xff}, 16), 128, 2); !bytes.Equal(got, append(make([]byte, 15), 1)) {
		t.Fatalf("a 128-bit counter after ff..ff: %x", got)
	}
	// A key of the broker's own format does not serve raw AES.
	f.createKey("kms-format", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	kmsKey := f.one(h, CKO_SECRET_KEY, "kms-format")
	if rv := f.m.EncryptInit(h, Mechanism{Type: CKM_AES_CBC_PAD, Param: iv}, kmsKey); rv != CKR_KEY_FUNCTION_NOT_PERMITTED {
		t.Fatalf("raw AES with a KMS-format key: %#x", rv)
	}

	// Data objects as Oracle makes them.
	label := []byte("ORACLE.SECURITY.KM.ENCRYPTION.4142")
	obj, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_TOKEN, []byte{1}}, {CKA_LABEL, label}, {CKA_VALUE, []byte("metadata")}})
	if rv != CKR_OK {
		t.Fatalf("CreateObject: %#x", rv)
	}
	other := New(&bytes.Buffer{}) // another process's view
	if rv := other.Initialize(InitArgs{}); rv != CKR_OK {
		t.Fatal(rv)
	}
	defer other.Finalize()
	g := &fixture{t: t, m: other}
	oh := g.open()
	found := g.one(oh, CKO_DATA, string(label))
	if v, rv := other.GetAttribute(oh, found, CKA_VALUE); rv != CKR_OK || string(v) != "metadata" {
		t.Fatalf("value seen elsewhere: %#x %q", rv, v)
	}
	if _, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_SECRET_KEY)}, {CKA_VALUE, make([]byte, 32)}}); rv != CKR_TEMPLATE_INCONSISTENT {
		t.Fatalf("importing a secret key: %#x", rv)
	}
	if _, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_VALUE, make([]byte, 64<<10+1)}}); rv == CKR_OK {
		t.Fatal("oversized data object accepted")
	}
	if rv := f.m.DestroyObject(h, key); rv != CKR_ACTION_PROHIBITED {
		t.Fatalf("destroying a key: %#x", rv)
	}
	if rv := f.m.DestroyObject(h, obj); rv != CKR_OK {
		t.Fatalf("DestroyObject: %#x", rv)
	}
	if got := g.find(oh, Attribute{CKA_CLASS, ulong(CKO_DATA)}); len(got) != 0 {
		t.Fatalf("%d data objects after destroy", len(got))
	}
	// A label the broker refuses (not text) is an attribute's value, and
	// the cluster's room for values running out is the device's memory.
	if _, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_LABEL, []byte("a\x1b[2Jb")}, {CKA_VALUE, []byte("v")}}); rv != CKR_ATTRIBUTE_VALUE_INVALID {
		t.Fatalf("a label with an escape sequence: %#x", rv)
	}
	var full uint64
	for i := range 40 {
		if _, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_LABEL, []byte(fmt.Sprint("big", i))}, {CKA_VALUE, make([]byte, 64<<10)}}); rv != CKR_OK {
			full = rv
			break
		}
	}
	if full != CKR_DEVICE_MEMORY {
		t.Fatalf("data objects past the cluster's room: %#x, want CKR_DEVICE_MEMORY", full)
	}
}

// TestFinalizeDuringOpenSession: C_Finalize and C_Initialize while other
// threads open and close sessions. PKCS#11 leaves such an application's
// results undefined, but the library must not take the process down (it
// wrote to the session table C_Finalize had dropped) nor attach a session
// to a token C_Finalize closed.
func TestFinalizeDuringOpenSession(t *testing.T) {
	f := newFixture(t, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	bad := make(chan string, 16)
	report := func(format string, rv uint64) {
		select {
		case bad <- fmt.Sprintf(format, rv):
		default:
		}
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h, rv := f.m.OpenSession(SlotID, CKF_SERIAL_SESSION)
				switch rv {
				case CKR_OK:
					if rv := f.m.CloseSession(h); rv != CKR_OK && rv != CKR_SESSION_HANDLE_INVALID && rv != CKR_CRYPTOKI_NOT_INITIALIZED {
						report("CloseSession: %#x", rv)
					}
				case CKR_CRYPTOKI_NOT_INITIALIZED:
				default:
					report("OpenSession: %#x", rv)
				}
				if _, rv := f.m.GetTokenInfo(SlotID); rv != CKR_OK && rv != CKR_CRYPTOKI_NOT_INITIALIZED {
					report("GetTokenInfo: %#x", rv)
				}
				if rv := f.m.CloseAllSessions(SlotID); rv != CKR_OK && rv != CKR_CRYPTOKI_NOT_INITIALIZED {
					report("CloseAllSessions: %#x", rv)
				}
			}
		}()
	}
	for range 300 {
		if rv := f.m.Finalize(); rv != CKR_OK {
			t.Fatalf("Finalize: %#x", rv)
		}
		if rv := f.m.Initialize(InitArgs{}); rv != CKR_OK {
			t.Fatalf("Initialize: %#x", rv)
		}
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Error(b)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	for h, s := range f.m.sessions {
		if s.tok != f.m.tokens[0] {
			t.Errorf("session %d belongs to a token C_Finalize closed", h)
		}
	}
}

// TestNoInputDroppedAfterAResult: once a result is computed (a length
// query) and waits for its buffer, more input is refused, never dropped
// from it: an Update, or the one-call form after a Final's length query,
// gets CKR_OPERATION_ACTIVE and ends the operation, as does the one-call
// form after an Update; the one-call form repeated with other input than
// its length query answers for the new input.
func TestNoInputDroppedAfterAResult(t *testing.T) {
	f := newFixture(t, "")
	f.createKey("ec", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	h := f.open()
	priv := f.one(h, CKO_PRIVATE_KEY, "ec")
	pub := f.pub("ec").(*ecdsa.PublicKey)
	verifies := func(sig, msg []byte) bool {
		d := sha256.Sum256(msg)
		return len(sig) == 64 && ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	mech := Mechanism{Type: CKM_ECDSA_SHA256}

	// SignUpdate after SignFinal's length query.
	_ = f.m.SignInit(h, mech, priv)
	if rv := f.m.SignUpdate(h, []byte("hello ")); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := f.m.SignFinal(h, Out{Query: true}); rv != CKR_OK {
		t.Fatalf("SignFinal (length): %#x", rv)
	}
	if rv := f.m.SignUpdate(h, []byte("world")); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("SignUpdate after SignFinal's length query: %#x, want CKR_OPERATION_ACTIVE", rv)
	}
	if _, rv := f.m.SignFinal(h, Out{Cap: 64}); rv != CKR_OPERATION_NOT_INITIALIZED {
		t.Fatalf("SignFinal after the refused SignUpdate: %#x, want the operation ended", rv)
	}

	// C_Sign after SignFinal's length query, and after SignUpdate.
	_ = f.m.SignInit(h, mech, priv)
	if _, rv := f.m.SignFinal(h, Out{Query: true}); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := f.m.Sign(h, []byte("hello world"), Out{Cap: 64}); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("C_Sign after SignFinal's length query: %#x, want CKR_OPERATION_ACTIVE", rv)
	}
	if _, rv := f.m.SignFinal(h, Out{Cap: 64}); rv != CKR_OPERATION_NOT_INITIALIZED {
		t.Fatalf("SignFinal after the refused C_Sign: %#x, want the operation ended", rv)
	}
	_ = f.m.SignInit(h, mech, priv)
	_ = f.m.SignUpdate(h, []byte("hello "))
	if _, rv := f.m.Sign(h, []byte("hello world"), Out{Cap: 64}); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("C_Sign after SignUpdate: %#x, want CKR_OPERATION_ACTIVE", rv)
	}
	if _, rv := f.m.SignFinal(h, Out{Cap: 64}); rv != CKR_OPERATION_NOT_INITIALIZED {
		t.Fatalf("SignFinal after C_Sign was refused: %#x, want the operation ended", rv)
	}

	// C_Sign's length query with one message, then the call with another:
	// the signature is of the second.
	_ = f.m.SignInit(h, mech, priv)
	if _, rv := f.m.Sign(h, []byte("first"), Out{Query: true}); rv != CKR_OK {
		t.Fatal(rv)
	}
	sig, rv := f.m.Sign(h, []byte("second"), Out{Cap: 64})
	if rv != CKR_OK || !verifies(sig, []byte("second")) {
		t.Fatalf("C_Sign with other input than its length query: %#x, signature of the second message %v", rv, verifies(sig, []byte("second")))
	}
	// And with the same message, the kept signature.
	_ = f.m.SignInit(h, mech, priv)
	kept, _ := f.m.Sign(h, []byte("same"), Out{Query: true})
	sig, rv = f.m.Sign(h, []byte("same"), Out{Cap: 64})
	if rv != CKR_OK || !bytes.Equal(sig, kept) || !verifies(sig, []byte("same")) {
		t.Fatalf("C_Sign after its length query: %#x", rv)
	}

	// C_Encrypt after EncryptFinal's length query (raw AES, CBC_PAD).
	key, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("aes")}, {CKA_VALUE_LEN, ulong(32)}})
	if rv != CKR_OK {
		t.Fatal(rv)
	}
	cbc := Mechanism{Type: CKM_AES_CBC_PAD, Param: bytes.Repeat([]byte{7}, 16)}
	_ = f.m.EncryptInit(h, cbc, key)
	if _, rv := f.m.EncryptFinal(h, Out{Query: true}); rv != CKR_OK {
		t.Fatal(rv)
	}
	if ct, rv := f.m.Encrypt(h, []byte("attack at dawn, attack!"), Out{Cap: 64}); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("C_Encrypt after EncryptFinal's length query: %#x with %d bytes, want CKR_OPERATION_ACTIVE", rv, len(ct))
	}
	_ = f.m.EncryptInit(h, cbc, key)
	if _, rv := f.m.EncryptFinal(h, Out{Query: true}); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, _, rv := f.m.EncryptUpdate(h, []byte("more"), Out{Cap: 64}); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("EncryptUpdate after EncryptFinal's length query: %#x, want CKR_OPERATION_ACTIVE", rv)
	}
	if _, rv := f.m.EncryptFinal(h, Out{Cap: 64}); rv != CKR_OPERATION_NOT_INITIALIZED {
		t.Fatalf("EncryptFinal after the refused EncryptUpdate: %#x, want the operation ended", rv)
	}
}

// TestLoginRacingTheLastClose: closing a token's last session logs it out,
// also while a C_Login on that session is opening the sealed key: the
// login fails with CKR_SESSION_CLOSED (unless it finished first), and a
// session opened afterwards is not logged in.
func TestLoginRacingTheLastClose(t *testing.T) {
	f := newFixture(t, "1234-pin")
	f.createKey("private", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	for round := range 3 {
		h := f.open()
		done := make(chan uint64)
		go func() { done <- f.m.Login(h, CKU_USER, []byte("1234-pin")) }()
		time.Sleep(5 * time.Millisecond) // into the sealed key's key derivation
		if rv := f.m.CloseSession(h); rv != CKR_OK {
			t.Fatal(rv)
		}
		if rv := <-done; rv != CKR_SESSION_CLOSED && rv != CKR_OK {
			t.Fatalf("round %d: Login on a session closed meanwhile: %#x", round, rv)
		}
		h2 := f.open()
		if got := f.find(h2); len(got) != 0 {
			t.Fatalf("round %d: %d objects visible in a new session: the token stayed logged in after its last session closed", round, len(got))
		}
		_ = f.m.CloseSession(h2)
	}
}
