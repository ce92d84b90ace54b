// Package keys is the key model of hsmbroker: key specs, usages, states and
// algorithms, the symmetric ciphertext blob format, the canonical encoding of
// encryption contexts, and validation of request fields. It is pure Go and
// does no I/O; every other package names keys through these types.
package keys

// Spec is the kind of key material, named as AWS KMS names it.
type Spec string

// Key specs.
const (
	SpecSymmetricDefault Spec = "SYMMETRIC_DEFAULT" // AES-256-GCM
	SpecRSA2048          Spec = "RSA_2048"
	SpecRSA3072          Spec = "RSA_3072"
	SpecRSA4096          Spec = "RSA_4096"
	SpecECCNISTP256      Spec = "ECC_NIST_P256"
	SpecECCNISTP384      Spec = "ECC_NIST_P384"
	SpecECCNISTP521      Spec = "ECC_NIST_P521"
	SpecHMAC256          Spec = "HMAC_256"
	SpecHMAC384          Spec = "HMAC_384"
	SpecHMAC512          Spec = "HMAC_512"
)

// Specs lists every supported key spec in a stable order.
var Specs = []Spec{
	SpecSymmetricDefault,
	SpecRSA2048, SpecRSA3072, SpecRSA4096,
	SpecECCNISTP256, SpecECCNISTP384, SpecECCNISTP521,
	SpecHMAC256, SpecHMAC384, SpecHMAC512,
}

// Usage is what a key may be used for.
type Usage string

// Key usages.
const (
	UsageEncryptDecrypt    Usage = "ENCRYPT_DECRYPT"
	UsageSignVerify        Usage = "SIGN_VERIFY"
	UsageGenerateVerifyMAC Usage = "GENERATE_VERIFY_MAC"
)

// State is the lifecycle state of a key.
type State string

// Key states.
const (
	StateEnabled         State = "Enabled"
	StateDisabled        State = "Disabled"
	StatePendingDeletion State = "PendingDeletion"
)

// IsRSA reports whether s is an RSA key spec.
func (s Spec) IsRSA() bool { return s == SpecRSA2048 || s == SpecRSA3072 || s == SpecRSA4096 }

// IsEC reports whether s is an elliptic-curve key spec.
func (s Spec) IsEC() bool {
	return s == SpecECCNISTP256 || s == SpecECCNISTP384 || s == SpecECCNISTP521
}

// IsHMAC reports whether s is an HMAC key spec.
func (s Spec) IsHMAC() bool { return s == SpecHMAC256 || s == SpecHMAC384 || s == SpecHMAC512 }

// IsAsymmetric reports whether keys of spec s have a public half.
func (s Spec) IsAsymmetric() bool { return s.IsRSA() || s.IsEC() }

// Valid reports whether s is a supported key spec.
func (s Spec) Valid() bool {
	for _, v := range Specs {
		if v == s {
			return true
		}
	}
	return false
}

// RSABits is the modulus size of an RSA spec, 0 for others.
func (s Spec) RSABits() int {
	switch s {
	case SpecRSA2048:
		return 2048
	case SpecRSA3072:
		return 3072
	case SpecRSA4096:
		return 4096
	}
	return 0
}
