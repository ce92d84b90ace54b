package keys

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
)

// EncryptionAlgorithm names an Encrypt/Decrypt algorithm as AWS KMS does.
type EncryptionAlgorithm string

// Encryption algorithms.
const (
	EncryptionSymmetricDefault EncryptionAlgorithm = "SYMMETRIC_DEFAULT" // AES-256-GCM, ciphertext blob of ciphertext.go
	EncryptionRSAESOAEPSHA1    EncryptionAlgorithm = "RSAES_OAEP_SHA_1"
	EncryptionRSAESOAEPSHA256  EncryptionAlgorithm = "RSAES_OAEP_SHA_256"
)

// AllEncryptionAlgorithms lists every encryption algorithm in a stable order.
var AllEncryptionAlgorithms = []EncryptionAlgorithm{
	EncryptionSymmetricDefault, EncryptionRSAESOAEPSHA1, EncryptionRSAESOAEPSHA256,
}

// Valid reports whether a is a known encryption algorithm.
func (a EncryptionAlgorithm) Valid() bool {
	switch a {
	case EncryptionSymmetricDefault, EncryptionRSAESOAEPSHA1, EncryptionRSAESOAEPSHA256:
		return true
	}
	return false
}

// IsOAEP reports whether a is an RSAES-OAEP algorithm.
func (a EncryptionAlgorithm) IsOAEP() bool {
	return a == EncryptionRSAESOAEPSHA1 || a == EncryptionRSAESOAEPSHA256
}

// Hash is the OAEP hash (used for both the label hash and MGF1, as AWS KMS
// does), or 0 for algorithms that are not OAEP.
func (a EncryptionAlgorithm) Hash() crypto.Hash {
	switch a {
	case EncryptionRSAESOAEPSHA1:
		return crypto.SHA1
	case EncryptionRSAESOAEPSHA256:
		return crypto.SHA256
	}
	return 0
}

// SigningAlgorithm names a Sign/Verify algorithm as AWS KMS does.
type SigningAlgorithm string

// Signing algorithms.
const (
	SigningRSASSAPSSSHA256      SigningAlgorithm = "RSASSA_PSS_SHA_256"
	SigningRSASSAPSSSHA384      SigningAlgorithm = "RSASSA_PSS_SHA_384"
	SigningRSASSAPSSSHA512      SigningAlgorithm = "RSASSA_PSS_SHA_512"
	SigningRSASSAPKCS1V15SHA256 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_256"
	SigningRSASSAPKCS1V15SHA384 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_384"
	SigningRSASSAPKCS1V15SHA512 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_512"
	SigningECDSASHA256          SigningAlgorithm = "ECDSA_SHA_256"
	SigningECDSASHA384          SigningAlgorithm = "ECDSA_SHA_384"
	SigningECDSASHA512          SigningAlgorithm = "ECDSA_SHA_512"
)

// AllSigningAlgorithms lists every signing algorithm in a stable order.
var AllSigningAlgorithms = []SigningAlgorithm{
	SigningRSASSAPSSSHA256, SigningRSASSAPSSSHA384, SigningRSASSAPSSSHA512,
	SigningRSASSAPKCS1V15SHA256, SigningRSASSAPKCS1V15SHA384, SigningRSASSAPKCS1V15SHA512,
	SigningECDSASHA256, SigningECDSASHA384, SigningECDSASHA512,
}

// Valid reports whether a is a known signing algorithm.
func (a SigningAlgorithm) Valid() bool { return a.Hash() != 0 }

// IsPSS reports whether a is RSASSA-PSS. AWS KMS uses a salt as long as the
// hash and MGF1 with the same hash.
func (a SigningAlgorithm) IsPSS() bool {
	return a == SigningRSASSAPSSSHA256 || a == SigningRSASSAPSSSHA384 || a == SigningRSASSAPSSSHA512
}

// IsPKCS1v15 reports whether a is RSASSA-PKCS1-v1_5.
func (a SigningAlgorithm) IsPKCS1v15() bool {
	return a == SigningRSASSAPKCS1V15SHA256 || a == SigningRSASSAPKCS1V15SHA384 ||
		a == SigningRSASSAPKCS1V15SHA512
}

// IsECDSA reports whether a is ECDSA.
func (a SigningAlgorithm) IsECDSA() bool {
	return a == SigningECDSASHA256 || a == SigningECDSASHA384 || a == SigningECDSASHA512
}

