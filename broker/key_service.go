package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// CreateKeyRequest is a request to make a key, the same for every front.
type CreateKeyRequest struct {
	// Spec is the kind of key material; "" is keys.SpecSymmetricDefault.
	Spec keys.Spec
	// Usage is what the key is for; "" is the spec's default usage.
	Usage keys.Usage
	// Description is free text, at most keys.MaxDescription characters.
	Description string
	// Tags are the key's tags (keys.ValidateTags).
	Tags map[string]string
	// Alias, when set, names the key (alias/NAME); it is made with the key.
	Alias string
	// Policy, when set, is the key's policy document (CheckKeyPolicy);
	// nil gives the key the default policy (every admin and its creator).
	Policy *string
}

// CreateKey makes a key in this node's HSM, wraps it under the domain key,
// and replicates it with its alias, tags and policy in one command: the
// key exists with all of them, or not at all. Every field is checked
// before the HSM generates anything.
func (s *Service) CreateKey(ctx context.Context, req CreateKeyRequest) (cluster.Key, error) {
	if req.Spec == "" {
		req.Spec = keys.SpecSymmetricDefault
	}
	if !req.Spec.Valid() {
		return cluster.Key{}, &keys.FieldError{Field: "KeySpec", Problem: fmt.Sprintf("%q is not a supported key spec", req.Spec)}
	}
	usage, err := keys.ValidateCreate(req.Spec, req.Usage)
	if err != nil {
		return cluster.Key{}, err
	}
	if err := keys.ValidateDescription(req.Description); err != nil {
		return cluster.Key{}, err
	}
	if err := keys.ValidateTags(req.Tags); err != nil {
		return cluster.Key{}, err
	}
	var policy []byte
	if req.Policy != nil {
		if err := CheckKeyPolicy(*req.Policy); err != nil {
			return cluster.Key{}, err
		}
		policy = []byte(*req.Policy)
	}
	if req.Alias != "" {
		if err := keys.ValidateAliasName(req.Alias); err != nil {
			return cluster.Key{}, err
		}
		if _, exists := s.node.State().ResolveAlias(req.Alias); exists {
			return cluster.Key{}, newAlreadyExists("alias %s already exists", req.Alias)
		}
	}
	g, err := s.hsm.GenerateKey(ctx, req.Spec)
	if err != nil {
		return cluster.Key{}, fmt.Errorf("generate %s key: %w", req.Spec, err)
	}
	now := s.now()
	k := cluster.Key{
		ID: keys.NewKeyID(), Spec: req.Spec, Usage: usage, State: keys.StateEnabled,
		Description: req.Description, Tags: req.Tags, Creator: Principal(ctx), CreatedAt: now, Policy: policy,
		Versions:       []cluster.KeyVersion{{Number: 1, Wrapped: g.Wrapped, PublicKey: g.PublicKey, CreatedAt: now}},
		CurrentVersion: 1,
	}
	if _, err := s.apply(ctx, &cluster.CreateKey{Key: k, Alias: req.Alias}); err != nil {
		return cluster.Key{}, err
	}
	stored, ok := s.node.State().Key(k.ID)
	if !ok {
		return cluster.Key{}, fmt.Errorf("key %s missing after commit", k.ID)
	}
	return stored, nil
}

