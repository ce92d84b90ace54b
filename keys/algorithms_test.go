package keys

import (
	"crypto"
	"errors"
	"slices"
	"testing"
)

func TestSpecUsages(t *testing.T) {
	tests := []struct {
		spec    Spec
		allowed []Usage
		def     Usage
	}{
		{SpecSymmetricDefault, []Usage{UsageEncryptDecrypt, UsageRawEncryptDecrypt}, UsageEncryptDecrypt},
		{SpecRSA2048, []Usage{UsageEncryptDecrypt, UsageSignVerify}, ""},
		{SpecRSA3072, []Usage{UsageEncryptDecrypt, UsageSignVerify}, ""},
		{SpecRSA4096, []Usage{UsageEncryptDecrypt, UsageSignVerify}, ""},
		{SpecECCNISTP256, []Usage{UsageSignVerify}, UsageSignVerify},
		{SpecECCNISTP384, []Usage{UsageSignVerify}, UsageSignVerify},
		{SpecECCNISTP521, []Usage{UsageSignVerify}, UsageSignVerify},
		{SpecHMAC256, []Usage{UsageGenerateVerifyMAC}, UsageGenerateVerifyMAC},
		{SpecHMAC384, []Usage{UsageGenerateVerifyMAC}, UsageGenerateVerifyMAC},
		{SpecHMAC512, []Usage{UsageGenerateVerifyMAC}, UsageGenerateVerifyMAC},
		{"", nil, ""},
		{"AES_256", nil, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.spec), func(t *testing.T) {
			if got := tt.spec.AllowedUsages(); !slices.Equal(got, tt.allowed) {
				t.Errorf("AllowedUsages() = %v, want %v", got, tt.allowed)
			}
			if got := tt.spec.DefaultUsage(); got != tt.def {
				t.Errorf("DefaultUsage() = %q, want %q", got, tt.def)
			}
			for _, u := range AllUsages {
				if got, want := tt.spec.AllowsUsage(u), slices.Contains(tt.allowed, u); got != want {
					t.Errorf("AllowsUsage(%s) = %v, want %v", u, got, want)
				}
			}
		})
	}
	if len(tests)-2 != len(Specs) {
		t.Errorf("table covers %d specs, Specs has %d", len(tests)-2, len(Specs))
	}
}

func TestSpecAlgorithms(t *testing.T) {
	rsaSign := []SigningAlgorithm{
		SigningRSASSAPSSSHA256, SigningRSASSAPSSSHA384, SigningRSASSAPSSSHA512,
		SigningRSASSAPKCS1V15SHA256, SigningRSASSAPKCS1V15SHA384, SigningRSASSAPKCS1V15SHA512,
	}
	oaep := []EncryptionAlgorithm{EncryptionRSAESOAEPSHA1, EncryptionRSAESOAEPSHA256}
	tests := []struct {
		spec Spec
		use  Usage
		enc  []EncryptionAlgorithm
		sign []SigningAlgorithm
		mac  []MacAlgorithm
	}{
		{SpecSymmetricDefault, UsageEncryptDecrypt, []EncryptionAlgorithm{EncryptionSymmetricDefault}, nil, nil},
		{SpecSymmetricDefault, UsageSignVerify, nil, nil, nil},
		{SpecRSA2048, UsageEncryptDecrypt, oaep, nil, nil},
		{SpecRSA3072, UsageEncryptDecrypt, oaep, nil, nil},
		{SpecRSA4096, UsageEncryptDecrypt, oaep, nil, nil},
		{SpecRSA2048, UsageSignVerify, nil, rsaSign, nil},
		{SpecRSA4096, UsageSignVerify, nil, rsaSign, nil},
		{SpecRSA2048, UsageGenerateVerifyMAC, nil, nil, nil},
		{SpecECCNISTP256, UsageSignVerify, nil, []SigningAlgorithm{SigningECDSASHA256}, nil},
		{SpecECCNISTP384, UsageSignVerify, nil, []SigningAlgorithm{SigningECDSASHA384}, nil},
		{SpecECCNISTP521, UsageSignVerify, nil, []SigningAlgorithm{SigningECDSASHA512}, nil},
		{SpecECCNISTP256, UsageEncryptDecrypt, nil, nil, nil},
		{SpecHMAC256, UsageGenerateVerifyMAC, nil, nil, []MacAlgorithm{MacHMACSHA256}},
		{SpecHMAC384, UsageGenerateVerifyMAC, nil, nil, []MacAlgorithm{MacHMACSHA384}},
		{SpecHMAC512, UsageGenerateVerifyMAC, nil, nil, []MacAlgorithm{MacHMACSHA512}},
		{SpecHMAC256, UsageSignVerify, nil, nil, []MacAlgorithm{MacHMACSHA256}},
		{"bogus", UsageEncryptDecrypt, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.spec)+"/"+string(tt.use), func(t *testing.T) {
			if got := tt.spec.EncryptionAlgorithms(tt.use); !slices.Equal(got, tt.enc) {
				t.Errorf("EncryptionAlgorithms = %v, want %v", got, tt.enc)
			}
			if got := tt.spec.SigningAlgorithms(tt.use); !slices.Equal(got, tt.sign) {
				t.Errorf("SigningAlgorithms = %v, want %v", got, tt.sign)
			}
			if got := tt.spec.MacAlgorithms(); !slices.Equal(got, tt.mac) {
				t.Errorf("MacAlgorithms = %v, want %v", got, tt.mac)
			}
		})
	}
}

