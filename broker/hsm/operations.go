package hsm

import (
	"context"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/hsmbroker/hsmbroker/keys"
	"github.com/miekg/pkcs11"
)

// GCM parameters: 96-bit IVs and 128-bit tags, as the ciphertext blob
// format fixes them.
const (
	GCMIVSize  = 12
	GCMTagSize = 16
)

// MaxGCMInput bounds a single AES-GCM call. It covers the 4096-byte
// plaintext limit of Encrypt and GenerateDataKey with room for the largest
// data key pair blob.
const MaxGCMInput = 64 << 10

// EncryptGCM encrypts plaintext with key k (AES-256) under the given IV and
// additional authenticated data. It returns ciphertext||tag.
func (p *Partition) EncryptGCM(ctx context.Context, k KeyRef, iv, plaintext, aad []byte) ([]byte, error) {
	if err := checkGCMEncrypt(k, iv, len(plaintext)); err != nil {
		return nil, err
	}
	var out []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		out, err = p.m.Once(sh, gcmArgs(opEncrypt, h, iv, aad, plaintext, 0))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt with key %s: %w", k.ID, err)
	}
	return out, nil
}

// SealRandomGCM makes n random bytes and encrypts them as EncryptGCM does.
// It returns the random bytes and their ciphertext||tag. A draw of up to
// pooledRandomMax bytes (a data key) is the token's bytes from the
// partition's pool, masked with the operating system's (random_pool.go),
// then one EncryptGCM; a larger one draws from the token and seals on one
// session in one call. Its results are unnamed: the closure outlives an
// abandoned call (Partition.call).
func (p *Partition) SealRandomGCM(ctx context.Context, k KeyRef, n int, iv, aad []byte) ([]byte, []byte, error) {
	if err := checkRandomCount(n); err != nil {
		return nil, nil, err
	}
	if err := checkGCMEncrypt(k, iv, n); err != nil {
		return nil, nil, err
	}
	if n <= pooledRandomMax {
		r, err := p.pooledRandom(ctx, n)
		if err != nil {
			return nil, nil, fmt.Errorf("seal random bytes with key %s: %w", k.ID, err)
		}
		sealed, err := p.EncryptGCM(ctx, k, iv, r, aad)
		if err != nil {
			clear(r)
			return nil, nil, err
		}
		return r, sealed, nil
	}
	var random, sealed []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		r := make([]byte, n)
		out, err := p.m.Once(sh, gcmArgs(opEncrypt, h, iv, aad, r, n))
		if err != nil {
			clear(r)
			return err
		}
		random, sealed = r, out
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("seal random bytes with key %s: %w", k.ID, err)
	}
	return random, sealed, nil
}

func checkGCMEncrypt(k KeyRef, iv []byte, plaintextLen int) error {
	if len(iv) != GCMIVSize {
		return fmt.Errorf("%w: GCM IV must be %d bytes, got %d", ErrInvalidInput, GCMIVSize, len(iv))
	}
	if plaintextLen > MaxGCMInput {
		return fmt.Errorf("%w: plaintext of %d bytes exceeds %d", ErrInvalidInput, plaintextLen, MaxGCMInput)
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage == keys.UsageRawEncryptDecrypt {
		return fmt.Errorf("%w: AES-GCM needs a SYMMETRIC_DEFAULT key, not %s %s", ErrInvalidInput, k.Spec, k.Usage)
	}
	return nil
}

// gcmArgs is one AES-GCM call with a 128-bit tag. For opEncrypt with
// randomLen > 0, in is filled from the token's RNG and then sealed.
func gcmArgs(op onceOp, h pkcs11.ObjectHandle, iv, aad, in []byte, randomLen int) onceArgs {
	a := onceArgs{op: op, mech: pkcs11.CKM_AES_GCM, key: h, iv: iv, aad: aad, randomLen: randomLen, in: in}
	if op == opEncrypt {
		a.outLen = len(in) + GCMTagSize
	} else {
		a.outLen = len(in)
	}
	return a
}

// DecryptGCM reverses EncryptGCM. Every authentication or format failure is
// the same ErrDecrypt.
func (p *Partition) DecryptGCM(ctx context.Context, k KeyRef, iv, sealed, aad []byte) ([]byte, error) {
	if len(iv) != GCMIVSize || len(sealed) < GCMTagSize || len(sealed) > MaxGCMInput+GCMTagSize {
		return nil, ErrDecrypt
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage == keys.UsageRawEncryptDecrypt {
		return nil, fmt.Errorf("%w: AES-GCM needs a SYMMETRIC_DEFAULT key, not %s %s", ErrInvalidInput, k.Spec, k.Usage)
	}
	var out []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		out, err = p.m.Once(sh, gcmArgs(opDecrypt, h, iv, aad, sealed, 0))
		return p.decryptResult(sh, err)
	})
	if err != nil {
		return nil, decryptError(k, err)
	}
	return out, nil
}

