package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// grantIDSize is the size of a grant id in bytes; the id is their
// lowercase hex.
const grantIDSize = 32

// grantOperation is what a grant's operation asks of the grant and its
// key: whether it takes an encryption context (constraints need one), and
// which keys can do it at all (nil: any key). AWS refuses a grant for an
// operation its key cannot do (Sign on a symmetric encryption key) rather
// than keep one that is never used.
type grantOperation struct {
	takesContext bool
	keyCan       func(k cluster.Key) bool
}

// grantOperations are the operations a grant can give, by AWS name.
var grantOperations = func() map[string]grantOperation {
	usage := func(u keys.Usage) func(cluster.Key) bool {
		return func(k cluster.Key) bool { return k.Usage == u }
	}
	encrypts := usage(keys.UsageEncryptDecrypt)
	dataKeys := func(k cluster.Key) bool { return encrypts(k) && k.Spec == keys.SpecSymmetricDefault }
	return map[string]grantOperation{
		"Encrypt": {true, encrypts}, "Decrypt": {true, encrypts}, "ReEncryptFrom": {true, encrypts}, "ReEncryptTo": {true, encrypts},
		"GenerateDataKey": {true, dataKeys}, "GenerateDataKeyWithoutPlaintext": {true, dataKeys},
		"GenerateDataKeyPair": {true, dataKeys}, "GenerateDataKeyPairWithoutPlaintext": {true, dataKeys},
		"Sign": {false, usage(keys.UsageSignVerify)}, "Verify": {false, usage(keys.UsageSignVerify)},
		"GenerateMac": {false, usage(keys.UsageGenerateVerifyMAC)}, "VerifyMac": {false, usage(keys.UsageGenerateVerifyMAC)},
		"GetPublicKey": {false, func(k cluster.Key) bool { return k.Spec.IsAsymmetric() }},
		"DescribeKey":  {false, nil}, "RetireGrant": {false, nil},
	}
}()

// unsupportedGrantOperations are grant operations AWS KMS has and this
// service does not give: refused as unsupported, not as unknown.
var unsupportedGrantOperations = map[string]bool{"CreateGrant": true, "DeriveSharedSecret": true}

// CreateGrantRequest is a request to give a principal operations on a key.
type CreateGrantRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
	// Grantee is the principal the grant is for, by name or as
	// arn:aws:iam::ACCOUNT:user/NAME. Required.
	Grantee string
	// RetiringPrincipal, when set, may retire the grant.
	RetiringPrincipal string
	// Operations are the AWS names of the operations the grant gives
	// (grantOperations). At least one.
	Operations []string
	// ContextEquals and ContextSubset constrain the encryption context of
	// the requests the grant allows; at most one of them, and only when
	// every operation takes an encryption context.
	ContextEquals map[string]string
	ContextSubset map[string]string
	// Name, when set, makes the request idempotent: a grant with the same
	// name, key, grantee, operations and constraints is that one.
	Name string
	// DryRun checks the request, authorization included, and stops before
	// the grant is made.
	DryRun bool
}

