package broker

import (
	"errors"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

func TestGrpcAction(t *testing.T) {
	for m, want := range map[string]string{
		"/hsmbroker.v1.CryptoService/Encrypt":      "kms:Encrypt",
		"/hsmbroker.v1.KeyService/TagKey":          "kms:TagResource",
		"/hsmbroker.v1.KeyService/PutKeyPolicy":    "kms:PutKeyPolicy",
		"/hsmbroker.v1.ClusterService/Backup":      "hsmbroker:Backup",
		"/hsmbroker.v1.AccessService/ReadAuditLog": "hsmbroker:ReadAuditLog",
	} {
		if got := grpcAction(m); got != want {
			t.Errorf("grpcAction(%s) = %s, want %s", m, got, want)
		}
		if !authz.Known(want) {
			t.Errorf("no rule for %s", want)
		}
	}
}

// TestEveryMethodHasARule: a gRPC method without a rule would be refused to
// everyone; one missing here is a method added without deciding who may
// call it.
func TestEveryMethodHasARule(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{pb.KeyService_ServiceDesc, pb.CryptoService_ServiceDesc,
		pb.ClusterService_ServiceDesc, pb.AccessService_ServiceDesc} {
		for _, m := range sd.Methods {
			full := "/" + sd.ServiceName + "/" + m.MethodName
			if !authz.Known(grpcAction(full)) {
				t.Errorf("%s (%s) has no rule", full, grpcAction(full))
			}
		}
	}
}

// TestCheckKeyPolicyCodes: authz.CheckPolicy's answers become the codes,
// exceptions and messages AWS KMS gives.
func TestCheckKeyPolicyCodes(t *testing.T) {
	tests := []struct {
		name, doc string
		exc, msg  string
	}{
		{"valid", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Describe*"}}`, "", ""},
		{"empty", "", ExcValidation, "invalid Policy: is required"},
		{"too big", `{"Id":"` + strings.Repeat("a", MaxKeyPolicy) + `"}`, ExcMalformedPolicyDocument, "the key policy is 32777 bytes; the limit is 32768"},
		{"no statement", `{"Version":"2012-10-17"}`, ExcMalformedPolicyDocument, "the key policy has no Statement"},
		{"unparsable statement", `{"Statement":{"Effect":"Maybe","Principal":"*","Action":"kms:*"}}`, ExcMalformedPolicyDocument,
			`statement 1: the Effect must be Allow or Deny, not "Maybe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckKeyPolicy(tt.doc)
			if tt.exc == "" {
				if err != nil {
					t.Fatalf("CheckKeyPolicy = %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != codes.InvalidArgument || e.Exception != tt.exc || e.Message != tt.msg {
				t.Fatalf("CheckKeyPolicy = %#v; want InvalidArgument, %s, %q", err, tt.exc, tt.msg)
			}
		})
	}
}