// decryptResult turns a C_Decrypt failure caused by the input into the
// uniform ErrDecrypt, inside the session closure where the session's health
// can still be checked.
func (p *Partition) decryptResult(sh pkcs11.SessionHandle, err error) error {
	if err != nil && p.inputRejected(sh, err) {
		return ErrDecrypt
	}
	return err
}

// decryptError collapses token-side decryption failures into ErrDecrypt and
// leaves availability errors (retryable) as they are.
func decryptError(k KeyRef, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrDecrypt) {
		return ErrDecrypt
	}
	if code, ok := ckrOf(err); ok {
		switch sentinelFor(code) {
		case ErrDecrypt, ErrInvalidInput:
			return ErrDecrypt
		}
	}
	return fmt.Errorf("decrypt with key %s: %w", k.ID, err)
}

var hashMechs = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA1:   {pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1},
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

// DecryptOAEP decrypts an RSAES-OAEP ciphertext (MGF1 with the same hash,
// empty label) with RSA key k. SHA-1 always runs natively; SHA-256 runs
// natively where the token supports it and otherwise through the
// software-unpadding path (see OAEPMode). Every failure is ErrDecrypt.
func (p *Partition) DecryptOAEP(ctx context.Context, k KeyRef, hash crypto.Hash, ciphertext []byte) ([]byte, error) {
	if !k.Spec.IsRSA() {
		return nil, fmt.Errorf("%w: RSA-OAEP needs an RSA key, not %s", ErrInvalidInput, k.Spec)
	}
	if hash != crypto.SHA1 && hash != crypto.SHA256 {
		return nil, fmt.Errorf("%w: RSA-OAEP hash %v", ErrUnsupported, hash)
	}
	if len(ciphertext) != k.Spec.RSABits()/8 {
		return nil, ErrDecrypt
	}
	mode := p.oaepNative.Load()
	if hash == crypto.SHA1 || mode != oaepNo {
		out, err := p.decryptOAEPNative(ctx, k, hash, ciphertext)
		if hash == crypto.SHA256 && mode == oaepUnknown && oaepParamsRejected(err) {
			p.oaepNative.Store(oaepNo)
			p.log.Info("token rejects RSA-OAEP with SHA-256; using CKM_RSA_X_509 with OAEP unpadding in the broker")
			return p.decryptOAEPSoftware(ctx, k, hash, ciphertext)
		}
		if err == nil && hash == crypto.SHA256 && mode == oaepUnknown {
			p.oaepNative.Store(oaepYes)
		}
		if err != nil && hash == crypto.SHA256 && mode == oaepYes && oaepParamsRejected(err) {
			return nil, fmt.Errorf("%w: token rejects RSA-OAEP with SHA-256 (configure OAEP mode software)", ErrUnsupported)
		}
		return out, decryptError(k, err)
	}
	return p.decryptOAEPSoftware(ctx, k, hash, ciphertext)
}

// oaepParamsRejected: the token does not take these OAEP parameters.
func oaepParamsRejected(err error) bool {
	code, ok := ckrOf(err)
	return ok && (code == pkcs11.CKR_ARGUMENTS_BAD || code == pkcs11.CKR_MECHANISM_PARAM_INVALID)
}

func (p *Partition) decryptOAEPNative(ctx context.Context, k KeyRef, hash crypto.Hash, ciphertext []byte) ([]byte, error) {
	hm := hashMechs[hash]
	var out []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		out, err = p.m.Once(sh, onceArgs{op: opDecrypt, mech: pkcs11.CKM_RSA_PKCS_OAEP, param: oaepParams(hm.hash, hm.mgf),
			key: h, in: ciphertext, outLen: len(ciphertext)})
		return p.decryptResult(sh, err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decryptOAEPSoftware runs the RSA private-key operation in the token
// (CKM_RSA_X_509, raw) and removes the OAEP encoding here, in constant time.
// The encoded message is as secret as the plaintext it carries, which the
// caller receives anyway; it lives only in this function's memory.
func (p *Partition) decryptOAEPSoftware(ctx context.Context, k KeyRef, hash crypto.Hash, ciphertext []byte) ([]byte, error) {
	var em []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		em, err = p.m.Once(sh, onceArgs{op: opDecrypt, mech: pkcs11.CKM_RSA_X_509, key: h, in: ciphertext, outLen: len(ciphertext)})
		return p.decryptResult(sh, err)
	})
	if err != nil {
		return nil, decryptError(k, err)
	}
	defer clear(em)
	out, ok := oaepDecode(hash, k.Spec.RSABits()/8, em)
	if !ok {
		return nil, ErrDecrypt
	}
	return out, nil
}