// Hash is the message digest of a, or 0 if a is not a known algorithm.
func (a SigningAlgorithm) Hash() crypto.Hash {
	switch a {
	case SigningRSASSAPSSSHA256, SigningRSASSAPKCS1V15SHA256, SigningECDSASHA256:
		return crypto.SHA256
	case SigningRSASSAPSSSHA384, SigningRSASSAPKCS1V15SHA384, SigningECDSASHA384:
		return crypto.SHA384
	case SigningRSASSAPSSSHA512, SigningRSASSAPKCS1V15SHA512, SigningECDSASHA512:
		return crypto.SHA512
	}
	return 0
}

// MacAlgorithm names a GenerateMac/VerifyMac algorithm as AWS KMS does.
type MacAlgorithm string

// MAC algorithms.
const (
	MacHMACSHA256 MacAlgorithm = "HMAC_SHA_256"
	MacHMACSHA384 MacAlgorithm = "HMAC_SHA_384"
	MacHMACSHA512 MacAlgorithm = "HMAC_SHA_512"
)

// AllMacAlgorithms lists every MAC algorithm in a stable order.
var AllMacAlgorithms = []MacAlgorithm{MacHMACSHA256, MacHMACSHA384, MacHMACSHA512}

// Valid reports whether a is a known MAC algorithm.
func (a MacAlgorithm) Valid() bool { return a.Hash() != 0 }

// Hash is the hash underlying the HMAC, or 0 if a is not a known algorithm.
func (a MacAlgorithm) Hash() crypto.Hash {
	switch a {
	case MacHMACSHA256:
		return crypto.SHA256
	case MacHMACSHA384:
		return crypto.SHA384
	case MacHMACSHA512:
		return crypto.SHA512
	}
	return 0
}

// DataKeySpec names the size of a symmetric data key from GenerateDataKey.
type DataKeySpec string

// Data key specs.
const (
	DataKeyAES256 DataKeySpec = "AES_256"
	DataKeyAES128 DataKeySpec = "AES_128"
)

// AllDataKeySpecs lists every data key spec in a stable order.
var AllDataKeySpecs = []DataKeySpec{DataKeyAES256, DataKeyAES128}

// Valid reports whether s is a known data key spec.
func (s DataKeySpec) Valid() bool { return s.Bytes() != 0 }

// Bytes is the key length of s in bytes, or 0 if s is not known.
func (s DataKeySpec) Bytes() int {
	switch s {
	case DataKeyAES256:
		return 32
	case DataKeyAES128:
		return 16
	}
	return 0
}

// DataKeyPairSpec names the kind of key pair GenerateDataKeyPair returns.
type DataKeyPairSpec string

// Data key pair specs.
const (
	DataKeyPairRSA2048     DataKeyPairSpec = "RSA_2048"
	DataKeyPairRSA3072     DataKeyPairSpec = "RSA_3072"
	DataKeyPairRSA4096     DataKeyPairSpec = "RSA_4096"
	DataKeyPairECCNISTP256 DataKeyPairSpec = "ECC_NIST_P256"
	DataKeyPairECCNISTP384 DataKeyPairSpec = "ECC_NIST_P384"
	DataKeyPairECCNISTP521 DataKeyPairSpec = "ECC_NIST_P521"
)

// AllDataKeyPairSpecs lists every data key pair spec in a stable order.
var AllDataKeyPairSpecs = []DataKeyPairSpec{
	DataKeyPairRSA2048, DataKeyPairRSA3072, DataKeyPairRSA4096,
	DataKeyPairECCNISTP256, DataKeyPairECCNISTP384, DataKeyPairECCNISTP521,
}

// Valid reports whether s is a known data key pair spec.
func (s DataKeyPairSpec) Valid() bool { return s.Spec() != "" }

// Spec is the key spec with the same kind of key material as s, or "" if s
// is not known. A data key pair is generated like a customer key of that spec.
func (s DataKeyPairSpec) Spec() Spec {
	switch s {
	case DataKeyPairRSA2048:
		return SpecRSA2048
	case DataKeyPairRSA3072:
		return SpecRSA3072
	case DataKeyPairRSA4096:
		return SpecRSA4096
	case DataKeyPairECCNISTP256:
		return SpecECCNISTP256
	case DataKeyPairECCNISTP384:
		return SpecECCNISTP384
	case DataKeyPairECCNISTP521:
		return SpecECCNISTP521
	}
	return ""
}

// MessageType says whether Sign/Verify get the message or its digest.
type MessageType string