// The lists a Spec returns are fresh, so a caller that edits one cannot
// change what the next caller gets.
func TestSpecAlgorithmListsAreCopies(t *testing.T) {
	got := SpecRSA2048.SigningAlgorithms(UsageSignVerify)
	got[0] = "changed"
	if SpecRSA2048.SigningAlgorithms(UsageSignVerify)[0] != SigningRSASSAPSSSHA256 {
		t.Fatal("SigningAlgorithms returned shared storage")
	}
}

func TestSigningAlgorithmProperties(t *testing.T) {
	tests := []struct {
		alg              SigningAlgorithm
		hash             crypto.Hash
		pss, pkcs1, ecds bool
	}{
		{SigningRSASSAPSSSHA256, crypto.SHA256, true, false, false},
		{SigningRSASSAPSSSHA384, crypto.SHA384, true, false, false},
		{SigningRSASSAPSSSHA512, crypto.SHA512, true, false, false},
		{SigningRSASSAPKCS1V15SHA256, crypto.SHA256, false, true, false},
		{SigningRSASSAPKCS1V15SHA384, crypto.SHA384, false, true, false},
		{SigningRSASSAPKCS1V15SHA512, crypto.SHA512, false, true, false},
		{SigningECDSASHA256, crypto.SHA256, false, false, true},
		{SigningECDSASHA384, crypto.SHA384, false, false, true},
		{SigningECDSASHA512, crypto.SHA512, false, false, true},
		{"", 0, false, false, false},
		{"ECDSA_SHA_224", 0, false, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			if got := tt.alg.Hash(); got != tt.hash {
				t.Errorf("Hash() = %v, want %v", got, tt.hash)
			}
			if got := tt.alg.IsPSS(); got != tt.pss {
				t.Errorf("IsPSS() = %v", got)
			}
			if got := tt.alg.IsPKCS1v15(); got != tt.pkcs1 {
				t.Errorf("IsPKCS1v15() = %v", got)
			}
			if got := tt.alg.IsECDSA(); got != tt.ecds {
				t.Errorf("IsECDSA() = %v", got)
			}
			if got, want := tt.alg.Valid(), tt.hash != 0; got != want {
				t.Errorf("Valid() = %v, want %v", got, want)
			}
		})
	}
}

