package keys

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// VerifySignature checks sig over digest with a DER SubjectPublicKeyInfo
// public key, as alg prescribes (PSS with salt length = hash length, as AWS
// KMS signs; ECDSA signatures DER-encoded). Verification needs only the
// public key, so it runs here rather than in the HSM. It returns false for
// a signature that does not verify and an error only for unusable inputs
// (a public key that does not parse or does not fit alg).
func VerifySignature(publicKeyDER []byte, alg SigningAlgorithm, digest, sig []byte) (bool, error) {
	pub, err := x509.ParsePKIXPublicKey(publicKeyDER)
	if err != nil {
		return false, fmt.Errorf("parse public key: %w", err)
	}
	h := alg.Hash()
	if h == 0 || len(digest) != h.Size() {
		return false, &FieldError{Field: "Message", Problem: fmt.Sprintf("digest for %s must be %d bytes", alg, h.Size())}
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch {
		case alg.IsPSS():
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}) == nil, nil
		case alg.IsPKCS1v15():
			return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil, nil
		}
	case *ecdsa.PublicKey:
		if alg.IsECDSA() {
			return ecdsa.VerifyASN1(k, digest, sig), nil
		}
	}
	return false, &UsageError{Problem: fmt.Sprintf("%s does not fit a %T public key", alg, pub)}
}