// Message types. An empty MessageType means MessageRaw, as in AWS KMS.
const (
	MessageRaw    MessageType = "RAW"
	MessageDigest MessageType = "DIGEST"
)

// AllMessageTypes lists every message type in a stable order.
var AllMessageTypes = []MessageType{MessageRaw, MessageDigest}

// Valid reports whether t is a known message type.
func (t MessageType) Valid() bool { return t == MessageRaw || t == MessageDigest }

// AllowedUsages lists the usages a key of spec s may be created with, or nil
// if s is not known.
func (s Spec) AllowedUsages() []Usage {
	switch {
	case s == SpecSymmetricDefault:
		return []Usage{UsageEncryptDecrypt, UsageRawEncryptDecrypt}
	case s.IsRSA():
		return []Usage{UsageEncryptDecrypt, UsageSignVerify}
	case s.IsEC():
		return []Usage{UsageSignVerify}
	case s.IsHMAC():
		return []Usage{UsageGenerateVerifyMAC}
	}
	return nil
}

// Family is the kind of key AWS KMS compares when an alias moves to
// another key (UpdateAlias): "symmetric", "asymmetric" or "hmac".
func (s Spec) Family() string {
	switch {
	case s.IsAsymmetric():
		return "asymmetric"
	case s.IsHMAC():
		return "hmac"
	}
	return "symmetric"
}

// AllowsUsage reports whether a key of spec s may have usage u.
func (s Spec) AllowsUsage(u Usage) bool { return slices.Contains(s.AllowedUsages(), u) }

// DefaultUsage is the usage CreateKey assumes when the request names none.
// RSA keys have no default: AWS KMS requires the caller to choose between
// encryption and signing, so DefaultUsage returns "" and ValidateCreate
// rejects the request.
func (s Spec) DefaultUsage() Usage {
	switch {
	case s == SpecSymmetricDefault:
		return UsageEncryptDecrypt
	case s.IsEC():
		return UsageSignVerify
	case s.IsHMAC():
		return UsageGenerateVerifyMAC
	}
	return ""
}

// EncryptionAlgorithms lists the encryption algorithms a key of spec s and
// usage u supports; nil if it cannot encrypt.
func (s Spec) EncryptionAlgorithms(u Usage) []EncryptionAlgorithm {
	if u != UsageEncryptDecrypt || !s.AllowsUsage(u) {
		return nil
	}
	if s.IsRSA() {
		return []EncryptionAlgorithm{EncryptionRSAESOAEPSHA1, EncryptionRSAESOAEPSHA256}
	}
	return []EncryptionAlgorithm{EncryptionSymmetricDefault}
}

// SigningAlgorithms lists the signing algorithms a key of spec s and usage u
// supports; nil if it cannot sign. Each EC curve has exactly one ECDSA
// algorithm, as in AWS KMS: P-256 with SHA-256, P-384 with SHA-384 and P-521
// with SHA-512.
func (s Spec) SigningAlgorithms(u Usage) []SigningAlgorithm {
	if u != UsageSignVerify || !s.AllowsUsage(u) {
		return nil
	}
	switch s {
	case SpecECCNISTP256:
		return []SigningAlgorithm{SigningECDSASHA256}
	case SpecECCNISTP384:
		return []SigningAlgorithm{SigningECDSASHA384}
	case SpecECCNISTP521:
		return []SigningAlgorithm{SigningECDSASHA512}
	}
	return []SigningAlgorithm{
		SigningRSASSAPSSSHA256, SigningRSASSAPSSSHA384, SigningRSASSAPSSSHA512,
		SigningRSASSAPKCS1V15SHA256, SigningRSASSAPKCS1V15SHA384, SigningRSASSAPKCS1V15SHA512,
	}
}

// MacAlgorithms lists the MAC algorithms of an HMAC spec: each HMAC key size
// has the one algorithm with the matching hash. Nil for other specs.
func (s Spec) MacAlgorithms() []MacAlgorithm {
	switch s {
	case SpecHMAC256:
		return []MacAlgorithm{MacHMACSHA256}
	case SpecHMAC384:
		return []MacAlgorithm{MacHMACSHA384}
	case SpecHMAC512:
		return []MacAlgorithm{MacHMACSHA512}
	}
	return nil
}

// PlaintextLimit is the largest plaintext, in bytes, that a key of spec s can
// encrypt with algorithm a, or 0 if s cannot use a.
func (s Spec) PlaintextLimit(a EncryptionAlgorithm) int {
	switch {
	case s == SpecSymmetricDefault && a == EncryptionSymmetricDefault:
		return MaxPlaintext
	case s.IsRSA() && a.IsOAEP():
		return RSAOAEPMaxPlaintext(s.RSABits(), a.Hash())
	}
	return 0
}

