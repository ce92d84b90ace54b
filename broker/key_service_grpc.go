package broker

import (
	"context"
	"strings"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// keyServiceServer is the gRPC adapter of KeyService. Its methods shadow
// the core's methods of the same name: each converts the protobuf request
// to the core's typed request, calls the core once, and converts the
// result; the interceptors have applied the role gate and write the audit
// line. The KeyService methods it does not define are the core's own.
type keyServiceServer struct{ *Service }

var _ pb.KeyServiceServer = keyServiceServer{}

// CreateKey adds the rule of this API that every key is made with an
// alias (the AWS front, like AWS, makes keys without one).
func (g keyServiceServer) CreateKey(ctx context.Context, req *pb.CreateKeyRequest) (*pb.CreateKeyResponse, error) {
	if req.GetAliasName() == "" {
		return nil, &keys.FieldError{Field: "AliasName", Problem: "is required: every key is created with an alias (alias/NAME)"}
	}
	k, err := g.Service.CreateKey(ctx, CreateKeyRequest{
		Spec: specFrom(req.GetKeySpec()), Usage: usageFrom(req.GetKeyUsage()),
		Description: req.GetDescription(), Tags: req.GetTags(), Alias: req.GetAliasName(),
	})
	if err != nil {
		return nil, err
	}
	return &pb.CreateKeyResponse{KeyMetadata: g.metadata(k)}, nil
}

func (g keyServiceServer) RotateKey(ctx context.Context, req *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	r, err := g.Service.RotateKey(ctx, RotateKeyRequest{KeyRef: req.GetKeyId()})
	if err != nil {
		return nil, err
	}
	return &pb.RotateKeyResponse{KeyId: r.Key.ID, Version: r.Version}, nil
}

func (g keyServiceServer) GetKeyPolicy(ctx context.Context, req *pb.GetKeyPolicyRequest) (*pb.GetKeyPolicyResponse, error) {
	p, err := g.Service.GetKeyPolicy(ctx, GetKeyPolicyRequest{KeyRef: req.GetKeyId()})
	if err != nil {
		return nil, err
	}
	return &pb.GetKeyPolicyResponse{Policy: p.Policy, IsDefault: p.IsDefault}, nil
}

func (g keyServiceServer) PutKeyPolicy(ctx context.Context, req *pb.PutKeyPolicyRequest) (*pb.PutKeyPolicyResponse, error) {
	if err := g.Service.PutKeyPolicy(ctx, PutKeyPolicyRequest{KeyRef: req.GetKeyId(), Policy: req.GetPolicy()}); err != nil {
		return nil, err
	}
	return &pb.PutKeyPolicyResponse{}, nil
}

func (g keyServiceServer) CreateGrant(ctx context.Context, req *pb.CreateGrantRequest) (*pb.CreateGrantResponse, error) {
	gr, err := g.Service.CreateGrant(ctx, CreateGrantRequest{
		KeyRef: req.GetKeyId(), Grantee: req.GetGranteePrincipal(), RetiringPrincipal: req.GetRetiringPrincipal(),
		Operations: req.GetOperations(), Name: req.GetName(),
		ContextEquals: req.GetConstraints().GetEncryptionContextEquals(), ContextSubset: req.GetConstraints().GetEncryptionContextSubset(),
	})
	if err != nil {
		return nil, err
	}
	return &pb.CreateGrantResponse{GrantId: gr.ID, GrantToken: gr.ID}, nil
}

// ListGrants pages with opaque tokens (encodePageToken) over the core's
// grant ids.
func (g keyServiceServer) ListGrants(ctx context.Context, req *pb.ListGrantsRequest) (*pb.ListGrantsResponse, error) {
	scope := strings.Join([]string{"ListGrants", req.GetKeyId(), req.GetGrantId(), req.GetGranteePrincipal()}, "\x00")
	after, err := decodePageToken("PageToken", scope, req.GetPageToken(), isGrantIDPosition)
	if err != nil {
		return nil, err
	}
	page, err := g.Service.ListGrants(ctx, ListGrantsRequest{KeyRef: req.GetKeyId(), GrantID: req.GetGrantId(),
		Grantee: req.GetGranteePrincipal(), After: after, PageSize: req.GetPageSize()})
	if err != nil {
		return nil, err
	}
	resp := &pb.ListGrantsResponse{NextPageToken: encodePageToken(scope, page.Next)}
	for _, gr := range page.Grants {
		resp.Grants = append(resp.Grants, grantPB(gr))
	}
	return resp, nil
}

func (g keyServiceServer) RevokeGrant(ctx context.Context, req *pb.RevokeGrantRequest) (*pb.RevokeGrantResponse, error) {
	if err := g.Service.RevokeGrant(ctx, RevokeGrantRequest{KeyRef: req.GetKeyId(), GrantID: req.GetGrantId()}); err != nil {
		return nil, err
	}
	return &pb.RevokeGrantResponse{}, nil
}

func (g keyServiceServer) RetireGrant(ctx context.Context, req *pb.RetireGrantRequest) (*pb.RetireGrantResponse, error) {
	if err := g.Service.RetireGrant(ctx, RetireGrantRequest{KeyRef: req.GetKeyId(), GrantID: req.GetGrantId()}); err != nil {
		return nil, err
	}
	return &pb.RetireGrantResponse{}, nil
}

// grantPB is the API view of a grant.
func grantPB(g cluster.Grant) *pb.Grant {
	out := &pb.Grant{GrantId: g.ID, KeyId: g.KeyID, Name: g.Name, GranteePrincipal: g.Grantee,
		RetiringPrincipal: g.RetiringPrincipal, Operations: g.Operations, IssuingPrincipal: g.Issuer, CreateTime: ts(g.CreatedAt)}
	if len(g.ContextEquals) > 0 || len(g.ContextSubset) > 0 {
		out.Constraints = &pb.GrantConstraints{EncryptionContextEquals: g.ContextEquals, EncryptionContextSubset: g.ContextSubset}
	}
	return out
}
