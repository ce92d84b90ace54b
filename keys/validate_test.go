package keys

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestFieldError(t *testing.T) {
	var err error = &FieldError{Field: "Plaintext", Problem: "must be 1 to 4096 bytes, got 5000"}
	if got, want := err.Error(), "invalid Plaintext: must be 1 to 4096 bytes, got 5000"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("encrypt: %w", err)
	if !errors.Is(wrapped, ErrInvalidArgument) {
		t.Error("wrapped FieldError does not match ErrInvalidArgument")
	}
	var fe *FieldError
	if !errors.As(wrapped, &fe) || fe.Field != "Plaintext" {
		t.Error("errors.As does not find the FieldError")
	}
}

func TestValidatePlaintext(t *testing.T) {
	secret := bytes.Repeat([]byte("TOPSECRET"), 600) // 5400 bytes
	tests := []struct {
		name    string
		b       []byte
		max     int
		wantErr error
		wantMsg string
	}{
		{"one byte", []byte{0}, MaxPlaintext, nil, ""},
		{"max", make([]byte, MaxPlaintext), MaxPlaintext, nil, ""},
		{"empty", nil, MaxPlaintext, ErrInvalidArgument, "invalid Plaintext: must be 1 to 4096 bytes, got 0"},
		{"too long", secret, MaxPlaintext, ErrInvalidArgument, "invalid Plaintext: must be 1 to 4096 bytes, got 5400"},
		{"over OAEP limit", make([]byte, 191), 190, ErrInvalidArgument, "invalid Plaintext: must be 1 to 190 bytes, got 191"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePlaintext("Plaintext", tt.b, tt.max)
			checkErr(t, err, tt.wantErr, "Plaintext")
			if err != nil && err.Error() != tt.wantMsg {
				t.Errorf("error %q, want %q", err, tt.wantMsg)
			}
			if err != nil && strings.Contains(err.Error(), "TOPSECRET") {
				t.Error("error repeats the plaintext")
			}
		})
	}
}

func TestValidateAliasName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
		wantIn  string // a word the problem must contain
	}{
		{"simple", "alias/my-key", false, ""},
		{"all characters", "alias/AZaz09/_-", false, ""},
		{"slash path", "alias/team/app/key", false, ""},
		{"max", "alias/" + strings.Repeat("a", 250), false, ""},
		{"aws lookalike allowed", "alias/awsome", false, ""},
		{"bare aws allowed", "alias/aws", false, ""},
		{"upper-case AWS is not the reserved prefix", "alias/AWS/x", false, ""},
		{"empty", "", true, "alias/"},
		{"no prefix", "my-key", true, "alias/"},
		{"prefix only", "alias/", true, "1 to 250"},
		{"too long", "alias/" + strings.Repeat("a", 251), true, "1 to 250"},
		{"space", "alias/my key", true, "character 3"},
		{"colon", "alias/a:b", true, "character 2"},
		{"dot", "alias/a.b", true, "character 2"},
		{"non-ASCII", "alias/ключ", true, "character 1"},
		{"prefix case", "Alias/x", true, "alias/"},
		{"reserved", "alias/aws/ebs", true, "reserved"},
		{"reserved bare", "alias/aws/", true, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateAliasName(tt.in)
			if !tt.wantErr {
				checkErr(t, err, nil, "")
				return
			}
			checkErr(t, err, ErrInvalidArgument, "AliasName")
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not mention %q", err, tt.wantIn)
			}
		})
	}
}

