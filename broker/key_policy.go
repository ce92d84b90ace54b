package broker

import (
	"errors"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc/codes"
)

// ExcMalformedPolicyDocument is AWS's exception for a key policy that is
// not a policy document.
const ExcMalformedPolicyDocument = "MalformedPolicyDocumentException"

// MaxKeyPolicy is the largest key policy, in bytes, as in AWS KMS.
const MaxKeyPolicy = authz.MaxPolicySize

// DefaultKeyPolicy is AWS KMS's default key policy, which gives the
// account full access to the key; here the account stands for every
// principal with the admin role. A key whose creator is known has that
// principal added (defaultPolicyFor): its policy until one is put.
func (s *Service) DefaultKeyPolicy() string {
	return s.access.DefaultPolicy("")
}

// defaultPolicyFor is the policy k has until one is put: the account's
// statement of DefaultKeyPolicy (every admin), and a statement for the
// principal that created the key.
func (s *Service) defaultPolicyFor(k cluster.Key) string {
	return s.access.DefaultPolicy(k.Creator)
}

// CheckKeyPolicy checks that policy has the form of a key policy document
// (authz.CheckPolicy): InvalidArgument, ValidationException when it is
// empty and MalformedPolicyDocumentException otherwise.
func CheckKeyPolicy(policy string) error {
	err := authz.CheckPolicy(policy)
	var pe *authz.PolicyError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, authz.ErrPolicyRequired):
		return newError(codes.InvalidArgument, ExcValidation, "invalid Policy: is required")
	case errors.As(err, &pe):
		return newError(codes.InvalidArgument, ExcMalformedPolicyDocument, "%s", pe.Reason)
	}
	return newError(codes.InvalidArgument, ExcMalformedPolicyDocument, "%v", err)
}
