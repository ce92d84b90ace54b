package broker

import (
	"context"
	"errors"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
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

// KeyPolicy returns a key's policy document as it was put, or its default
// policy (every admin and the key's creator) when none was.
func (s *Service) KeyPolicy(ctx context.Context, ref string) (string, error) {
	k, err := s.resolve(ctx, "KeyId", ref)
	if err != nil {
		return "", err
	}
	if len(k.Policy) == 0 {
		return s.defaultPolicyFor(k), nil
	}
	return string(k.Policy), nil
}

// SetKeyPolicy replaces a key's policy document. The document is checked
// (a JSON object with statements this service can evaluate, at most
// MaxKeyPolicy bytes) and stored verbatim; every node evaluates it on every
// request that reaches the key (authz.Authorizer.DecideKey).
func (s *Service) SetKeyPolicy(ctx context.Context, ref, policy string) error {
	if err := CheckKeyPolicy(policy); err != nil {
		return err
	}
	k, err := s.resolve(ctx, "KeyId", ref)
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, &cluster.PutPolicy{KeyID: k.ID, Policy: []byte(policy)})
	return err
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

// PutKeyPolicy replaces a key's policy.
func (s *Service) PutKeyPolicy(ctx context.Context, req *pb.PutKeyPolicyRequest) (*pb.PutKeyPolicyResponse, error) {
	if err := s.SetKeyPolicy(ctx, req.GetKeyId(), req.GetPolicy()); err != nil {
		return nil, err
	}
	return &pb.PutKeyPolicyResponse{}, nil
}

// GetKeyPolicy returns a key's policy.
func (s *Service) GetKeyPolicy(ctx context.Context, req *pb.GetKeyPolicyRequest) (*pb.GetKeyPolicyResponse, error) {
	k, err := s.resolve(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if len(k.Policy) == 0 {
		return &pb.GetKeyPolicyResponse{Policy: s.defaultPolicyFor(k), IsDefault: true}, nil
	}
	return &pb.GetKeyPolicyResponse{Policy: string(k.Policy)}, nil
}