func TestEncryptionAndMacAlgorithmHashes(t *testing.T) {
	enc := map[EncryptionAlgorithm]crypto.Hash{
		EncryptionSymmetricDefault: 0,
		EncryptionRSAESOAEPSHA1:    crypto.SHA1,
		EncryptionRSAESOAEPSHA256:  crypto.SHA256,
		"RSAES_PKCS1_V1_5":         0,
	}
	for a, h := range enc {
		if got := a.Hash(); got != h {
			t.Errorf("%s.Hash() = %v, want %v", a, got, h)
		}
		if got, want := a.IsOAEP(), h != 0; got != want {
			t.Errorf("%s.IsOAEP() = %v, want %v", a, got, want)
		}
	}
	mac := map[MacAlgorithm]crypto.Hash{
		MacHMACSHA256: crypto.SHA256, MacHMACSHA384: crypto.SHA384, MacHMACSHA512: crypto.SHA512,
		"HMAC_SHA_1": 0, "": 0,
	}
	for a, h := range mac {
		if got := a.Hash(); got != h {
			t.Errorf("%s.Hash() = %v, want %v", a, got, h)
		}
		if got, want := a.Valid(), h != 0; got != want {
			t.Errorf("%s.Valid() = %v, want %v", a, got, want)
		}
	}
}