// DescribeKey returns a key's metadata. With consistent_read the answer
// reflects every write acknowledged before the call.
func (s *Service) DescribeKey(ctx context.Context, req *pb.DescribeKeyRequest) (*pb.DescribeKeyResponse, error) {
	if req.GetConsistentRead() {
		if err := s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	k, err := s.resolve(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	return &pb.DescribeKeyResponse{KeyMetadata: s.metadata(k)}, nil
}

// linearize makes this node's state at least as new as every write
// acknowledged before the call: the leader takes its own read index
// (cluster.Node.ReadIndex: it confirms its leadership with a quorum) and
// waits until its state has applied it; a follower asks the leader for it
// and waits the same way. A read appends nothing to the log.
func (s *Service) linearize(ctx context.Context) error {
	if !s.node.IsLeader() {
		return s.syncWithLeader(ctx)
	}
	if err := s.readIndexHere(ctx, true); err != nil {
		return fmt.Errorf("consistent read: %w", err)
	}
	return nil
}

// Page tokens are the last id or name of the previous page and a digest of
// the request they page (the list, and the key or filters it was asked
// for), base64url encoded so that callers treat them as opaque: a token is
// good only for the request that issued it, as the API says the other
// fields must not change between pages.
func encodePageToken(scope, last string) string {
	if last == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(append(append([]byte(last), 0), pageScope(scope)...))
}

// pageScope is the digest of a page token's request.
func pageScope(scope string) []byte {
	h := sha256.Sum256([]byte(scope))
	return h[:pageScopeSize]
}

const pageScopeSize = 8

// decodePageToken returns the position tok holds. A token this service did
// not issue is refused rather than read as a position past the end, which
// would answer with an empty last page: it must be the canonical encoding
// of a position that isPosition accepts, of the kind the list pages by,
// issued for the same request (scope).
func decodePageToken(field, scope, tok string, isPosition func(string) bool) (string, error) {
	if tok == "" {
		return "", nil
	}
	invalid := func(why string) error {
		return &Error{Code: codes.InvalidArgument, Exception: ExcInvalidMarker, Message: fmt.Sprintf("invalid %s: %s", field, why)}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	n := len(b) - pageScopeSize - 1
	if err != nil || n < 1 || n > 512 || b[n] != 0 || !isPosition(string(b[:n])) {
		return "", invalid("not a token this service issued")
	}
	if !bytes.Equal(b[n+1:], pageScope(scope)) {
		return "", invalid("issued for another request; give the same key and filters on every page")
	}
	return string(b[:n]), nil
}

// isGrantIDPosition reports whether s is a grant id as CreateGrant makes
// them (ListGrants' position; the others are in package keys).
func isGrantIDPosition(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == grantIDSize && hex.EncodeToString(b) == s
}

// ListKeys pages through every key, ordered by id.
func (s *Service) ListKeys(ctx context.Context, req *pb.ListKeysRequest) (*pb.ListKeysResponse, error) {
	limit, err := keys.PageSize(req.GetPageSize())
	if err != nil {
		return nil, fieldErr("PageSize", err)
	}
	after, err := decodePageToken("PageToken", "ListKeys", req.GetPageToken(), keys.IsKeyIDPosition)
	if err != nil {
		return nil, err
	}
	page, next := s.node.State().KeysPage(after, limit)
	resp := &pb.ListKeysResponse{}
	size := 0
	for i, k := range page {
		m := s.metadata(k)
		resp.Keys = append(resp.Keys, m)
		// A key's description and tags may take 110 KB, so a page of
		// 1,000 keys could pass a client's receive limit (4 MiB by
		// default in gRPC): it ends early once it holds maxPageBytes.
		if size += proto.Size(m); size >= maxPageBytes && i < len(page)-1 {
			next = k.ID
			break
		}
	}
	resp.NextPageToken = encodePageToken("ListKeys", next)
	return resp, nil
}

// maxPageBytes is about the most a page of keys or grants holds, a
// quarter of gRPC's default receive limit: a page may end before its
// PageSize with more to follow, as the API says it may.
const maxPageBytes = 1 << 20

// UpdateKeyDescription replaces a key's description.
func (s *Service) UpdateKeyDescription(ctx context.Context, req *pb.UpdateKeyDescriptionRequest) (*pb.UpdateKeyDescriptionResponse, error) {
	k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := keys.ValidateDescription(req.GetDescription()); err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, pendingErr(k)
	}
	_, err = s.apply(ctx, &cluster.UpdateDescription{KeyID: k.ID, Description: req.GetDescription()})
	return &pb.UpdateKeyDescriptionResponse{}, err
}

func pendingErr(k cluster.Key) error {
	return newError(codes.FailedPrecondition, ExcInvalidState, "key %s is pending deletion; cancel the deletion first", k.ID)
}

// EnableKey enables a disabled key. A key pending deletion must have its
// deletion cancelled first.
func (s *Service) EnableKey(ctx context.Context, req *pb.EnableKeyRequest) (*pb.EnableKeyResponse, error) {
	if err := s.setKeyState(ctx, req.GetKeyId(), keys.StateEnabled); err != nil {
		return nil, err
	}
	return &pb.EnableKeyResponse{}, nil
}

// DisableKey disables a key: every node refuses to use it once it has
// applied the change.
func (s *Service) DisableKey(ctx context.Context, req *pb.DisableKeyRequest) (*pb.DisableKeyResponse, error) {
	if err := s.setKeyState(ctx, req.GetKeyId(), keys.StateDisabled); err != nil {
		return nil, err
	}
	return &pb.DisableKeyResponse{}, nil
}

// setKeyState enables or disables the key ref names; a key pending
// deletion must have its deletion cancelled first.
func (s *Service) setKeyState(ctx context.Context, ref string, st keys.State) error {
	k, err := s.resolveID(ctx, "KeyId", ref)
	if err != nil {
		return err
	}
	if k.State == keys.StatePendingDeletion {
		return pendingErr(k)
	}
	_, err = s.apply(ctx, &cluster.SetKeyState{KeyID: k.ID, State: st})
	return err
}

// ScheduleKeyDeletion makes a key unusable now and deletes it after the
// waiting period (7 to 30 days, default 30); the leader carries out the
// deletion.
func (s *Service) ScheduleKeyDeletion(ctx context.Context, req *pb.ScheduleKeyDeletionRequest) (*pb.ScheduleKeyDeletionResponse, error) {
	if req.GetPendingWindowDays() > 1000 {
		return nil, &keys.FieldError{Field: "PendingWindowDays", Problem: fmt.Sprintf("must be 7 to 30 days, got %d", req.GetPendingWindowDays())}
	}
	days, err := keys.PendingWindow(int32(req.GetPendingWindowDays()))
	if err != nil {
		return nil, fieldErr("PendingWindowDays", err)
	}
	k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "key %s is already pending deletion (on %s)", k.ID, k.DeletionDate.Format(time.RFC3339))
	}
	date := s.now().Add(time.Duration(days) * 24 * time.Hour)
	if _, err := s.apply(ctx, &cluster.ScheduleDeletion{KeyID: k.ID, DeletionDate: date, PendingWindowDays: days}); err != nil {
		return nil, err
	}
	return &pb.ScheduleKeyDeletionResponse{KeyId: k.ID, DeletionDate: ts(date), KeyState: pb.KeyState_KEY_STATE_PENDING_DELETION,
		PendingWindowDays: uint32(days)}, nil
}