// CreateGrant checks and replicates a grant and returns it. A grant with
// the same name, key, grantee, operations and constraints as an existing
// one is that one (CreateGrant is idempotent by name, as in AWS).
func (s *Service) CreateGrant(ctx context.Context, in CreateGrantRequest) (cluster.Grant, error) {
	in.Grantee, in.RetiringPrincipal = s.principalName(in.Grantee), s.principalName(in.RetiringPrincipal)
	if err := s.checkGrantPrincipal("GranteePrincipal", in.Grantee, true); err != nil {
		return cluster.Grant{}, err
	}
	if err := s.checkGrantPrincipal("RetiringPrincipal", in.RetiringPrincipal, false); err != nil {
		return cluster.Grant{}, err
	}
	if len(in.Name) > 256 || strings.ContainsFunc(in.Name, func(r rune) bool { return !isGrantNameChar(r) }) {
		return cluster.Grant{}, &keys.FieldError{Field: "Name", Problem: "must be at most 256 characters, each a letter, digit or one of : / _ -"}
	}
	if len(in.Operations) == 0 {
		return cluster.Grant{}, &keys.FieldError{Field: "Operations", Problem: "must name at least one operation"}
	}
	ops := slices.Clone(in.Operations)
	slices.Sort(ops)
	ops = slices.Compact(ops)
	allTakeContext := true
	for _, op := range ops {
		gop, ok := grantOperations[op]
		if !ok && unsupportedGrantOperations[op] {
			return cluster.Grant{}, errUnsupported("grants for %s are not supported by this key service", op)
		}
		if !ok {
			return cluster.Grant{}, &keys.FieldError{Field: "Operations", Problem: fmt.Sprintf("%.64q is not an operation a grant can give (%s)", op, strings.Join(slices.Sorted(maps.Keys(grantOperations)), ", "))}
		}
		allTakeContext = allTakeContext && gop.takesContext
	}
	if len(in.ContextEquals) > 0 && len(in.ContextSubset) > 0 {
		return cluster.Grant{}, &keys.FieldError{Field: "Constraints", Problem: "may set EncryptionContextEquals or EncryptionContextSubset, not both"}
	}
	for field, m := range map[string]map[string]string{"EncryptionContextEquals": in.ContextEquals, "EncryptionContextSubset": in.ContextSubset} {
		if _, err := validContext(field, m); err != nil {
			return cluster.Grant{}, err
		}
		if len(m) > 0 && !allTakeContext {
			return cluster.Grant{}, &keys.FieldError{Field: "Constraints", Problem: "apply only to grants whose operations all take an encryption context"}
		}
	}
	k, err := s.resolveID(ctx, "KeyId", in.KeyRef)
	if err != nil {
		return cluster.Grant{}, err
	}
	for _, op := range ops {
		if can := grantOperations[op].keyCan; can != nil && !can(k) {
			return cluster.Grant{}, &keys.FieldError{Field: "Operations", Problem: fmt.Sprintf("%s is not an operation key %s can do (%s, %s); a grant for it would never be used", op, k.ID, k.Spec, k.Usage)}
		}
	}
	g := cluster.Grant{KeyID: k.ID, Name: in.Name, Grantee: in.Grantee, RetiringPrincipal: in.RetiringPrincipal,
		Operations: ops, ContextEquals: nonEmpty(in.ContextEquals), ContextSubset: nonEmpty(in.ContextSubset),
		Issuer: Principal(ctx), CreatedAt: s.now()}
	if in.Name != "" {
		for _, old := range s.node.State().Grants(k.ID, in.Grantee) {
			if sameGrant(old, g) {
				return old, nil
			}
		}
	}
	if in.DryRun {
		return g, nil
	}
	id := make([]byte, grantIDSize)
	if _, err := rand.Read(id); err != nil {
		return cluster.Grant{}, err
	}
	g.ID = hex.EncodeToString(id)
	if _, err := s.apply(ctx, &cluster.CreateGrant{Grant: g}); err != nil {
		return cluster.Grant{}, err
	}
	return g, nil
}

func nonEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func sameGrant(a, b cluster.Grant) bool {
	return a.Name == b.Name && a.KeyID == b.KeyID && a.Grantee == b.Grantee && a.RetiringPrincipal == b.RetiringPrincipal &&
		slices.Equal(a.Operations, b.Operations) && maps.Equal(a.ContextEquals, b.ContextEquals) && maps.Equal(a.ContextSubset, b.ContextSubset)
}

// principalName accepts a principal as its name or as the IAM user ARN
// key policies also accept (arn:aws:iam::ACCOUNT:user/NAME), and returns
// its name.
func (s *Service) principalName(p string) string {
	if name, ok := strings.CutPrefix(p, "arn:aws:iam::"+s.cfg.Account+":user/"); ok && name != "" {
		return name
	}
	return p
}