// RSAOAEPMaxPlaintext is the largest message RSAES-OAEP can encrypt under a
// modulus of bits bits with hash h (RFC 8017, 7.1.1: k - 2*hLen - 2). It is 0
// for hashes it does not know and for moduli too small to hold any message.
func RSAOAEPMaxPlaintext(bits int, h crypto.Hash) int {
	var hLen int
	switch h { // crypto.Hash.Size panics on unknown values
	case crypto.SHA1:
		hLen = 20
	case crypto.SHA224:
		hLen = 28
	case crypto.SHA256:
		hLen = 32
	case crypto.SHA384:
		hLen = 48
	case crypto.SHA512:
		hLen = 64
	default:
		return 0
	}
	if bits <= 0 {
		return 0
	}
	k := (bits + 7) / 8
	return max(k-2*hLen-2, 0)
}

// ErrInvalidKeyUsage means the request is well formed but the key cannot do
// what it asks: encrypting with a signing key, or an algorithm the key's spec
// does not support. AWS KMS calls this InvalidKeyUsageException; it is
// deliberately not ErrInvalidArgument, so that fronts can tell the two apart.
var ErrInvalidKeyUsage = errors.New("keys: key usage does not permit the operation")

// UsageError is an ErrInvalidKeyUsage that says what the key cannot do. Its
// message is only that, as a caller reads it: the exception
// (InvalidKeyUsageException) already says what kind of error it is.
type UsageError struct{ Problem string }

func (e *UsageError) Error() string { return e.Problem }

// Unwrap makes errors.Is(err, ErrInvalidKeyUsage) hold.
func (e *UsageError) Unwrap() error { return ErrInvalidKeyUsage }

// keyUsageError names spec and usage only when they are known values, so the
// message never carries arbitrary bytes.
func keyUsageError(s Spec, u Usage, what string) error {
	spec, usage := "unknown", "unknown"
	if s.Valid() {
		spec = string(s)
	}
	if u.Valid() {
		usage = string(u)
	}
	return &UsageError{Problem: fmt.Sprintf("%s key with usage %s does not support %s", spec, usage, what)}
}

// CheckEncryptionAlgorithm checks that a key of spec s and usage u can encrypt
// with a and returns the algorithm to use. An empty a means
// EncryptionSymmetricDefault, as in AWS KMS, so RSA keys need it named. An
// unknown a is a *FieldError; a known one the key cannot use matches
// ErrInvalidKeyUsage.
func CheckEncryptionAlgorithm(s Spec, u Usage, a EncryptionAlgorithm) (EncryptionAlgorithm, error) {
	if a == "" {
		a = EncryptionSymmetricDefault
	}
	if !a.Valid() {
		return "", fieldError("EncryptionAlgorithm", "must be one of %s", join(AllEncryptionAlgorithms))
	}
	if !slices.Contains(s.EncryptionAlgorithms(u), a) {
		return "", keyUsageError(s, u, string(a))
	}
	return a, nil
}

// CheckSigningAlgorithm checks that a key of spec s and usage u can sign with
// a. The algorithm is required. An unknown a is a *FieldError; a known one
// the key cannot use matches ErrInvalidKeyUsage.
func CheckSigningAlgorithm(s Spec, u Usage, a SigningAlgorithm) error {
	if a == "" {
		return fieldError("SigningAlgorithm", "is required")
	}
	if !a.Valid() {
		return fieldError("SigningAlgorithm", "must be one of %s", join(AllSigningAlgorithms))
	}
	if !slices.Contains(s.SigningAlgorithms(u), a) {
		return keyUsageError(s, u, string(a))
	}
	return nil
}

// CheckMacAlgorithm checks that a key of spec s and usage u can compute MACs
// with a. The algorithm is required. An unknown a is a *FieldError; a known
// one the key cannot use matches ErrInvalidKeyUsage.
func CheckMacAlgorithm(s Spec, u Usage, a MacAlgorithm) error {
	if a == "" {
		return fieldError("MacAlgorithm", "is required")
	}
	if !a.Valid() {
		return fieldError("MacAlgorithm", "must be one of %s", join(AllMacAlgorithms))
	}
	if u != UsageGenerateVerifyMAC || !slices.Contains(s.MacAlgorithms(), a) {
		return keyUsageError(s, u, string(a))
	}
	return nil
}