func TestParseKeyRef(t *testing.T) {
	const id = "1234abcd-12ab-34cd-56ef-1234567890ab"
	tests := []struct {
		name    string
		in      string
		want    KeyRef
		wantErr bool
	}{
		{"key id", id, KeyRef{KeyID: id}, false},
		{"key id upper case", strings.ToUpper(id), KeyRef{KeyID: id}, false},
		{"key ARN", "arn:aws:kms:us-east-1:111122223333:key/" + id, KeyRef{KeyID: id, Partition: "aws", Region: "us-east-1", Account: "111122223333"}, false},
		{"key ARN china", "arn:aws-cn:kms:cn-north-1:111122223333:key/" + id, KeyRef{KeyID: id, Partition: "aws-cn", Region: "cn-north-1", Account: "111122223333"}, false},
		{"key ARN gov", "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/" + id, KeyRef{KeyID: id, Partition: "aws-us-gov", Region: "us-gov-west-1", Account: "111122223333"}, false},
		{"alias", "alias/my-key", KeyRef{Alias: "alias/my-key"}, false},
		{"alias with path", "alias/a/b/c", KeyRef{Alias: "alias/a/b/c"}, false},
		{"reserved alias is a lookup", "alias/aws/ebs", KeyRef{Alias: "alias/aws/ebs"}, false},
		{"alias ARN", "arn:aws:kms:eu-west-2:111122223333:alias/my-key", KeyRef{Alias: "alias/my-key", Partition: "aws", Region: "eu-west-2", Account: "111122223333"}, false},
		{"alias ARN with path", "arn:aws:kms:eu-west-2:111122223333:alias/a/b", KeyRef{Alias: "alias/a/b", Partition: "aws", Region: "eu-west-2", Account: "111122223333"}, false},
		{"empty", "", KeyRef{}, true},
		{"too long", "alias/" + strings.Repeat("a", 2043), KeyRef{}, true},
		{"alias too long", "alias/" + strings.Repeat("a", 251), KeyRef{}, true},
		{"bare name", "my-key", KeyRef{}, true},
		{"bad alias", "alias/a b", KeyRef{}, true},
		{"prefix only", "alias/", KeyRef{}, true},
		{"bad id", "1234abcd-12ab-34cd-56ef-1234567890ag", KeyRef{}, true},
		{"ARN other partition", "arn:azure:kms:us-east-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN partition aws-", "arn:aws-:kms:us-east-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN partition upper", "arn:aws-CN:kms:us-east-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN partition awsx", "arn:awsx:kms:us-east-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN other service", "arn:aws:s3:us-east-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN empty region", "arn:aws:kms::111122223333:key/" + id, KeyRef{}, true},
		{"ARN region upper", "arn:aws:kms:US-EAST-1:111122223333:key/" + id, KeyRef{}, true},
		{"ARN short account", "arn:aws:kms:us-east-1:11112222333:key/" + id, KeyRef{}, true},
		{"ARN account letters", "arn:aws:kms:us-east-1:11112222333a:key/" + id, KeyRef{}, true},
		{"ARN too few parts", "arn:aws:kms:us-east-1:key/" + id, KeyRef{}, true},
		{"ARN bad key id", "arn:aws:kms:us-east-1:111122223333:key/abc", KeyRef{}, true},
		{"ARN key id with suffix", "arn:aws:kms:us-east-1:111122223333:key/" + id + ":x", KeyRef{}, true},
		{"ARN empty resource", "arn:aws:kms:us-east-1:111122223333:", KeyRef{}, true},
		{"ARN other resource", "arn:aws:kms:us-east-1:111122223333:grant/x", KeyRef{}, true},
		{"ARN bad alias", "arn:aws:kms:us-east-1:111122223333:alias/a:b", KeyRef{}, true},
		{"ARN alias prefix only", "arn:aws:kms:us-east-1:111122223333:alias/", KeyRef{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyRef(tt.in)
			if tt.wantErr {
				checkErr(t, err, ErrInvalidArgument, "KeyId")
				if got != (KeyRef{}) {
					t.Errorf("got %+v with the error", got)
				}
				return
			}
			checkErr(t, err, nil, "")
			if got != tt.want {
				t.Errorf("ParseKeyRef(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.want.KeyID+tt.want.Alias {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
}

func TestPendingWindow(t *testing.T) {
	tests := []struct {
		in      int32
		want    int32
		wantErr bool
	}{
		{0, 30, false},
		{7, 7, false},
		{15, 15, false},
		{30, 30, false},
		{6, 0, true},
		{31, 0, true},
		{-1, 0, true},
		{math.MinInt32, 0, true},
		{math.MaxInt32, 0, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			got, err := PendingWindow(tt.in)
			verr := ValidateDeletionWindow(tt.in)
			if tt.wantErr {
				checkErr(t, err, ErrInvalidArgument, "PendingWindowInDays")
				checkErr(t, verr, ErrInvalidArgument, "PendingWindowInDays")
				if !strings.Contains(err.Error(), "7 to 30") {
					t.Errorf("error %q does not state the limit", err)
				}
				return
			}
			checkErr(t, err, nil, "")
			checkErr(t, verr, nil, "")
			if got != tt.want {
				t.Errorf("PendingWindow(%d) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidateDescription(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"empty", "", false},
		{"text", "payments key, rotated yearly", false},
		{"unicode", "clé de paiement ✓", false},
		{"max", strings.Repeat("a", 8192), false},
		{"too long", strings.Repeat("a", 8193), true},
		{"multi-byte: characters count, not bytes", strings.Repeat("é", 8192), false},
		{"multi-byte too long", strings.Repeat("é", 8193), true},
		{"newline", "line1\nline2", true},
		{"escape sequence", "\x1b[2Jgone", true},
		{"C1 escape sequence", "safe\u009b2J", true},
		{"right-to-left override", "EVIL\u202egnp.exe", true},
		{"isolate", "a\u2066b\u2069", true},
		{"right-to-left text", "מפתח תשלומים", false},
		{"zero-width joiner", "👩\u200d💻", false},
		{"invalid UTF-8", "a\xffb", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateDescription(tt.in)
			if tt.wantErr {
				checkErr(t, err, ErrInvalidArgument, "Description")
			} else {
				checkErr(t, err, nil, "")
			}
		})
	}
}

func TestValidateTags(t *testing.T) {
	many := map[string]string{}
	for i := range 51 {
		many[fmt.Sprint("k", i)] = "v"
	}
	fifty := map[string]string{}
	for i := range 50 {
		fifty[fmt.Sprint("k", i)] = ""
	}
	tests := []struct {
		name    string
		in      map[string]string
		wantErr bool
	}{
		{"nil", nil, false},
		{"one", map[string]string{"team": "payments"}, false},
		{"empty value", map[string]string{"team": ""}, false},
		{"fifty", fifty, false},
		{"max key", map[string]string{strings.Repeat("k", 128): "v"}, false},
		{"max key in characters", map[string]string{strings.Repeat("ключ", 32): "v"}, false},
		{"max value", map[string]string{"k": strings.Repeat("v", 256)}, false},
		{"max value in characters", map[string]string{"k": strings.Repeat("é", 256)}, false},
		{"aws lookalike", map[string]string{"awsome": "v"}, false},
		{"fifty-one", many, true},
		{"empty key", map[string]string{"": "v"}, true},
		{"long key", map[string]string{strings.Repeat("k", 129): "v"}, true},
		{"long value", map[string]string{"k": strings.Repeat("v", 257)}, true},
		{"reserved key", map[string]string{"aws:createdBy": "v"}, true},
		{"reserved key upper", map[string]string{"AWS:x": "v"}, true},
		{"invalid key", map[string]string{"\xff": "v"}, true},
		{"invalid value", map[string]string{"k": "\xff"}, true},
		{"control character in a key", map[string]string{"k\tx": "v"}, true},
		{"control character in a value", map[string]string{"k": "a\rb"}, true},
		{"C1 control character in a value", map[string]string{"k": "a\u009bb"}, true},
		{"bidirectional override in a key", map[string]string{"k\u202e": "v"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTags(tt.in)
			if tt.wantErr {
				checkErr(t, err, ErrInvalidArgument, "Tags")
			} else {
				checkErr(t, err, nil, "")
			}
		})
	}
}

// TestControlProblemNamesTheCharacter: the message names the character
// refused, not the first byte of its encoding.
func TestControlProblemNamesTheCharacter(t *testing.T) {
	err := ValidateDescription("safe\u009b2J")
	if err == nil || !strings.Contains(err.Error(), "U+009B") {
		t.Fatalf("ValidateDescription = %v, want it to name U+009B", err)
	}
	for _, r := range []rune{'a', 'é', '\u200d', '\u00a0'} {
		if IsDisplayControl(r) {
			t.Errorf("IsDisplayControl(%U) = true", r)
		}
	}
	for _, r := range []rune{0, '\t', 0x7f, 0x80, 0x9b, 0x9f, 0x061c, 0x200e, 0x200f, 0x202a, 0x202e, 0x2066, 0x2069} {
		if !IsDisplayControl(r) {
			t.Errorf("IsDisplayControl(%U) = false", r)
		}
	}
}

func TestValidateTagsIsDeterministic(t *testing.T) {
	tags := map[string]string{}
	for i := range 40 {
		tags[fmt.Sprintf("aws:%02d", i)] = "v"
		tags[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 300)
	}
	first := ValidateTags(tags).Error()
	for range 20 {
		if got := ValidateTags(tags).Error(); got != first {
			t.Fatalf("error changed between calls: %q then %q", first, got)
		}
	}
}

func TestValidateTagKeys(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		wantErr bool
	}{
		{"one", []string{"team"}, false},
		{"duplicates", []string{"team", "team"}, false},
		{"fifty", make50("k"), false},
		{"none", nil, true},
		{"fifty-one", append(make50("k"), "x"), true},
		{"empty key", []string{"team", ""}, true},
		{"long key", []string{strings.Repeat("k", 129)}, true},
		{"reserved", []string{"aws:cloudformation:stack-name"}, true},
		{"invalid UTF-8", []string{"\xc3"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTagKeys(tt.in)
			if tt.wantErr {
				checkErr(t, err, ErrInvalidArgument, "TagKeys")
			} else {
				checkErr(t, err, nil, "")
			}
		})
	}
}

func make50(prefix string) []string {
	s := make([]string, 50)
	for i := range s {
		s[i] = fmt.Sprint(prefix, i)
	}
	return s
}

func TestValidateRandomBytes(t *testing.T) {
	for _, n := range []int64{1, 32, 1024} {
		checkErr(t, ValidateRandomBytes(n), nil, "")
	}
	for _, n := range []int64{0, -1, 1025, 1 << 30, 1<<32 - 1} {
		checkErr(t, ValidateRandomBytes(n), ErrInvalidArgument, "NumberOfBytes")
		// The message names the number asked for, not a clamped one.
		if err := ValidateRandomBytes(n); !strings.Contains(err.Error(), fmt.Sprintf("got %d", n)) {
			t.Errorf("ValidateRandomBytes(%d): %v", n, err)
		}
	}
}

func TestDataKeyBytes(t *testing.T) {
	tests := []struct {
		name      string
		spec      DataKeySpec
		n         int64
		want      int
		wantField string // "" means no error
	}{
		{"AES_256", DataKeyAES256, 0, 32, ""},
		{"AES_128", DataKeyAES128, 0, 16, ""},
		{"bytes", "", 64, 64, ""},
		{"one byte", "", 1, 1, ""},
		{"max bytes", "", 1024, 1024, ""},
		{"neither", "", 0, 0, "KeySpec"},
		{"both", DataKeyAES256, 32, 0, "KeySpec"},
		{"unknown spec", "AES_192", 0, 0, "KeySpec"},
		{"negative bytes", "", -1, 0, "NumberOfBytes"},
		{"too many bytes", "", 1025, 0, "NumberOfBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DataKeyBytes(tt.spec, tt.n)
			if tt.wantField != "" {
				checkErr(t, err, ErrInvalidArgument, tt.wantField)
			} else {
				checkErr(t, err, nil, "")
			}
			if got != tt.want {
				t.Errorf("DataKeyBytes = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestValidateCreate(t *testing.T) {
	tests := []struct {
		spec      Spec
		usage     Usage
		want      Usage
		wantField string
	}{
		{SpecSymmetricDefault, "", UsageEncryptDecrypt, ""},
		{SpecSymmetricDefault, UsageEncryptDecrypt, UsageEncryptDecrypt, ""},
		{SpecSymmetricDefault, UsageSignVerify, "", "KeyUsage"},
		{SpecSymmetricDefault, UsageGenerateVerifyMAC, "", "KeyUsage"},
		{SpecRSA2048, "", "", "KeyUsage"},
		{SpecRSA2048, UsageEncryptDecrypt, UsageEncryptDecrypt, ""},
		{SpecRSA3072, UsageSignVerify, UsageSignVerify, ""},
		{SpecRSA4096, UsageGenerateVerifyMAC, "", "KeyUsage"},
		{SpecECCNISTP256, "", UsageSignVerify, ""},
		{SpecECCNISTP384, UsageSignVerify, UsageSignVerify, ""},
		{SpecECCNISTP521, UsageEncryptDecrypt, "", "KeyUsage"},
		{SpecHMAC256, "", UsageGenerateVerifyMAC, ""},
		{SpecHMAC512, UsageGenerateVerifyMAC, UsageGenerateVerifyMAC, ""},
		{SpecHMAC384, UsageSignVerify, "", "KeyUsage"},
		{SpecSymmetricDefault, "ENCRYPT", "", "KeyUsage"},
		{"", "", "", "KeySpec"},
		{"AES_256", UsageEncryptDecrypt, "", "KeySpec"},
	}
	for _, tt := range tests {
		t.Run(string(tt.spec)+"/"+string(tt.usage), func(t *testing.T) {
			got, err := ValidateCreate(tt.spec, tt.usage)
			if tt.wantField != "" {
				checkErr(t, err, ErrInvalidArgument, tt.wantField)
			} else {
				checkErr(t, err, nil, "")
			}
			if got != tt.want {
				t.Errorf("ValidateCreate = %q, want %q", got, tt.want)
			}
		})
	}
	_, err := ValidateCreate(SpecRSA2048, "")
	if !strings.Contains(err.Error(), "ENCRYPT_DECRYPT, SIGN_VERIFY") {
		t.Errorf("error %q does not list the choices", err)
	}
}

func TestValidateMessage(t *testing.T) {
	tests := []struct {
		name      string
		mt        MessageType
		alg       SigningAlgorithm
		msg       []byte
		wantField string
	}{
		{"raw default", "", SigningECDSASHA256, []byte("hello"), ""},
		{"raw", MessageRaw, SigningRSASSAPSSSHA512, make([]byte, 4096), ""},
		{"raw empty", MessageRaw, SigningECDSASHA256, nil, "Message"},
		{"raw too long", MessageRaw, SigningECDSASHA256, make([]byte, 4097), "Message"},
		{"digest 256", MessageDigest, SigningECDSASHA256, make([]byte, 32), ""},
		{"digest 384", MessageDigest, SigningRSASSAPKCS1V15SHA384, make([]byte, 48), ""},
		{"digest 512", MessageDigest, SigningRSASSAPSSSHA512, make([]byte, 64), ""},
		{"digest short", MessageDigest, SigningECDSASHA384, make([]byte, 32), "Message"},
		{"digest long", MessageDigest, SigningECDSASHA256, make([]byte, 33), "Message"},
		{"digest empty", MessageDigest, SigningECDSASHA256, nil, "Message"},
		{"digest unknown algorithm", MessageDigest, "ECDSA_SHA_1", make([]byte, 20), "SigningAlgorithm"},
		{"unknown type", "HASH", SigningECDSASHA256, make([]byte, 32), "MessageType"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateMessage(tt.mt, tt.alg, tt.msg)
			if tt.wantField != "" {
				checkErr(t, err, ErrInvalidArgument, tt.wantField)
			} else {
				checkErr(t, err, nil, "")
			}
		})
	}
}

func TestPageSize(t *testing.T) {
	tests := []struct {
		in      int32
		want    int
		wantErr bool
	}{
		{0, 100, false},
		{1, 1, false},
		{1000, 1000, false},
		{1001, 0, true},
		{-1, 0, true},
	}
	for _, tt := range tests {
		got, err := PageSize(tt.in)
		if tt.wantErr {
			checkErr(t, err, ErrInvalidArgument, "Limit")
		} else {
			checkErr(t, err, nil, "")
		}
		if got != tt.want {
			t.Errorf("PageSize(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
	checkErr(t, ValidateLimit("MaxItems", 5, 10), nil, "")
	checkErr(t, ValidateLimit("MaxItems", 0, 10), ErrInvalidArgument, "MaxItems")
	checkErr(t, ValidateLimit("MaxItems", 11, 10), ErrInvalidArgument, "MaxItems")
}

// FuzzValidators feeds arbitrary input to every validator: none may panic,
// and every failure is a *FieldError (or a key usage error) that does not
// repeat a long input.
func FuzzValidators(f *testing.F) {
	f.Add("alias/my-key", []byte("hello"), int32(0), int32(7), "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "RAW")
	f.Add("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", make([]byte, 32), int32(32), int32(1000), "ECC_NIST_P256", "", "DIGEST")
	f.Add("aws:tag", []byte{}, int32(-1), int32(1<<31-1), "RSA_2048", "SIGN_VERIFY", "ECDSA_SHA_256")
	f.Add("\xff\xfe", make([]byte, 4097), int32(1025), int32(-1<<31), "HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256")
	f.Fuzz(func(t *testing.T, s string, b []byte, n, m int32, spec, usage, alg string) {
		var errs []error
		add := func(err error) { errs = append(errs, err) }
		addV := func(_ any, err error) { errs = append(errs, err) }

		add(ValidatePlaintext("Plaintext", b, MaxPlaintext))
		add(ValidatePlaintext("Plaintext", b, int(n)))
		add(ValidateAliasName(s))
		addV(ParseKeyRef(s))
		addV(ParseKeyID(s))
		addV(PendingWindow(n))
		add(ValidateDeletionWindow(m))
		add(ValidateDescription(s))
		add(ValidateTags(map[string]string{s: spec, usage: alg}))
		add(ValidateTagKeys([]string{s, spec}))
		add(ValidateRandomBytes(int64(n)))
		addV(DataKeyBytes(DataKeySpec(spec), int64(n)))
		addV(ValidateCreate(Spec(spec), Usage(usage)))
		add(ValidateMessage(MessageType(usage), SigningAlgorithm(alg), b))
		add(ValidateMessage(MessageType(alg), SigningAlgorithm(spec), b))
		add(ValidateLimit("Limit", n, m))
		addV(PageSize(m))
		add(ValidateContext(EncryptionContext{s: string(b), spec: usage}))
		addV(CheckEncryptionAlgorithm(Spec(spec), Usage(usage), EncryptionAlgorithm(alg)))
		add(CheckSigningAlgorithm(Spec(spec), Usage(usage), SigningAlgorithm(alg)))
		add(CheckMacAlgorithm(Spec(spec), Usage(usage), MacAlgorithm(alg)))
		_ = Spec(spec).PlaintextLimit(EncryptionAlgorithm(alg))
		_ = RSAOAEPMaxPlaintext(int(n), SigningAlgorithm(alg).Hash())

		for i, err := range errs {
			if err == nil {
				continue
			}
			var fe *FieldError
			if !errors.As(err, &fe) && !errors.Is(err, ErrInvalidKeyUsage) {
				t.Fatalf("check %d: error %v (%T) is neither a FieldError nor a key usage error", i, err, err)
			}
			if fe != nil && (!errors.Is(err, ErrInvalidArgument) || fe.Field == "" || fe.Problem == "") {
				t.Fatalf("check %d: malformed FieldError %#v", i, fe)
			}
			msg := err.Error()
			for _, in := range []string{s, string(b)} {
				if len(in) >= 24 && strings.Contains(msg, in) {
					t.Fatalf("check %d: error %q repeats an input", i, msg)
				}
			}
		}
	})
}

func FuzzParseKeyRef(f *testing.F) {
	const id = "1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, s := range []string{
		id, strings.ToUpper(id), "alias/my-key", "alias/aws/ebs", "alias/",
		"arn:aws:kms:us-east-1:111122223333:key/" + id,
		"arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/a/b",
		"arn:aws:kms:us-east-1:111122223333:alias/a:b",
		"arn:aws-:kms:::", "arn:", "", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseKeyRef(s)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "KeyId" || !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v (%T) is not a FieldError for KeyId", err, err)
			}
			if len(s) >= 24 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q repeats the input", err)
			}
			if ref != (KeyRef{}) {
				t.Fatalf("got %+v with the error", ref)
			}
			return
		}
		if (ref.KeyID == "") == (ref.Alias == "") {
			t.Fatalf("ParseKeyRef(%q) = %+v, want exactly one field set", s, ref)
		}
		if ref.KeyID != "" {
			b, err := ParseKeyID(ref.KeyID)
			if err != nil || FormatKeyID(b) != ref.KeyID {
				t.Fatalf("KeyID %q is not canonical", ref.KeyID)
			}
		}
		if ref.Alias != "" && aliasSyntaxProblem(ref.Alias) != "" {
			t.Fatalf("Alias %q is not a well-formed alias name", ref.Alias)
		}
		// An ARN, and only an ARN, carries its partition, region and account.
		if isARN := strings.HasPrefix(s, "arn:"); isARN != (ref.Region != "") || isARN != (ref.Account != "") || isARN != (ref.Partition != "") {
			t.Fatalf("ParseKeyRef(%q) = %+v: partition, region and account must be set exactly for an ARN", s, ref)
		}
		// The canonical name and its ARN parse back to the same key or
		// alias, the ARN with its region and account.
		resource := ref.Alias
		if ref.KeyID != "" {
			resource = "key/" + ref.KeyID
		}
		name := KeyRef{KeyID: ref.KeyID, Alias: ref.Alias}
		arn := KeyRef{KeyID: ref.KeyID, Alias: ref.Alias, Partition: "aws", Region: "us-east-1", Account: "111122223333"}
		for again, want := range map[string]KeyRef{ref.String(): name, "arn:aws:kms:us-east-1:111122223333:" + resource: arn} {
			if got, err := ParseKeyRef(again); err != nil || got != want {
				t.Fatalf("ParseKeyRef(%q) = %+v, %v; want %+v", again, got, err, want)
			}
		}
	})
}