// checkGrantPrincipal checks the principal a grant names (after
// principalName): one principal of this service, by name, since a grant
// is matched against the caller's principal name only. "*", role ARNs and
// the ARNs of other accounts would name no caller, and the grant would
// silently never apply.
func (s *Service) checkGrantPrincipal(field, p string, required bool) error {
	if err := checkPrincipalName(field, p, required); err != nil {
		return err
	}
	if p == "*" || strings.HasPrefix(p, "arn:") {
		return &keys.FieldError{Field: field, Problem: fmt.Sprintf("must name one principal of this service, by name or as arn:aws:iam::%s:user/NAME; %q names none", s.cfg.Account, p)}
	}
	return nil
}

// isGrantNameChar reports whether r may appear in a grant name (AWS:
// [a-zA-Z0-9:/_-]).
func isGrantNameChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(":/_-", r)
}

// checkPrincipalName checks a principal named in a request.
func checkPrincipalName(field, p string, required bool) error {
	switch {
	case p == "" && required:
		return &keys.FieldError{Field: field, Problem: "is required"}
	case len(p) > 256:
		return &keys.FieldError{Field: field, Problem: "must be at most 256 characters"}
	case strings.ContainsFunc(p, keys.IsDisplayControl):
		return &keys.FieldError{Field: field, Problem: "must not contain control characters or bidirectional formatting characters"}
	}
	return nil
}

// ListGrantsRequest asks for a page of a key's grants, ordered by id.
type ListGrantsRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
	// GrantID and Grantee, when set, keep only that grant and the grants
	// of that principal.
	GrantID, Grantee string
	// After is the last grant id of the previous page ("" for the first).
	After string
	// PageSize is at most how many grants to return (keys.PageSize: 0 is
	// the default).
	PageSize int32
}

// GrantsPage is one page of grants; Next is the last id of a full page
// when more may follow, else "".
type GrantsPage struct {
	Grants []cluster.Grant
	Next   string
}

// ListGrants lists a key's grants.
func (s *Service) ListGrants(ctx context.Context, req ListGrantsRequest) (GrantsPage, error) {
	limit, err := keys.PageSize(req.PageSize)
	if err != nil {
		return GrantsPage{}, fieldErr("PageSize", err)
	}
	if req.After != "" && !isGrantIDPosition(req.After) {
		return GrantsPage{}, &Error{Code: codes.InvalidArgument, Exception: ExcInvalidMarker,
			Message: "invalid page position: not a grant id this service issued"}
	}
	// The filters are checked as the fields are where they name a grant or
	// a principal to act on: a malformed one is the caller's mistake, not
	// a filter that matches nothing.
	if req.GrantID != "" {
		if err := checkGrantID(req.GrantID); err != nil {
			return GrantsPage{}, err
		}
	}
	if err := checkPrincipalName("GranteePrincipal", req.Grantee, false); err != nil {
		return GrantsPage{}, err
	}
	k, err := s.resolve(ctx, "KeyId", req.KeyRef)
	if err != nil {
		return GrantsPage{}, err
	}
	var page []cluster.Grant
	size := 0
	for _, g := range s.node.State().Grants(k.ID, req.Grantee) {
		if g.ID <= req.After || (req.GrantID != "" && g.ID != req.GrantID) {
			continue
		}
		// A page ends at limit grants, or earlier once it holds
		// maxPageBytes (a grant's constraints may take 8 KiB each).
		if len(page) == limit || size >= maxPageBytes {
			return GrantsPage{Grants: page, Next: page[len(page)-1].ID}, nil
		}
		page = append(page, g)
		size += grantSize(g)
	}
	return GrantsPage{Grants: page}, nil
}

// grantSize is about what g takes in an answer, for maxPageBytes.
func grantSize(g cluster.Grant) int {
	n := 128 + len(g.ID) + len(g.KeyID) + len(g.Name) + len(g.Grantee) + len(g.RetiringPrincipal) + len(g.Issuer)
	for _, op := range g.Operations {
		n += len(op) + 4
	}
	for _, m := range []map[string]string{g.ContextEquals, g.ContextSubset} {
		for k, v := range m {
			n += len(k) + len(v) + 8
		}
	}
	return n
}

// RevokeGrantRequest deletes a grant on a key.
type RevokeGrantRequest struct {
	// KeyRef names the key: a key id, key ARN or alias.
	KeyRef string
	// GrantID names the grant. Required.
	GrantID string
	// DryRun checks the request, authorization included, and stops before
	// the grant is deleted.
	DryRun bool
}