// SignDigest signs a message digest with key k. RSA PKCS#1 v1.5 and PSS
// (salt length = hash length, MGF1 with the same hash, as AWS KMS does) and
// ECDSA are supported; ECDSA signatures are returned DER-encoded.
func (p *Partition) SignDigest(ctx context.Context, k KeyRef, alg keys.SigningAlgorithm, digest []byte) ([]byte, error) {
	h := alg.Hash()
	if h == 0 || len(digest) != h.Size() {
		return nil, fmt.Errorf("%w: digest for %s must be %d bytes, got %d", ErrInvalidInput, alg, h.Size(), len(digest))
	}
	a := onceArgs{op: opSign, in: digest, outLen: maxSignature}
	switch {
	case alg.IsPKCS1v15() && k.Spec.IsRSA():
		a.mech, a.in = pkcs11.CKM_RSA_PKCS, keys.DigestInfo(h, digest)
	case alg.IsPSS() && k.Spec.IsRSA():
		hm := hashMechs[h]
		a.mech, a.param = pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(hm.hash, hm.mgf, uint(h.Size()))
	case alg.IsECDSA() && k.Spec.IsEC():
		a.mech = pkcs11.CKM_ECDSA
	default:
		return nil, fmt.Errorf("%w: signing algorithm %s does not fit key spec %s", ErrInvalidInput, alg, k.Spec)
	}
	var sig []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
		a.key = oh
		var err error
		sig, err = p.m.Once(sh, a)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", k.ID, err)
	}
	if alg.IsECDSA() {
		return ecdsaRawToDER(sig)
	}
	return sig, nil
}

// maxSignature is the longest signature a key spec makes: RSA-4096's 512
// bytes (P-521's raw r||s is 132, HMAC-SHA-512's 64).
const maxSignature = 512

// ecdsaRawToDER converts PKCS#11's r||s to the DER SEQUENCE {r, s} that
// X.509, OpenSSL and AWS KMS use. It writes the DER itself: through
// encoding/asn1 and math/big it took about 1.5% of the daemon's CPU per
// P-256 signature. FuzzECDSARawToDER holds it to asn1.Marshal.
func ecdsaRawToDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 || len(raw) > 2*66 {
		return nil, fmt.Errorf("%w: ECDSA signature of %d bytes from token", ErrInvalidInput, len(raw))
	}
	n := len(raw) / 2
	r, s := derUint(raw[:n]), derUint(raw[n:])
	body := 2 + len(r) + 2 + len(s) // each INTEGER is at most 67 bytes: a one-byte length
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	if body > 127 {
		out = append(out, 0x81)
	}
	out = append(out, byte(body), 0x02, byte(len(r)))
	out = append(out, r...)
	out = append(out, 0x02, byte(len(s)))
	return append(out, s...), nil
}

// derUint is the content of a DER INTEGER holding the unsigned big-endian
// b: no leading zero bytes, except one where the top bit would read as a
// sign, and a single zero for zero.
func derUint(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	if b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}

var hmacMechs = map[crypto.Hash]uint{
	crypto.SHA256: pkcs11.CKM_SHA256_HMAC,
	crypto.SHA384: pkcs11.CKM_SHA384_HMAC,
	crypto.SHA512: pkcs11.CKM_SHA512_HMAC,
}

// MaxMACInput bounds GenerateMac input, as AWS KMS does.
const MaxMACInput = 4096

// MAC computes an HMAC of message with key k.
func (p *Partition) MAC(ctx context.Context, k KeyRef, alg keys.MacAlgorithm, message []byte) ([]byte, error) {
	mech, ok := hmacMechs[alg.Hash()]
	if !ok || !k.Spec.IsHMAC() {
		return nil, fmt.Errorf("%w: MAC algorithm %s does not fit key spec %s", ErrInvalidInput, alg, k.Spec)
	}
	if len(message) > MaxMACInput {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrInvalidInput, len(message), MaxMACInput)
	}
	var mac []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		mac, err = p.m.Once(sh, onceArgs{op: opSign, mech: mech, key: h, in: message, outLen: alg.Hash().Size()})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("MAC with key %s: %w", k.ID, err)
	}
	return mac, nil
}

// VerifyMAC recomputes the HMAC and compares it in constant time.
func (p *Partition) VerifyMAC(ctx context.Context, k KeyRef, alg keys.MacAlgorithm, message, mac []byte) (bool, error) {
	want, err := p.MAC(ctx, k, alg, message)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(want, mac) == 1, nil
}

// MaxRandom bounds one GenerateRandom call.
const MaxRandom = 1024

func checkRandomCount(n int) error {
	if n < 1 || n > MaxRandom {
		return fmt.Errorf("%w: random byte count must be 1 to %d, got %d", ErrInvalidInput, MaxRandom, n)
	}
	return nil
}

// Random returns n bytes from the token's random number generator.
func (p *Partition) Random(ctx context.Context, n int) ([]byte, error) {
	if err := checkRandomCount(n); err != nil {
		return nil, err
	}
	var out []byte
	err := p.do(ctx, func(sh pkcs11.SessionHandle) error {
		var err error
		out, err = p.m.GenerateRandom(sh, n)
		return wrapP11("C_GenerateRandom", err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
