package main

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

func TestEnumParse(t *testing.T) {
	tests := []struct {
		enum  enum
		in    string
		want  int32
		valid bool
	}{
		{keySpecs, "SYMMETRIC_DEFAULT", int32(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT), true},
		{keySpecs, "RSA_2048", int32(pb.KeySpec_KEY_SPEC_RSA_2048), true},
		{keySpecs, "ecc_nist_p384", int32(pb.KeySpec_KEY_SPEC_ECC_NIST_P384), true},
		{keySpecs, "KEY_SPEC_HMAC_512", int32(pb.KeySpec_KEY_SPEC_HMAC_512), true},
		{keySpecs, "UNSPECIFIED", 0, false},
		{keySpecs, "RSA_1024", 0, false},
		{keySpecs, "", 0, false},
		{keyUsages, "ENCRYPT_DECRYPT", int32(pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT), true},
		{keyUsages, "GENERATE_VERIFY_MAC", int32(pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC), true},
		{encryptionAlgs, "RSAES_OAEP_SHA_256", int32(pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256), true},
		{signingAlgs, "RSASSA_PSS_SHA_256", int32(pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256), true},
		{signingAlgs, "RSASSA_PKCS1_V1_5_SHA_512", int32(pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_512), true},
		{signingAlgs, "ECDSA_SHA_256", int32(pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256), true},
		{signingAlgs, "SHA256", 0, false},
		{macAlgs, "HMAC_SHA_384", int32(pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_384), true},
		{dataKeySpecs, "AES_128", int32(pb.DataKeySpec_DATA_KEY_SPEC_AES_128), true},
		{dataKeySpecs, "AES_512", 0, false},
	}
	for _, tt := range tests {
		got, err := tt.enum.parse("--flag", tt.in)
		if tt.valid {
			if err != nil || got != tt.want {
				t.Errorf("parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
			continue
		}
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parse(%q): %v, want a usage error", tt.in, err)
			continue
		}
		if want := "valid values are " + strings.Join(tt.enum.valid(), ", "); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--flag") {
			t.Errorf("parse(%q): %q does not list the valid values", tt.in, err)
		}
	}
}

// TestEnumNames checks every value of every enum maps to an AWS name and
// back.
func TestEnumNames(t *testing.T) {
	for _, e := range []enum{keySpecs, keyUsages, encryptionAlgs, signingAlgs, macAlgs, dataKeySpecs, nodeRoles} {
		if len(e.valid()) != len(e.names)-1 {
			t.Errorf("%s: %d valid names for %d values", e.prefix, len(e.valid()), len(e.names))
		}
		for _, name := range e.valid() {
			if strings.HasPrefix(name, e.prefix) || strings.Contains(name, "UNSPECIFIED") {
				t.Errorf("%s: bad AWS name %q", e.prefix, name)
			}
			v, err := e.parse("--x", name)
			if err != nil || e.name(v) != name {
				t.Errorf("%s: %q -> %d (%v) -> %q", e.prefix, name, v, err, e.name(v))
			}
		}
		if e.name(0) != "" || e.name(999) != "999" {
			t.Errorf("%s: name(0) %q, name(999) %q", e.prefix, e.name(0), e.name(999))
		}
	}
	for s, want := range map[pb.KeyState]string{
		pb.KeyState_KEY_STATE_ENABLED: "Enabled", pb.KeyState_KEY_STATE_DISABLED: "Disabled",
		pb.KeyState_KEY_STATE_PENDING_DELETION: "PendingDeletion", pb.KeyState_KEY_STATE_UNSPECIFIED: "",
	} {
		if got := keyStateName(s); got != want {
			t.Errorf("keyStateName(%v) = %q, want %q", s, got, want)
		}
	}
	if got := keySpecs.valid(); got[0] != "SYMMETRIC_DEFAULT" || got[len(got)-1] != "HMAC_512" {
		t.Errorf("key specs not in enum order: %v", got)
	}
}

func TestParsePairs(t *testing.T) {
	tests := []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"a=1", "b=", "c=x=y"}, map[string]string{"a": "1", "b": "", "c": "x=y"}, ""},
		{[]string{"noequals"}, nil, "want KEY=VALUE"},
		{[]string{"=v"}, nil, "want KEY=VALUE"},
		{[]string{"a=1", "a=2"}, nil, "given twice"},
	}
	for _, tt := range tests {
		got, err := parsePairs("--context", tt.in)
		if tt.wantErr != "" {
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parsePairs(%q): %v, want usage error %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("parsePairs(%q) = %v, %v", tt.in, got, err)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parsePairs(%q)[%q] = %q, want %q", tt.in, k, got[k], v)
			}
		}
	}
}

func TestFormatProgress(t *testing.T) {
	tests := []struct {
		n, total int64
		want     string
	}{
		{0, -1, "0 B"},
		{1023, -1, "1023 B"},
		{1536, -1, "1.5 KiB"},
		{5 << 20, 10 << 20, "5.0 MiB / 10.0 MiB  50%"},
		{10 << 20, 10 << 20, "10.0 MiB / 10.0 MiB 100%"},
		{3 << 30, 4 << 30, "3.0 GiB / 4.0 GiB  75%"},
		{5 << 40, -1, "5.0 TiB"},
		{2048 << 40, -1, "2048.0 TiB"},
		{120, 100, "120 B / 100 B 100%"}, // decrypt counts the header too
	}
	for _, tt := range tests {
		if got := formatProgress(tt.n, tt.total); got != tt.want {
			t.Errorf("formatProgress(%d, %d) = %q, want %q", tt.n, tt.total, got, tt.want)
		}
	}
}