// RevokeGrant deletes a grant on a key: the administrators' way.
func (s *Service) RevokeGrant(ctx context.Context, req RevokeGrantRequest) error {
	ref, grantID, dryRun := req.KeyRef, req.GrantID, req.DryRun
	if err := checkGrantID(grantID); err != nil {
		return err
	}
	k, err := s.resolveID(ctx, "KeyId", ref)
	if err != nil {
		return err
	}
	if g, ok := s.node.State().Grant(grantID); !ok || g.KeyID != k.ID {
		return errNotFound("grant %s does not exist on key %s", grantID, k.ID)
	}
	if dryRun {
		return nil
	}
	_, err = s.apply(ctx, &cluster.RemoveGrant{GrantID: grantID, KeyID: k.ID})
	return err
}

// checkGrantID refuses what is no grant id as CreateGrant makes them (64
// lowercase hex characters): a malformed id is the caller's mistake, not a
// grant that does not exist.
func checkGrantID(id string) error {
	switch {
	case id == "":
		return &keys.FieldError{Field: "GrantId", Problem: "is required"}
	case !isGrantIDPosition(id):
		return &Error{Code: codes.InvalidArgument, Exception: ExcInvalidGrantID,
			Message: fmt.Sprintf("invalid GrantId: must be %d lowercase hex characters, as CreateGrant returns, got %d characters", 2*grantIDSize, len(id))}
	}
	return nil
}

// RetireGrantRequest deletes a grant at the request of a principal the
// grant names.
type RetireGrantRequest struct {
	// KeyRef names the grant's key; "" lets the grant id name it.
	KeyRef string
	// GrantID names the grant (grant tokens are grant ids). Required.
	GrantID string
	// DryRun checks the request, authorization included, and stops before
	// the grant is deleted.
	DryRun bool
}

// RetireGrant deletes a grant at the request of its retiring principal,
// its grantee (when the grant gives RetireGrant), or an admin whom the
// key's policy lets retire grants.
func (s *Service) RetireGrant(ctx context.Context, req RetireGrantRequest) error {
	ref, grantID, dryRun := req.KeyRef, req.GrantID, req.DryRun
	if err := checkGrantID(grantID); err != nil {
		return err
	}
	g, ok := s.node.State().Grant(grantID)
	if !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return err
		}
		if g, ok = s.node.State().Grant(grantID); !ok {
			return errNotFound("grant %s does not exist", grantID)
		}
	}
	if ref == "" {
		ref = g.KeyID
	}
	k, err := s.resolveID(ctx, "KeyId", ref)
	if err != nil {
		return err
	}
	if k.ID != g.KeyID {
		return errNotFound("grant %s does not exist on key %s", grantID, k.ID)
	}
	if err := s.mayRetire(ctx, k, g); err != nil {
		return err
	}
	if dryRun {
		return nil
	}
	_, err = s.apply(ctx, &cluster.RemoveGrant{GrantID: grantID, KeyID: k.ID})
	return err
}

func (s *Service) mayRetire(ctx context.Context, k cluster.Key, g cluster.Grant) error {
	rq := requestOf(ctx)
	if rq == nil {
		return s.refuseUnmarked("RetireGrant")
	}
	id, _ := rq.identity()
	switch {
	case id.Open:
		return nil
	case id.Principal != "" && id.Principal == g.RetiringPrincipal:
		return nil
	case id.Principal != "" && id.Principal == g.Grantee && slices.Contains(g.Operations, "RetireGrant"):
		return nil
	case id.Role == authz.RoleAdmin:
		if ok, _ := s.keyAllows(k, id, "kms:RetireGrant", nil); ok {
			return nil
		}
	}
	reason := "only the grant's retiring principal, its grantee when the grant gives RetireGrant, or an admin the key policy allows may retire it"
	rq.deny(reason)
	return newError(codes.PermissionDenied, ExcAccessDenied, "%s may not retire grant %s: %s", id.Principal, g.ID, reason)
}