// CancelKeyDeletion takes a key out of PendingDeletion; like AWS KMS it
// comes back disabled.
func (s *Service) CancelKeyDeletion(ctx context.Context, req *pb.CancelKeyDeletionRequest) (*pb.CancelKeyDeletionResponse, error) {
	k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if k.State != keys.StatePendingDeletion {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "key %s is not pending deletion (it is %s)", k.ID, k.State)
	}
	if _, err := s.apply(ctx, &cluster.CancelDeletion{KeyID: k.ID}); err != nil {
		return nil, err
	}
	return &pb.CancelKeyDeletionResponse{KeyId: k.ID, KeyState: pb.KeyState_KEY_STATE_DISABLED}, nil
}

// RotateKeyRequest is a request to rotate a key now.
type RotateKeyRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
}

// RotateKeyResult is a rotated key and the version the rotation made.
type RotateKeyResult struct {
	Key     cluster.Key // as it was before the rotation
	Version uint32
}

// RotateKey adds a new version to an enabled symmetric key, whatever its
// automatic rotation setting. New encryptions use it; ciphertexts under
// older versions keep decrypting.
func (s *Service) RotateKey(ctx context.Context, req RotateKeyRequest) (RotateKeyResult, error) {
	k, err := s.resolveID(ctx, "KeyId", req.KeyRef)
	if err != nil {
		return RotateKeyResult{Key: k}, err
	}
	if err := usable(k); err != nil {
		return RotateKeyResult{Key: k}, err
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage == keys.UsageRawEncryptDecrypt {
		return RotateKeyResult{Key: k}, errRotationUnsupported(k)
	}
	g, err := s.hsm.GenerateKey(ctx, k.Spec)
	if err != nil {
		return RotateKeyResult{Key: k}, fmt.Errorf("generate version: %w", err)
	}
	v := cluster.KeyVersion{Number: k.CurrentVersion + 1, Wrapped: g.Wrapped, CreatedAt: s.now()}
	if _, err := s.apply(ctx, &cluster.AddVersion{KeyID: k.ID, Version: v}); err != nil {
		return RotateKeyResult{Key: k}, err
	}
	return RotateKeyResult{Key: k, Version: v.Number}, nil
}

// ListKeyVersions lists a key's versions, oldest first.
func (s *Service) ListKeyVersions(ctx context.Context, req *pb.ListKeyVersionsRequest) (*pb.ListKeyVersionsResponse, error) {
	k, err := s.resolve(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	limit, err := keys.PageSize(req.GetPageSize())
	if err != nil {
		return nil, fieldErr("PageSize", err)
	}
	scope := "ListKeyVersions/" + k.ID
	after, err := decodePageToken("PageToken", scope, req.GetPageToken(), keys.IsIndexPosition)
	if err != nil {
		return nil, err
	}
	start := 0
	if after != "" {
		start, _ = strconv.Atoi(after)
	}
	resp := &pb.ListKeyVersionsResponse{}
	for i := start; i < len(k.Versions) && len(resp.Versions) < limit; i++ {
		v := k.Versions[i]
		resp.Versions = append(resp.Versions, &pb.KeyVersion{Version: v.Number, CreateTime: ts(v.CreatedAt), Current: v.Number == k.CurrentVersion})
		if len(resp.Versions) == limit && i+1 < len(k.Versions) {
			resp.NextPageToken = encodePageToken(scope, fmt.Sprint(i+1))
		}
	}
	return resp, nil
}

// TagKey adds or replaces tags.
func (s *Service) TagKey(ctx context.Context, req *pb.TagKeyRequest) (*pb.TagKeyResponse, error) {
	k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if len(req.GetTags()) == 0 {
		return nil, &keys.FieldError{Field: "Tags", Problem: "must name at least one tag"}
	}
	merged := map[string]string{}
	for tk, tv := range k.Tags {
		merged[tk] = tv
	}
	for tk, tv := range req.GetTags() {
		merged[tk] = tv
	}
	if err := keys.ValidateTags(merged); err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, pendingErr(k)
	}
	_, err = s.apply(ctx, &cluster.TagKey{KeyID: k.ID, Tags: req.GetTags()})
	return &pb.TagKeyResponse{}, err
}

// UntagKey removes tags.
func (s *Service) UntagKey(ctx context.Context, req *pb.UntagKeyRequest) (*pb.UntagKeyResponse, error) {
	k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := keys.ValidateTagKeys(req.GetTagKeys()); err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, pendingErr(k)
	}
	_, err = s.apply(ctx, &cluster.UntagKey{KeyID: k.ID, TagKeys: req.GetTagKeys()})
	return &pb.UntagKeyResponse{}, err
}

