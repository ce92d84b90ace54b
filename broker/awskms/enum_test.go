package awskms

import (
	"testing"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestParseNameAgreesWithTheProtoEnums: CreateKey reads KeySpec and
// KeyUsage straight into the key model's names; it accepts exactly the
// values the proto enums define and answers every other value with the
// same exception and message as the enum path of the other operations.
func TestParseNameAgreesWithTheProtoEnums(t *testing.T) {
	check := func(t *testing.T, in string, gotName string, gotErr error, wantEnum string, wantErr error) {
		t.Helper()
		if gotName != wantEnum {
			t.Errorf("%q: parsed as %q, the proto enum as %q", in, gotName, wantEnum)
		}
		if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
			t.Errorf("%q: error %v, the proto enum path's %v", in, gotErr, wantErr)
		}
	}
	inputs := []string{"", "SYMMETRIC_DEFAULT", "RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
		"HMAC_256", "HMAC_384", "HMAC_512", "ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "RAW_ENCRYPT_DECRYPT",
		"UNSPECIFIED", "SM2", "HMAC_224", "KEY_AGREEMENT", "KEM", "rsa_2048", "NOT_A_SPEC"}
	for _, in := range inputs {
		spec, err := parseName("KeySpec", in, keys.Specs, awsOnlyKeySpecs...)
		pspec, perr := parseEnum[pb.KeySpec]("KeySpec", in, "KEY_SPEC_", pb.KeySpec_value, awsOnlyKeySpecs...)
		check(t, in, string(spec), err, enumName(pspec, "KEY_SPEC_"), perr)

		usage, err := parseName("KeyUsage", in, keys.AllUsages, awsOnlyUsages...)
		pusage, perr := parseEnum[pb.KeyUsage]("KeyUsage", in, "KEY_USAGE_", pb.KeyUsage_value, awsOnlyUsages...)
		check(t, in, string(usage), err, enumName(pusage, "KEY_USAGE_"), perr)
	}
}
