// Package keys is the key model of hsmbroker: key specs, usages, states and
// algorithms, key ids, the symmetric ciphertext blob format, the canonical
// encoding of encryption contexts, and validation of request fields. It is
// pure Go and does no I/O; every other package names keys through these types.
//
// The rules and limits follow AWS KMS so that the AWS-compatible front and the
// gRPC API accept and reject the same requests:
//
//   - spec.go and algorithms.go: which usages and algorithms each key spec
//     supports, and the hash behind each algorithm. An algorithm a key cannot
//     use is ErrInvalidKeyUsage (AWS's InvalidKeyUsageException).
//   - keyid.go: key ids, UUIDs in canonical lowercase text.
//   - ciphertext.go: the self-describing blob Encrypt returns and Decrypt
//     parses, and the AAD that binds its header and the context. Every
//     malformed blob gives the one ErrInvalidCiphertext.
//   - context.go: the canonical byte encoding of an encryption context.
//   - validate.go: request field checks. They return *FieldError, which
//     matches ErrInvalidArgument, names the field and the limit, and never
//     repeats a secret value.
//
// Everything here is safe for concurrent use; the exported slices (Specs,
// AllUsages, ...) are read-only by convention.
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
	// UsageRawEncryptDecrypt is a SYMMETRIC_DEFAULT key for raw AES with
	// the caller's IV (RawService, for PKCS#11 clients). A key is raw or
	// not from birth: a raw key never makes or opens the broker's
	// ciphertext format, an ENCRYPT_DECRYPT key never serves raw AES, and
	// raw keys do not rotate (raw ciphertext names no version).
	UsageRawEncryptDecrypt Usage = "RAW_ENCRYPT_DECRYPT"
)

// AllUsages lists every key usage in a stable order.
var AllUsages = []Usage{UsageEncryptDecrypt, UsageSignVerify, UsageGenerateVerifyMAC, UsageRawEncryptDecrypt}

// Valid reports whether u is a known key usage.
func (u Usage) Valid() bool {
	switch u {
	case UsageEncryptDecrypt, UsageSignVerify, UsageGenerateVerifyMAC, UsageRawEncryptDecrypt:
		return true
	}
	return false
}

// State is the lifecycle state of a key.
type State string

// Key states.
const (
	StateEnabled         State = "Enabled"
	StateDisabled        State = "Disabled"
	StatePendingDeletion State = "PendingDeletion"
)

// AllStates lists every key state in a stable order.
var AllStates = []State{StateEnabled, StateDisabled, StatePendingDeletion}

// Valid reports whether st is a known key state.
func (st State) Valid() bool {
	switch st {
	case StateEnabled, StateDisabled, StatePendingDeletion:
		return true
	}
	return false
}

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