// ListKeyTags returns a key's tags.
func (s *Service) ListKeyTags(ctx context.Context, req *pb.ListKeyTagsRequest) (*pb.ListKeyTagsResponse, error) {
	k, err := s.resolve(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeyTagsResponse{KeyId: k.ID, Tags: k.Tags}, nil
}

// CreateAlias names a key.
func (s *Service) CreateAlias(ctx context.Context, req *pb.CreateAliasRequest) (*pb.CreateAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, err
	}
	k, err := s.resolveID(ctx, "TargetKeyId", req.GetTargetKeyId())
	if err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, pendingErr(k)
	}
	if _, exists := s.node.State().ResolveAlias(req.GetAliasName()); exists {
		return nil, newAlreadyExists("alias %s already exists", req.GetAliasName())
	}
	if _, err := s.apply(ctx, &cluster.CreateAlias{Name: req.GetAliasName(), KeyID: k.ID, At: s.now()}); err != nil {
		return nil, err
	}
	return &pb.CreateAliasResponse{Alias: s.aliasView(req.GetAliasName())}, nil
}

// UpdateAlias points an alias at another key of the same type and usage.
func (s *Service) UpdateAlias(ctx context.Context, req *pb.UpdateAliasRequest) (*pb.UpdateAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, err
	}
	k, err := s.resolveID(ctx, "TargetKeyId", req.GetTargetKeyId())
	if err != nil {
		return nil, err
	}
	cur, exists := s.node.State().ResolveAlias(req.GetAliasName())
	if !exists {
		return nil, errNotFound("alias %s does not exist", req.GetAliasName())
	}
	// Moving an alias changes what its current key's users reach, so the
	// caller needs kms:UpdateAlias on that key too, as in AWS KMS.
	old, ok, err := s.keyByID(ctx, cur)
	if err != nil {
		return nil, err
	}
	if ok && (old.Usage != k.Usage || old.Spec.Family() != k.Spec.Family()) {
		return nil, &keys.FieldError{Field: "TargetKeyId", Problem: fmt.Sprintf(
			"key %s (%s, %s) is not the same type and usage as the alias's current key (%s, %s)", k.ID, k.Spec, k.Usage, old.Spec, old.Usage)}
	}
	if _, err := s.apply(ctx, &cluster.UpdateAlias{Name: req.GetAliasName(), KeyID: k.ID, At: s.now()}); err != nil {
		return nil, err
	}
	return &pb.UpdateAliasResponse{Alias: s.aliasView(req.GetAliasName())}, nil
}

