package broker

import (
	"context"

	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// tdeServer is the gRPC adapter of TDEService: it decodes each request,
// calls one method of the TDE core, and encodes the result. The
// interceptors have applied the role gate and write the audit line.
type tdeServer struct {
	pb.UnimplementedTDEServiceServer
	core *TDEKeys
}

func (t tdeServer) CreateKey(ctx context.Context, req *pb.TDEServiceCreateKeyRequest) (*pb.TDEServiceCreateKeyResponse, error) {
	k, err := t.core.CreateKey(ctx, TDECreateRequest{Mount: req.GetMount(), Name: req.GetName(), Bytes: int(req.GetBytes()), KMSKey: req.GetKmsKeyId()})
	if err != nil {
		return nil, err
	}
	return &pb.TDEServiceCreateKeyResponse{Key: t.keyPB(k)}, nil
}

func (t tdeServer) RotateKey(ctx context.Context, req *pb.TDEServiceRotateKeyRequest) (*pb.TDEServiceRotateKeyResponse, error) {
	k, err := t.core.RotateKey(ctx, TDEKeyName{Mount: req.GetMount(), Name: req.GetName()})
	if err != nil {
		return nil, err
	}
	return &pb.TDEServiceRotateKeyResponse{Key: t.keyPB(k)}, nil
}

func (t tdeServer) RetireVersion(ctx context.Context, req *pb.TDEServiceRetireVersionRequest) (*pb.TDEServiceRetireVersionResponse, error) {
	k, err := t.core.RetireVersion(ctx, TDERetireRequest{Mount: req.GetMount(), Name: req.GetName(), Version: req.GetVersion()})
	if err != nil {
		return nil, err
	}
	return &pb.TDEServiceRetireVersionResponse{Key: t.keyPB(k)}, nil
}

func (t tdeServer) ListKeys(ctx context.Context, req *pb.TDEServiceListKeysRequest) (*pb.TDEServiceListKeysResponse, error) {
	l, err := t.core.ListKeys(ctx, req.GetMount())
	if err != nil {
		return nil, err
	}
	out := &pb.TDEServiceListKeysResponse{Keys: make([]*pb.TDEKey, len(l.Keys))}
	for i, k := range l.Keys {
		out.Keys[i] = tdeKeyPB(k, l.KMSKeyIDs[k.Mount])
	}
	return out, nil
}

func (t tdeServer) IssueToken(ctx context.Context, req *pb.TDEServiceIssueTokenRequest) (*pb.TDEServiceIssueTokenResponse, error) {
	tok, err := t.core.IssueToken(ctx, req.GetPrincipal())
	if err != nil {
		return nil, err
	}
	return &pb.TDEServiceIssueTokenResponse{Token: tok.Token, Info: tdeTokenPB(tok.Info)}, nil
}

func (t tdeServer) RevokeToken(ctx context.Context, req *pb.TDEServiceRevokeTokenRequest) (*pb.TDEServiceRevokeTokenResponse, error) {
	if err := t.core.RevokeToken(ctx, req.GetAccessor()); err != nil {
		return nil, err
	}
	return &pb.TDEServiceRevokeTokenResponse{}, nil
}

func (t tdeServer) ListTokens(ctx context.Context, _ *pb.TDEServiceListTokensRequest) (*pb.TDEServiceListTokensResponse, error) {
	ts, err := t.core.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.TDEServiceListTokensResponse{Tokens: make([]*pb.TDEToken, len(ts))}
	for i, tok := range ts {
		out.Tokens[i] = tdeTokenPB(tok)
	}
	return out, nil
}

// keyPB encodes a key that was just made or changed, with its mount's
// KMS key.
func (t tdeServer) keyPB(k cluster.TDEKey) *pb.TDEKey {
	m, _ := t.core.s.node.State().TDEMount(k.Mount)
	return tdeKeyPB(k, m.KMSKeyID)
}

func tdeKeyPB(k cluster.TDEKey, kms string) *pb.TDEKey {
	out := &pb.TDEKey{Mount: k.Mount, Name: k.Name, Bytes: uint32(k.Bytes), KmsKeyId: kms, CurrentVersion: k.Current(),
		Creator: k.Creator, CreateTime: ts(k.CreatedAt)}
	for _, v := range k.Versions {
		out.Versions = append(out.Versions, &pb.TDEKeyVersion{Version: v.Number, CreateTime: ts(v.CreatedAt), RetireTime: ts(v.RetiredAt)})
	}
	return out
}

func tdeTokenPB(t cluster.TDEToken) *pb.TDEToken {
	return &pb.TDEToken{Accessor: t.Accessor, Principal: t.Principal, Creator: t.Creator, CreateTime: ts(t.CreatedAt)}
}