// Every name in the All* lists is valid, and names that are not in them, or
// belong to another type, are not.
func TestValid(t *testing.T) {
	for _, v := range AllEncryptionAlgorithms {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllSigningAlgorithms {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllMacAlgorithms {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllDataKeySpecs {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllDataKeyPairSpecs {
		if !v.Valid() || !v.Spec().IsAsymmetric() || string(v.Spec()) != string(v) {
			t.Errorf("%s: Valid %v, Spec %q", v, v.Valid(), v.Spec())
		}
	}
	for _, v := range AllMessageTypes {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllUsages {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, v := range AllStates {
		if !v.Valid() {
			t.Errorf("%s not Valid", v)
		}
	}
	for _, bad := range []string{"", "bogus", "symmetric_default", "SYMMETRIC_DEFAULT ", "HMAC_256"} {
		if EncryptionAlgorithm(bad).Valid() {
			t.Errorf("EncryptionAlgorithm %q Valid", bad)
		}
		if SigningAlgorithm(bad).Valid() || MacAlgorithm(bad).Valid() || DataKeySpec(bad).Valid() ||
			DataKeyPairSpec(bad).Valid() || MessageType(bad).Valid() || Usage(bad).Valid() ||
			State(bad).Valid() {
			t.Errorf("%q accepted by some Valid", bad)
		}
	}
	if DataKeyPairSpec("HMAC_256").Valid() || DataKeySpec("AES_192").Valid() {
		t.Error("unsupported data key spec accepted")
	}
	if DataKeyAES256.Bytes() != 32 || DataKeyAES128.Bytes() != 16 || DataKeySpec("x").Bytes() != 0 {
		t.Error("DataKeySpec.Bytes")
	}
}

func TestRSAOAEPMaxPlaintext(t *testing.T) {
	tests := []struct {
		bits int
		hash crypto.Hash
		want int
	}{
		{2048, crypto.SHA1, 214},
		{2048, crypto.SHA256, 190},
		{3072, crypto.SHA1, 342},
		{3072, crypto.SHA256, 318},
		{4096, crypto.SHA1, 470},
		{4096, crypto.SHA256, 446},
		{4096, crypto.SHA512, 382},
		{2047, crypto.SHA256, 190}, // k rounds up to whole bytes
		{512, crypto.SHA512, 0},    // too small for any message
		{0, crypto.SHA256, 0},
		{-8, crypto.SHA256, 0},
		{2048, 0, 0},
		{2048, crypto.MD5SHA1, 0},
		{2048, crypto.Hash(999), 0},
	}
	for _, tt := range tests {
		if got := RSAOAEPMaxPlaintext(tt.bits, tt.hash); got != tt.want {
			t.Errorf("RSAOAEPMaxPlaintext(%d, %v) = %d, want %d", tt.bits, tt.hash, got, tt.want)
		}
	}
}

func TestPlaintextLimit(t *testing.T) {
	tests := []struct {
		spec Spec
		alg  EncryptionAlgorithm
		want int
	}{
		{SpecSymmetricDefault, EncryptionSymmetricDefault, 4096},
		{SpecSymmetricDefault, EncryptionRSAESOAEPSHA256, 0},
		{SpecRSA2048, EncryptionRSAESOAEPSHA1, 214},
		{SpecRSA2048, EncryptionRSAESOAEPSHA256, 190},
		{SpecRSA3072, EncryptionRSAESOAEPSHA256, 318},
		{SpecRSA4096, EncryptionRSAESOAEPSHA1, 470},
		{SpecRSA2048, EncryptionSymmetricDefault, 0},
		{SpecECCNISTP256, EncryptionRSAESOAEPSHA256, 0},
		{SpecHMAC256, EncryptionSymmetricDefault, 0},
	}
	for _, tt := range tests {
		if got := tt.spec.PlaintextLimit(tt.alg); got != tt.want {
			t.Errorf("%s.PlaintextLimit(%s) = %d, want %d", tt.spec, tt.alg, got, tt.want)
		}
	}
}

func TestCheckEncryptionAlgorithm(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		use     Usage
		alg     EncryptionAlgorithm
		want    EncryptionAlgorithm
		wantErr error
	}{
		{"symmetric default", SpecSymmetricDefault, UsageEncryptDecrypt, "", EncryptionSymmetricDefault, nil},
		{"symmetric named", SpecSymmetricDefault, UsageEncryptDecrypt, EncryptionSymmetricDefault, EncryptionSymmetricDefault, nil},
		{"symmetric with OAEP", SpecSymmetricDefault, UsageEncryptDecrypt, EncryptionRSAESOAEPSHA1, "", ErrInvalidKeyUsage},
		{"RSA OAEP", SpecRSA3072, UsageEncryptDecrypt, EncryptionRSAESOAEPSHA256, EncryptionRSAESOAEPSHA256, nil},
		{"RSA needs it named", SpecRSA2048, UsageEncryptDecrypt, "", "", ErrInvalidKeyUsage},
		{"RSA signing key", SpecRSA2048, UsageSignVerify, EncryptionRSAESOAEPSHA256, "", ErrInvalidKeyUsage},
		{"EC key", SpecECCNISTP256, UsageSignVerify, EncryptionRSAESOAEPSHA1, "", ErrInvalidKeyUsage},
		{"HMAC key", SpecHMAC256, UsageGenerateVerifyMAC, "", "", ErrInvalidKeyUsage},
		{"unknown", SpecSymmetricDefault, UsageEncryptDecrypt, "AES_GCM", "", ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckEncryptionAlgorithm(tt.spec, tt.use, tt.alg)
			checkErr(t, err, tt.wantErr, "EncryptionAlgorithm")
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckSigningAlgorithm(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		use     Usage
		alg     SigningAlgorithm
		wantErr error
	}{
		{"P-256", SpecECCNISTP256, UsageSignVerify, SigningECDSASHA256, nil},
		{"P-384 wrong hash", SpecECCNISTP384, UsageSignVerify, SigningECDSASHA256, ErrInvalidKeyUsage},
		{"P-521", SpecECCNISTP521, UsageSignVerify, SigningECDSASHA512, nil},
		{"RSA PSS", SpecRSA2048, UsageSignVerify, SigningRSASSAPSSSHA512, nil},
		{"RSA PKCS1", SpecRSA4096, UsageSignVerify, SigningRSASSAPKCS1V15SHA384, nil},
		{"RSA ECDSA", SpecRSA4096, UsageSignVerify, SigningECDSASHA256, ErrInvalidKeyUsage},
		{"RSA encryption key", SpecRSA2048, UsageEncryptDecrypt, SigningRSASSAPSSSHA256, ErrInvalidKeyUsage},
		{"symmetric", SpecSymmetricDefault, UsageEncryptDecrypt, SigningRSASSAPSSSHA256, ErrInvalidKeyUsage},
		{"missing", SpecRSA2048, UsageSignVerify, "", ErrInvalidArgument},
		{"unknown", SpecRSA2048, UsageSignVerify, "RSASSA_PSS_SHA_1", ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckSigningAlgorithm(tt.spec, tt.use, tt.alg), tt.wantErr, "SigningAlgorithm")
		})
	}
}

func TestCheckMacAlgorithm(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		use     Usage
		alg     MacAlgorithm
		wantErr error
	}{
		{"HMAC_256", SpecHMAC256, UsageGenerateVerifyMAC, MacHMACSHA256, nil},
		{"HMAC_384", SpecHMAC384, UsageGenerateVerifyMAC, MacHMACSHA384, nil},
		{"HMAC_512", SpecHMAC512, UsageGenerateVerifyMAC, MacHMACSHA512, nil},
		{"size mismatch", SpecHMAC256, UsageGenerateVerifyMAC, MacHMACSHA512, ErrInvalidKeyUsage},
		{"wrong usage", SpecHMAC256, UsageSignVerify, MacHMACSHA256, ErrInvalidKeyUsage},
		{"symmetric", SpecSymmetricDefault, UsageEncryptDecrypt, MacHMACSHA256, ErrInvalidKeyUsage},
		{"missing", SpecHMAC256, UsageGenerateVerifyMAC, "", ErrInvalidArgument},
		{"unknown", SpecHMAC256, UsageGenerateVerifyMAC, "HMAC_MD5", ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckMacAlgorithm(tt.spec, tt.use, tt.alg), tt.wantErr, "MacAlgorithm")
		})
	}
}

// Spec and usage come from stored keys, but the message must stay clean even
// if one is not a known value.
func TestKeyUsageErrorNamesOnlyKnownValues(t *testing.T) {
	err := CheckSigningAlgorithm("RSA_2048\n\xff", "SIGN\x00", SigningECDSASHA256)
	if !errors.Is(err, ErrInvalidKeyUsage) {
		t.Fatalf("error %v, want ErrInvalidKeyUsage", err)
	}
	want := "unknown key with usage unknown does not support ECDSA_SHA_256"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	err = CheckSigningAlgorithm(SpecRSA2048, UsageEncryptDecrypt, SigningECDSASHA256)
	want = "RSA_2048 key with usage ENCRYPT_DECRYPT does not support ECDSA_SHA_256"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

// checkErr checks that err matches wantErr, and that a FieldError names
// field. A key usage error is not an invalid argument, and vice versa.
func checkErr(t *testing.T, err, wantErr error, field string) {
	t.Helper()
	if wantErr == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, wantErr) {
		t.Fatalf("error %v, want one matching %v", err, wantErr)
	}
	if wantErr == ErrInvalidKeyUsage && errors.Is(err, ErrInvalidArgument) ||
		wantErr == ErrInvalidArgument && errors.Is(err, ErrInvalidKeyUsage) {
		t.Errorf("error %v matches both ErrInvalidArgument and ErrInvalidKeyUsage", err)
	}
	if wantErr != ErrInvalidArgument {
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if field != "" && fe.Field != field {
		t.Errorf("error %q names field %q, want %q", err, fe.Field, field)
	}
	if want := "invalid " + fe.Field + ": "; len(err.Error()) <= len(want) || err.Error()[:len(want)] != want {
		t.Errorf("error %q does not start with %q", err, want)
	}
}

func TestSpecFamily(t *testing.T) {
	tests := []struct {
		spec Spec
		want string
	}{
		{SpecSymmetricDefault, "symmetric"},
		{SpecRSA2048, "asymmetric"},
		{SpecRSA4096, "asymmetric"},
		{SpecECCNISTP256, "asymmetric"},
		{SpecECCNISTP521, "asymmetric"},
		{SpecHMAC256, "hmac"},
		{SpecHMAC512, "hmac"},
	}
	for _, tt := range tests {
		if got := tt.spec.Family(); got != tt.want {
			t.Errorf("%s.Family() = %q, want %q", tt.spec, got, tt.want)
		}
	}
}