// DeleteAlias removes an alias; its key is unaffected.
func (s *Service) DeleteAlias(ctx context.Context, req *pb.DeleteAliasRequest) (*pb.DeleteAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, err
	}
	cur, exists := s.node.State().ResolveAlias(req.GetAliasName())
	if !exists {
		return nil, errNotFound("alias %s does not exist", req.GetAliasName())
	}
	// The caller needs kms:DeleteAlias on the alias's key, as in AWS KMS:
	// else an admin a key's policy refuses could take its alias away and
	// name another key with it.
	if _, _, err := s.keyByID(ctx, cur); err != nil {
		return nil, err
	}
	_, err := s.apply(ctx, &cluster.DeleteAlias{Name: req.GetAliasName()})
	return &pb.DeleteAliasResponse{}, err
}

// ListAliases pages through aliases, of one key or all, ordered by name.
func (s *Service) ListAliases(ctx context.Context, req *pb.ListAliasesRequest) (*pb.ListAliasesResponse, error) {
	limit, err := keys.PageSize(req.GetPageSize())
	if err != nil {
		return nil, fieldErr("PageSize", err)
	}
	keyID := ""
	if req.GetKeyId() != "" {
		k, err := s.resolveID(ctx, "KeyId", req.GetKeyId())
		if err != nil {
			return nil, err
		}
		keyID = k.ID
	}
	scope := "ListAliases/" + keyID
	after, err := decodePageToken("PageToken", scope, req.GetPageToken(), keys.IsAliasPosition)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListAliasesResponse{}
	for _, a := range s.node.State().Aliases(keyID) {
		if a.Name <= after {
			continue
		}
		if len(resp.Aliases) == limit {
			resp.NextPageToken = encodePageToken(scope, resp.Aliases[limit-1].AliasName)
			break
		}
		resp.Aliases = append(resp.Aliases, s.aliasPB(a))
	}
	return resp, nil
}

func (s *Service) aliasPB(a cluster.Alias) *pb.Alias {
	return &pb.Alias{AliasName: a.Name, AliasArn: s.AliasARN(a.Name), TargetKeyId: a.KeyID,
		CreateTime: ts(a.CreatedAt), UpdateTime: ts(a.UpdatedAt)}
}

func (s *Service) aliasView(name string) *pb.Alias {
	a, _ := s.node.State().Alias(name)
	return s.aliasPB(a)
}

func newAlreadyExists(format string, args ...any) *Error {
	return newError(codes.AlreadyExists, ExcAlreadyExists, format, args...)
}

// GetKeyPolicyRequest asks for a key's policy.
type GetKeyPolicyRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
}

// KeyPolicyDocument is a key's policy.
type KeyPolicyDocument struct {
	// Policy is the document as it was put, or the key's default policy.
	Policy string
	// IsDefault says no policy was put: Policy is the default one (every
	// admin and the key's creator).
	IsDefault bool
}

// GetKeyPolicy returns a key's policy document as it was put, or its
// default policy when none was.
func (s *Service) GetKeyPolicy(ctx context.Context, req GetKeyPolicyRequest) (KeyPolicyDocument, error) {
	k, err := s.resolve(ctx, "KeyId", req.KeyRef)
	if err != nil {
		return KeyPolicyDocument{}, err
	}
	if len(k.Policy) == 0 {
		return KeyPolicyDocument{Policy: s.defaultPolicyFor(k), IsDefault: true}, nil
	}
	return KeyPolicyDocument{Policy: string(k.Policy)}, nil
}

// PutKeyPolicyRequest replaces a key's policy.
type PutKeyPolicyRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
	// Policy is the new document (CheckKeyPolicy), stored verbatim.
	Policy string
}

// PutKeyPolicy replaces a key's policy document. The document is checked
// (a JSON object with statements this service can evaluate, at most
// MaxKeyPolicy bytes) and stored verbatim; every node evaluates it on every
// request that reaches the key (see authz.go).
func (s *Service) PutKeyPolicy(ctx context.Context, req PutKeyPolicyRequest) error {
	if err := CheckKeyPolicy(req.Policy); err != nil {
		return err
	}
	k, err := s.resolveID(ctx, "KeyId", req.KeyRef)
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, &cluster.PutPolicy{KeyID: k.ID, Policy: []byte(req.Policy)})
	return err
}
