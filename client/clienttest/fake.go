package clienttest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The ARN parts of every fake key and alias.
const (
	Region  = "us-east-1"
	Account = "111122223333"
)

// Fake is an in-memory implementation of KeyService, CryptoService and the
// read side of ClusterService (status and backups). Its request checks,
// limits and validation messages are the broker's own (package
// keys), as is its symmetric ciphertext format; key material is
// generated and used in software and kept in memory. TestBroker is the
// conformance suite that holds it to the real broker's answers.
type Fake struct {
	pb.UnimplementedKeyServiceServer
	pb.UnimplementedCryptoServiceServer
	pb.UnimplementedClusterServiceServer

	mu      sync.Mutex
	keys    map[string]*fakeKey
	aliases map[string]*pb.Alias
	// Now is the clock; tests may replace it before the first call.
	Now func() time.Time
	// snapshot, if set, is what Backup sends; backupFail, if set, breaks
	// the next Backup stream after backupFailAfter chunks.
	snapshot        []byte
	backupFail      error
	backupFailAfter int
}

type fakeKey struct {
	meta     *pb.KeyMetadata // alias_names filled in on the way out
	spec     keys.Spec
	usage    keys.Usage
	deletion time.Time // when pending deletion
	versions []fakeVersion
	rsa      *rsa.PrivateKey
	ec       *ecdsa.PrivateKey
	hmac     []byte
}

type fakeVersion struct {
	created time.Time
	aes     cipher.AEAD
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{keys: map[string]*fakeKey{}, aliases: map[string]*pb.Alias{}, Now: time.Now}
}

// The AWS KMS exception names the broker puts in its errors' ErrorInfo
// reason (broker.Exc*, which this package cannot import: the broker needs
// cgo). TestBroker checks that both sides answer with the same ones.
const (
	excNotFound          = "NotFoundException"
	excAlreadyExists     = "AlreadyExistsException"
	excDisabled          = "DisabledException"
	excInvalidState      = "KMSInvalidStateException"
	excInvalidCiphertext = "InvalidCiphertextException"
	excIncorrectKey      = "IncorrectKeyException"
	excInvalidKeyUsage   = "InvalidKeyUsageException"
	excValidation        = "ValidationException"
	excInvalidMarker     = "InvalidMarkerException"
	excUnsupported       = "UnsupportedOperationException"
	excInternal          = "KMSInternalException"
)

func errNotFound(format string, args ...any) error {
	return Error(codes.NotFound, excNotFound, format, args...)
}

func errState(format string, args ...any) error {
	return Error(codes.FailedPrecondition, excInvalidState, format, args...)
}

func errUsage(format string, args ...any) error {
	return Error(codes.InvalidArgument, excInvalidKeyUsage, format, args...)
}

func errUnsupported(format string, args ...any) error {
	return Error(codes.FailedPrecondition, excUnsupported, format, args...)
}

var errInvalidCiphertext = Error(codes.InvalidArgument, excInvalidCiphertext, "%s", keys.InvalidCiphertextMessage)

// invalid turns an error of package keys into the status the broker
// answers with: a *keys.FieldError is ValidationException, a key that
// cannot do what is asked is InvalidKeyUsageException.
func invalid(err error) error {
	if errors.Is(err, keys.ErrInvalidKeyUsage) {
		return Error(codes.InvalidArgument, excInvalidKeyUsage, "%s", err.Error())
	}
	return Error(codes.InvalidArgument, excValidation, "%s", err.Error())
}

// invalidField is invalid with the field renamed to the request's.
func invalidField(field string, err error) error {
	var fe *keys.FieldError
	if errors.As(err, &fe) {
		c := *fe
		c.Field = field
		err = &c
	}
	return invalid(err)
}

func fieldError(field, format string, args ...any) error {
	return invalid(&keys.FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

func keyARN(id string) string { return "arn:aws:kms:" + Region + ":" + Account + ":key/" + id }

func aliasARN(name string) string { return "arn:aws:kms:" + Region + ":" + Account + ":" + name }

// Enum names in the API are the AWS names with a type prefix; these
// convert to and from the names package keys uses, as the broker does.
func fromEnum[E ~int32](v E, names map[int32]string, prefix string) string {
	if v == 0 {
		return ""
	}
	n, ok := names[int32(v)]
	if !ok {
		return fmt.Sprintf("UNKNOWN_%d", v)
	}
	return strings.TrimPrefix(n, prefix)
}

func toEnum[E ~int32](s string, values map[string]int32, prefix string) E {
	return E(values[prefix+s])
}

func encAlgTo(a keys.EncryptionAlgorithm) pb.EncryptionAlgorithm {
	return toEnum[pb.EncryptionAlgorithm](string(a), pb.EncryptionAlgorithm_value, "ENCRYPTION_ALGORITHM_")
}

func sigAlgTo(a keys.SigningAlgorithm) pb.SigningAlgorithm {
	return toEnum[pb.SigningAlgorithm](string(a), pb.SigningAlgorithm_value, "SIGNING_ALGORITHM_")
}

func macAlgTo(a keys.MacAlgorithm) pb.MacAlgorithm {
	return toEnum[pb.MacAlgorithm](string(a), pb.MacAlgorithm_value, "MAC_ALGORITHM_")
}

// resolve finds the key ref names (key id, key ARN, alias name or alias
// ARN), parsed as the broker parses it; field is the request field. The
// caller holds f.mu.
func (f *Fake) resolve(field, ref string) (*fakeKey, error) {
	return f.resolveRef(field, ref, true)
}

// resolveID is resolve for a field that takes a key id or key ARN only
// (the key of a change), as the broker's: an alias is refused.
func (f *Fake) resolveID(field, ref string) (*fakeKey, error) {
	return f.resolveRef(field, ref, false)
}

func (f *Fake) resolveRef(field, ref string, aliasOK bool) (*fakeKey, error) {
	kr, err := keys.ParseKeyRef(ref)
	if err != nil {
		return nil, invalidField(field, err)
	}
	if why := kr.OtherCluster(field, Region, Account); why != "" {
		return nil, errNotFound("%s", why)
	}
	if kr.IsAlias() && !aliasOK {
		return nil, invalid(keys.AliasNotAllowed(field, kr.Alias))
	}
	id := kr.KeyID
	if kr.Alias != "" {
		a, ok := f.aliases[kr.Alias]
		if !ok {
			return nil, errNotFound("alias %s does not exist", kr.Alias)
		}
		id = a.TargetKeyId
	}
	k, ok := f.keys[id]
	if !ok {
		return nil, errNotFound("key %s does not exist", id)
	}
	return k, nil
}

// out returns a copy of k's metadata with its aliases. The caller holds f.mu.
func (f *Fake) out(k *fakeKey) *pb.KeyMetadata {
	m := proto.Clone(k.meta).(*pb.KeyMetadata)
	m.AliasNames = nil
	for _, name := range slices.Sorted(maps.Keys(f.aliases)) {
		if f.aliases[name].TargetKeyId == m.KeyId {
			m.AliasNames = append(m.AliasNames, name)
		}
	}
	return m
}

// algorithms fills the algorithm lists of metadata from package keys.
func algorithms(m *pb.KeyMetadata, spec keys.Spec, usage keys.Usage) {
	for _, a := range spec.EncryptionAlgorithms(usage) {
		m.EncryptionAlgorithms = append(m.EncryptionAlgorithms, encAlgTo(a))
	}
	for _, a := range spec.SigningAlgorithms(usage) {
		m.SigningAlgorithms = append(m.SigningAlgorithms, sigAlgTo(a))
	}
	if usage == keys.UsageGenerateVerifyMAC {
		for _, a := range spec.MacAlgorithms() {
			m.MacAlgorithms = append(m.MacAlgorithms, macAlgTo(a))
		}
	}
}

func newAESVersion(now time.Time) fakeVersion {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	return fakeVersion{created: now, aes: aead}
}

// CreateKey implements KeyService.
func (f *Fake) CreateKey(_ context.Context, req *pb.CreateKeyRequest) (*pb.CreateKeyResponse, error) {
	if req.GetAliasName() == "" {
		return nil, fieldError("AliasName", "is required: every key is created with an alias (alias/NAME)")
	}
	spec := keys.Spec(fromEnum(req.GetKeySpec(), pb.KeySpec_name, "KEY_SPEC_"))
	if spec == "" {
		spec = keys.SpecSymmetricDefault
	}
	if !spec.Valid() {
		return nil, fieldError("KeySpec", "%q is not a supported key spec", spec)
	}
	usage := keys.Usage(fromEnum(req.GetKeyUsage(), pb.KeyUsage_name, "KEY_USAGE_"))
	usage, err := keys.ValidateCreate(spec, usage)
	if err != nil {
		return nil, invalid(err)
	}
	if err := keys.ValidateDescription(req.GetDescription()); err != nil {
		return nil, invalid(err)
	}
	if err := keys.ValidateTags(req.GetTags()); err != nil {
		return nil, invalid(err)
	}
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, invalid(err)
	}
	now := f.Now()
	k := &fakeKey{spec: spec, usage: usage, meta: &pb.KeyMetadata{
		KeySpec:        toEnum[pb.KeySpec](string(spec), pb.KeySpec_value, "KEY_SPEC_"),
		KeyUsage:       toEnum[pb.KeyUsage](string(usage), pb.KeyUsage_value, "KEY_USAGE_"),
		KeyState:       pb.KeyState_KEY_STATE_ENABLED,
		Description:    req.GetDescription(),
		CreateTime:     timestamppb.New(now),
		CurrentVersion: 1,
		Creator:        "CN=clienttest admin",
		Tags:           maps.Clone(req.GetTags()),
	}}
	algorithms(k.meta, spec, usage)
	switch {
	case spec == keys.SpecSymmetricDefault:
		k.versions = []fakeVersion{newAESVersion(now)}
	case spec.IsRSA():
		k.rsa, err = rsa.GenerateKey(rand.Reader, spec.RSABits())
	case spec.IsEC():
		curve := map[keys.Spec]elliptic.Curve{keys.SpecECCNISTP256: elliptic.P256(), keys.SpecECCNISTP384: elliptic.P384(), keys.SpecECCNISTP521: elliptic.P521()}[spec]
		k.ec, err = ecdsa.GenerateKey(curve, rand.Reader)
	case spec.IsHMAC():
		k.hmac = make([]byte, spec.MacAlgorithms()[0].Hash().Size())
		_, _ = rand.Read(k.hmac)
	}
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	if k.versions == nil {
		k.versions = []fakeVersion{{created: now}}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.aliases[req.GetAliasName()]; taken {
		return nil, Error(codes.AlreadyExists, excAlreadyExists, "alias %s already exists", req.GetAliasName())
	}
	k.meta.KeyId = keys.NewKeyID()
	k.meta.Arn = keyARN(k.meta.KeyId)
	f.keys[k.meta.KeyId] = k
	f.aliases[req.GetAliasName()] = &pb.Alias{
		AliasName: req.GetAliasName(), AliasArn: aliasARN(req.GetAliasName()), TargetKeyId: k.meta.KeyId,
		CreateTime: timestamppb.New(now), UpdateTime: timestamppb.New(now),
	}
	return &pb.CreateKeyResponse{KeyMetadata: f.out(k)}, nil
}

// DescribeKey implements KeyService.
func (f *Fake) DescribeKey(_ context.Context, req *pb.DescribeKeyRequest) (*pb.DescribeKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	return &pb.DescribeKeyResponse{KeyMetadata: f.out(k)}, nil
}

// Page tokens are the broker's: the last key id or alias name of the
// previous page (for key versions, the index of the next one), base64url
// encoded.
func encodePageToken(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(last))
}

func decodePageToken(tok string, isPosition func(string) bool) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) == 0 || len(b) > 512 || !isPosition(string(b)) {
		return "", Error(codes.InvalidArgument, excInvalidMarker, "invalid PageToken: not a token this service issued")
	}
	return string(b), nil
}

// pageOf returns the items after the one named after (in name order), at
// most size of them, and the next page token ("" on the last page).
func pageOf[T any](items []T, name func(T) string, isPosition func(string) bool, size int32, token string) ([]T, string, error) {
	limit, err := keys.PageSize(size)
	if err != nil {
		return nil, "", invalidField("PageSize", err)
	}
	after, err := decodePageToken(token, isPosition)
	if err != nil {
		return nil, "", err
	}
	start, _ := slices.BinarySearchFunc(items, after, func(it T, s string) int { return strings.Compare(name(it), s) })
	if start < len(items) && name(items[start]) == after {
		start++
	}
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = encodePageToken(name(items[end-1]))
	}
	return items[start:end], next, nil
}

// ListKeys implements KeyService.
func (f *Fake) ListKeys(_ context.Context, req *pb.ListKeysRequest) (*pb.ListKeysResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []*pb.KeyMetadata
	for _, id := range slices.Sorted(maps.Keys(f.keys)) {
		all = append(all, f.out(f.keys[id]))
	}
	ks, next, err := pageOf(all, (*pb.KeyMetadata).GetKeyId, keys.IsKeyIDPosition, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeysResponse{Keys: ks, NextPageToken: next}, nil
}

func pendingErr(k *fakeKey) error {
	return errState("key %s is pending deletion; cancel the deletion first", k.meta.KeyId)
}

// UpdateKeyDescription implements KeyService.
func (f *Fake) UpdateKeyDescription(_ context.Context, req *pb.UpdateKeyDescriptionRequest) (*pb.UpdateKeyDescriptionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := keys.ValidateDescription(req.GetDescription()); err != nil {
		return nil, invalid(err)
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, pendingErr(k)
	}
	k.meta.Description = req.GetDescription()
	return &pb.UpdateKeyDescriptionResponse{}, nil
}

func (f *Fake) setState(ref string, to pb.KeyState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", ref)
	if err != nil {
		return err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return pendingErr(k)
	}
	k.meta.KeyState = to
	return nil
}

// EnableKey implements KeyService.
func (f *Fake) EnableKey(_ context.Context, req *pb.EnableKeyRequest) (*pb.EnableKeyResponse, error) {
	if err := f.setState(req.GetKeyId(), pb.KeyState_KEY_STATE_ENABLED); err != nil {
		return nil, err
	}
	return &pb.EnableKeyResponse{}, nil
}

// DisableKey implements KeyService.
func (f *Fake) DisableKey(_ context.Context, req *pb.DisableKeyRequest) (*pb.DisableKeyResponse, error) {
	if err := f.setState(req.GetKeyId(), pb.KeyState_KEY_STATE_DISABLED); err != nil {
		return nil, err
	}
	return &pb.DisableKeyResponse{}, nil
}

// stateName is the AWS name of a key state, as the broker's messages use it.
func stateName(s pb.KeyState) keys.State {
	switch s {
	case pb.KeyState_KEY_STATE_ENABLED:
		return keys.StateEnabled
	case pb.KeyState_KEY_STATE_DISABLED:
		return keys.StateDisabled
	case pb.KeyState_KEY_STATE_PENDING_DELETION:
		return keys.StatePendingDeletion
	}
	return ""
}

// ScheduleKeyDeletion implements KeyService.
func (f *Fake) ScheduleKeyDeletion(_ context.Context, req *pb.ScheduleKeyDeletionRequest) (*pb.ScheduleKeyDeletionResponse, error) {
	if req.GetPendingWindowDays() > 1000 {
		return nil, fieldError("PendingWindowDays", "must be %d to %d days, got %d", keys.MinPendingWindow, keys.MaxPendingWindow, req.GetPendingWindowDays())
	}
	days, err := keys.PendingWindow(int32(req.GetPendingWindowDays()))
	if err != nil {
		return nil, invalidField("PendingWindowDays", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is already pending deletion (on %s)", k.meta.KeyId, k.deletion.Format(time.RFC3339))
	}
	k.deletion = f.Now().UTC().Add(time.Duration(days) * 24 * time.Hour)
	k.meta.KeyState = pb.KeyState_KEY_STATE_PENDING_DELETION
	k.meta.PendingWindowDays = uint32(days)
	k.meta.DeletionDate = timestamppb.New(k.deletion)
	return &pb.ScheduleKeyDeletionResponse{KeyId: k.meta.KeyId, DeletionDate: k.meta.DeletionDate, KeyState: k.meta.KeyState, PendingWindowDays: uint32(days)}, nil
}

// CancelKeyDeletion implements KeyService.
func (f *Fake) CancelKeyDeletion(_ context.Context, req *pb.CancelKeyDeletionRequest) (*pb.CancelKeyDeletionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState != pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is not pending deletion (it is %s)", k.meta.KeyId, stateName(k.meta.KeyState))
	}
	k.meta.KeyState = pb.KeyState_KEY_STATE_DISABLED
	k.meta.PendingWindowDays = 0
	k.meta.DeletionDate = nil
	k.deletion = time.Time{}
	return &pb.CancelKeyDeletionResponse{KeyId: k.meta.KeyId, KeyState: k.meta.KeyState}, nil
}

// RotateKey implements KeyService.
func (f *Fake) RotateKey(_ context.Context, req *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if k.spec != keys.SpecSymmetricDefault || k.usage == keys.UsageRawEncryptDecrypt {
		return nil, errUnsupported("key %s (%s, usage %s) does not rotate; only symmetric encryption keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) do", k.meta.KeyId, k.spec, k.usage)
	}
	k.versions = append(k.versions, newAESVersion(f.Now()))
	k.meta.CurrentVersion = uint32(len(k.versions))
	return &pb.RotateKeyResponse{KeyId: k.meta.KeyId, Version: k.meta.CurrentVersion}, nil
}

// ListKeyVersions implements KeyService.
func (f *Fake) ListKeyVersions(_ context.Context, req *pb.ListKeyVersionsRequest) (*pb.ListKeyVersionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	limit, err := keys.PageSize(req.GetPageSize())
	if err != nil {
		return nil, invalidField("PageSize", err)
	}
	after, err := decodePageToken(req.GetPageToken(), keys.IsIndexPosition)
	if err != nil {
		return nil, err
	}
	start := 0
	if after != "" {
		if start, err = strconv.Atoi(after); err != nil || start < 0 {
			return nil, Error(codes.InvalidArgument, excInvalidMarker, "invalid PageToken: not a token this service issued")
		}
	}
	resp := &pb.ListKeyVersionsResponse{}
	for i := start; i < len(k.versions) && len(resp.Versions) < limit; i++ {
		resp.Versions = append(resp.Versions, &pb.KeyVersion{Version: uint32(i + 1), CreateTime: timestamppb.New(k.versions[i].created), Current: uint32(i+1) == k.meta.CurrentVersion})
		if len(resp.Versions) == limit && i+1 < len(k.versions) {
			resp.NextPageToken = encodePageToken(strconv.Itoa(i + 1))
		}
	}
	return resp, nil
}

// TagKey implements KeyService.
func (f *Fake) TagKey(_ context.Context, req *pb.TagKeyRequest) (*pb.TagKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if len(req.GetTags()) == 0 {
		return nil, fieldError("Tags", "must name at least one tag")
	}
	merged := maps.Clone(k.meta.Tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, req.GetTags())
	if err := keys.ValidateTags(merged); err != nil {
		return nil, invalid(err)
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, pendingErr(k)
	}
	k.meta.Tags = merged
	return &pb.TagKeyResponse{}, nil
}

// UntagKey implements KeyService.
func (f *Fake) UntagKey(_ context.Context, req *pb.UntagKeyRequest) (*pb.UntagKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := keys.ValidateTagKeys(req.GetTagKeys()); err != nil {
		return nil, invalid(err)
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, pendingErr(k)
	}
	for _, t := range req.GetTagKeys() {
		delete(k.meta.Tags, t)
	}
	return &pb.UntagKeyResponse{}, nil
}

// ListKeyTags implements KeyService.
func (f *Fake) ListKeyTags(_ context.Context, req *pb.ListKeyTagsRequest) (*pb.ListKeyTagsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve("KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeyTagsResponse{KeyId: k.meta.KeyId, Tags: maps.Clone(k.meta.Tags)}, nil
}

// CreateAlias implements KeyService.
func (f *Fake) CreateAlias(_ context.Context, req *pb.CreateAliasRequest) (*pb.CreateAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, invalid(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("TargetKeyId", req.GetTargetKeyId())
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, pendingErr(k)
	}
	if _, taken := f.aliases[req.GetAliasName()]; taken {
		return nil, Error(codes.AlreadyExists, excAlreadyExists, "alias %s already exists", req.GetAliasName())
	}
	now := timestamppb.New(f.Now())
	a := &pb.Alias{AliasName: req.GetAliasName(), AliasArn: aliasARN(req.GetAliasName()), TargetKeyId: k.meta.KeyId, CreateTime: now, UpdateTime: now}
	f.aliases[a.AliasName] = a
	return &pb.CreateAliasResponse{Alias: proto.Clone(a).(*pb.Alias)}, nil
}

// UpdateAlias implements KeyService.
func (f *Fake) UpdateAlias(_ context.Context, req *pb.UpdateAliasRequest) (*pb.UpdateAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, invalid(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolveID("TargetKeyId", req.GetTargetKeyId())
	if err != nil {
		return nil, err
	}
	a, ok := f.aliases[req.GetAliasName()]
	if !ok {
		return nil, errNotFound("alias %s does not exist", req.GetAliasName())
	}
	if old := f.keys[a.TargetKeyId]; old != nil && (old.usage != k.usage || old.spec.Family() != k.spec.Family()) {
		return nil, fieldError("TargetKeyId", "key %s (%s, %s) is not the same type and usage as the alias's current key (%s, %s)",
			k.meta.KeyId, k.spec, k.usage, old.spec, old.usage)
	}
	a.TargetKeyId = k.meta.KeyId
	a.UpdateTime = timestamppb.New(f.Now())
	return &pb.UpdateAliasResponse{Alias: proto.Clone(a).(*pb.Alias)}, nil
}

// DeleteAlias implements KeyService.
func (f *Fake) DeleteAlias(_ context.Context, req *pb.DeleteAliasRequest) (*pb.DeleteAliasResponse, error) {
	if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
		return nil, invalid(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.aliases[req.GetAliasName()]; !ok {
		return nil, errNotFound("alias %s does not exist", req.GetAliasName())
	}
	delete(f.aliases, req.GetAliasName())
	return &pb.DeleteAliasResponse{}, nil
}

// ListAliases implements KeyService.
func (f *Fake) ListAliases(_ context.Context, req *pb.ListAliasesRequest) (*pb.ListAliasesResponse, error) {
	if _, err := keys.PageSize(req.GetPageSize()); err != nil {
		return nil, invalidField("PageSize", err)
	}
	if _, err := decodePageToken(req.GetPageToken(), keys.IsAliasPosition); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var keyID string
	if req.GetKeyId() != "" {
		k, err := f.resolveID("KeyId", req.GetKeyId())
		if err != nil {
			return nil, err
		}
		keyID = k.meta.KeyId
	}
	var all []*pb.Alias
	for _, name := range slices.Sorted(maps.Keys(f.aliases)) {
		if a := f.aliases[name]; keyID == "" || a.TargetKeyId == keyID {
			all = append(all, proto.Clone(a).(*pb.Alias))
		}
	}
	aliases, next, err := pageOf(all, (*pb.Alias).GetAliasName, keys.IsAliasPosition, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListAliasesResponse{Aliases: aliases, NextPageToken: next}, nil
}

// usable refuses keys that are not enabled, as the broker does. The
// caller holds f.mu.
func usable(k *fakeKey) error {
	switch k.meta.KeyState {
	case pb.KeyState_KEY_STATE_DISABLED:
		return Error(codes.FailedPrecondition, excDisabled, "key %s is disabled", k.meta.KeyId)
	case pb.KeyState_KEY_STATE_PENDING_DELETION:
		return errState("key %s is pending deletion (on %s); cancel the deletion to use it", k.meta.KeyId, k.deletion.Format("2006-01-02T15:04:05Z"))
	}
	return nil
}

// use resolves ref and checks that the key is enabled and has usage.
func (f *Fake) use(field, ref string, usage keys.Usage) (*fakeKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(field, ref)
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if k.usage != usage {
		return nil, errUsage("key %s has usage %s; this operation needs %s", k.meta.KeyId, k.usage, usage)
	}
	return k, nil
}

// sealSymmetric encrypts under the current version of k in the broker's
// blob format (keys.Ciphertext), with AES-GCM in software.
func (f *Fake) sealSymmetric(k *fakeKey, plaintext []byte, ec keys.EncryptionContext) ([]byte, error) {
	f.mu.Lock()
	v := k.meta.CurrentVersion
	aead := k.versions[v-1].aes
	f.mu.Unlock()
	c := keys.Ciphertext{KeyID: k.meta.KeyId, Version: v, IV: make([]byte, keys.IVSize)}
	_, _ = rand.Read(c.IV)
	header, err := c.Header()
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	c.Sealed = aead.Seal(nil, c.IV, plaintext, keys.AAD(header, ec))
	return c.Marshal()
}

// openSymmetric decrypts a blob in the order the broker checks it: the
// blob's form, the key named in the request, the key the blob names and
// its state, then the tag. Every failure that depends on the blob's bytes
// is the same errInvalidCiphertext.
func (f *Fake) openSymmetric(blob []byte, keyRef string, ec keys.EncryptionContext) (*fakeKey, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var named *fakeKey
	if keyRef != "" {
		var err error
		if named, err = f.resolve("KeyId", keyRef); err != nil {
			return nil, nil, err
		}
		if _, err := keys.CheckEncryptionAlgorithm(named.spec, named.usage, keys.EncryptionSymmetricDefault); err != nil {
			return nil, nil, invalid(err)
		}
	}
	c, err := keys.ParseCiphertext(blob)
	if err != nil {
		return nil, nil, errInvalidCiphertext
	}
	if named != nil {
		if named.meta.KeyId != c.KeyID {
			return nil, nil, Error(codes.InvalidArgument, excIncorrectKey, "the ciphertext was not made with key %s", named.meta.KeyId)
		}
	}
	k, ok := f.keys[c.KeyID]
	if !ok || k.spec != keys.SpecSymmetricDefault {
		return nil, nil, errInvalidCiphertext
	}
	if err := usable(k); err != nil {
		return nil, nil, err
	}
	if int(c.Version) > len(k.versions) {
		return nil, nil, errInvalidCiphertext
	}
	header, err := c.Header()
	if err != nil {
		return nil, nil, errInvalidCiphertext
	}
	pt, err := k.versions[c.Version-1].aes.Open(nil, c.IV, c.Sealed, keys.AAD(header, ec))
	if err != nil {
		return nil, nil, errInvalidCiphertext
	}
	return k, pt, nil
}

func validContext(m map[string]string) (keys.EncryptionContext, error) {
	ec := keys.EncryptionContext(m)
	if err := keys.ValidateContext(ec); err != nil {
		return nil, invalid(err)
	}
	return ec, nil
}

func encAlgOf(v pb.EncryptionAlgorithm) keys.EncryptionAlgorithm {
	return keys.EncryptionAlgorithm(fromEnum(v, pb.EncryptionAlgorithm_name, "ENCRYPTION_ALGORITHM_"))
}

// Encrypt implements CryptoService.
func (f *Fake) Encrypt(_ context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	ec, err := validContext(req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	k, err := f.use("KeyId", req.GetKeyId(), keys.UsageEncryptDecrypt)
	if err != nil {
		return nil, err
	}
	alg, err := keys.CheckEncryptionAlgorithm(k.spec, k.usage, encAlgOf(req.GetEncryptionAlgorithm()))
	if err != nil {
		return nil, invalid(err)
	}
	pt := req.GetPlaintext()
	if alg == keys.EncryptionSymmetricDefault {
		if err := keys.ValidatePlaintext("Plaintext", pt, keys.MaxPlaintext); err != nil {
			return nil, invalid(err)
		}
		blob, err := f.sealSymmetric(k, pt, ec)
		if err != nil {
			return nil, err
		}
		return &pb.EncryptResponse{CiphertextBlob: blob, KeyId: k.meta.KeyId, EncryptionAlgorithm: encAlgTo(alg)}, nil
	}
	if len(ec) > 0 {
		return nil, fieldError("EncryptionContext", "is not supported with asymmetric keys")
	}
	if err := keys.ValidatePlaintext("Plaintext", pt, k.spec.PlaintextLimit(alg)); err != nil {
		return nil, invalid(err)
	}
	ct, err := rsa.EncryptOAEP(alg.Hash().New(), rand.Reader, &k.rsa.PublicKey, pt, nil)
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	return &pb.EncryptResponse{CiphertextBlob: ct, KeyId: k.meta.KeyId, EncryptionAlgorithm: encAlgTo(alg)}, nil
}

// Decrypt implements CryptoService.
func (f *Fake) Decrypt(_ context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	ec, err := validContext(req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	blob, ref := req.GetCiphertextBlob(), req.GetKeyId()
	if len(blob) == 0 || len(blob) > keys.MaxCiphertextBlob {
		return nil, fieldError("CiphertextBlob", "must be 1 to %d bytes, got %d", keys.MaxCiphertextBlob, len(blob))
	}
	alg := encAlgOf(req.GetEncryptionAlgorithm())
	if alg == "" || alg == keys.EncryptionSymmetricDefault {
		k, pt, err := f.openSymmetric(blob, ref, ec)
		if err != nil {
			return nil, err
		}
		return &pb.DecryptResponse{Plaintext: pt, KeyId: k.meta.KeyId, EncryptionAlgorithm: encAlgTo(keys.EncryptionSymmetricDefault)}, nil
	}
	if !alg.Valid() {
		return nil, fieldError("EncryptionAlgorithm", "%q is not an encryption algorithm", alg)
	}
	if ref == "" {
		return nil, fieldError("KeyId", "is required to decrypt with %s", alg)
	}
	if len(ec) > 0 {
		return nil, fieldError("EncryptionContext", "is not supported with asymmetric keys")
	}
	k, err := f.use("KeyId", ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return nil, err
	}
	if alg, err = keys.CheckEncryptionAlgorithm(k.spec, k.usage, alg); err != nil {
		return nil, invalid(err)
	}
	pt, err := rsa.DecryptOAEP(alg.Hash().New(), nil, k.rsa, blob, nil)
	if err != nil {
		return nil, errInvalidCiphertext
	}
	return &pb.DecryptResponse{Plaintext: pt, KeyId: k.meta.KeyId, EncryptionAlgorithm: encAlgTo(alg)}, nil
}

func (f *Fake) dataKey(ref string, spec pb.DataKeySpec, n uint32, m map[string]string) (*fakeKey, []byte, []byte, error) {
	ec, err := validContext(m)
	if err != nil {
		return nil, nil, nil, err
	}
	size, err := keys.DataKeyBytes(keys.DataKeySpec(fromEnum(spec, pb.DataKeySpec_name, "DATA_KEY_SPEC_")), int64(n))
	if err != nil {
		return nil, nil, nil, invalid(err)
	}
	k, err := f.use("KeyId", ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return nil, nil, nil, err
	}
	if k.spec != keys.SpecSymmetricDefault {
		return nil, nil, nil, errUsage("data keys are encrypted under symmetric keys; key %s is %s", k.meta.KeyId, k.spec)
	}
	dk := make([]byte, size)
	_, _ = rand.Read(dk)
	blob, err := f.sealSymmetric(k, dk, ec)
	if err != nil {
		return nil, nil, nil, err
	}
	return k, dk, blob, nil
}

// GenerateDataKey implements CryptoService.
func (f *Fake) GenerateDataKey(_ context.Context, req *pb.GenerateDataKeyRequest) (*pb.GenerateDataKeyResponse, error) {
	k, dk, blob, err := f.dataKey(req.GetKeyId(), req.GetKeySpec(), req.GetNumberOfBytes(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	return &pb.GenerateDataKeyResponse{CiphertextBlob: blob, Plaintext: dk, KeyId: k.meta.KeyId}, nil
}

// GenerateDataKeyWithoutPlaintext implements CryptoService.
func (f *Fake) GenerateDataKeyWithoutPlaintext(_ context.Context, req *pb.GenerateDataKeyWithoutPlaintextRequest) (*pb.GenerateDataKeyWithoutPlaintextResponse, error) {
	k, dk, blob, err := f.dataKey(req.GetKeyId(), req.GetKeySpec(), req.GetNumberOfBytes(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	clear(dk)
	return &pb.GenerateDataKeyWithoutPlaintextResponse{CiphertextBlob: blob, KeyId: k.meta.KeyId}, nil
}

// publicDER is the DER SubjectPublicKeyInfo of an asymmetric key.
func publicDER(k *fakeKey) ([]byte, error) {
	var pub crypto.PublicKey
	if k.rsa != nil {
		pub = &k.rsa.PublicKey
	} else {
		pub = &k.ec.PublicKey
	}
	return x509.MarshalPKIXPublicKey(pub)
}

// GetPublicKey implements CryptoService.
func (f *Fake) GetPublicKey(_ context.Context, req *pb.GetPublicKeyRequest) (*pb.GetPublicKeyResponse, error) {
	f.mu.Lock()
	k, err := f.resolve("KeyId", req.GetKeyId())
	if err == nil {
		err = usable(k)
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !k.spec.IsAsymmetric() {
		return nil, errUnsupported("key %s is %s and has no public key", k.meta.KeyId, k.spec)
	}
	der, err := publicDER(k)
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	return &pb.GetPublicKeyResponse{
		KeyId: k.meta.KeyId, PublicKey: der, KeySpec: k.meta.KeySpec, KeyUsage: k.meta.KeyUsage,
		EncryptionAlgorithms: k.meta.EncryptionAlgorithms, SigningAlgorithms: k.meta.SigningAlgorithms,
	}, nil
}

// signingInput checks a Sign or Verify request as the broker does and
// returns the key and the digest to sign.
func (f *Fake) signingInput(ref string, alg keys.SigningAlgorithm, mt pb.MessageType, msg []byte) (*fakeKey, []byte, error) {
	if !alg.Valid() {
		return nil, nil, fieldError("SigningAlgorithm", "must be one of %v", keys.AllSigningAlgorithms)
	}
	mtype := keys.MessageType(fromEnum(mt, pb.MessageType_name, "MESSAGE_TYPE_"))
	if mtype == "" {
		mtype = keys.MessageRaw
	}
	if err := keys.ValidateMessage(mtype, alg, msg); err != nil {
		return nil, nil, invalid(err)
	}
	k, err := f.use("KeyId", ref, keys.UsageSignVerify)
	if err != nil {
		return nil, nil, err
	}
	if err := keys.CheckSigningAlgorithm(k.spec, k.usage, alg); err != nil {
		return nil, nil, invalid(err)
	}
	if mtype == keys.MessageDigest {
		return k, msg, nil
	}
	h := alg.Hash().New()
	h.Write(msg)
	return k, h.Sum(nil), nil
}

func sigAlgOf(v pb.SigningAlgorithm) keys.SigningAlgorithm {
	return keys.SigningAlgorithm(fromEnum(v, pb.SigningAlgorithm_name, "SIGNING_ALGORITHM_"))
}

// Sign implements CryptoService.
func (f *Fake) Sign(_ context.Context, req *pb.SignRequest) (*pb.SignResponse, error) {
	alg := sigAlgOf(req.GetSigningAlgorithm())
	k, digest, err := f.signingInput(req.GetKeyId(), alg, req.GetMessageType(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	h := alg.Hash()
	var sig []byte
	switch {
	case k.ec != nil:
		sig, err = ecdsa.SignASN1(rand.Reader, k.ec, digest)
	case alg.IsPSS():
		sig, err = rsa.SignPSS(rand.Reader, k.rsa, h, digest, &rsa.PSSOptions{SaltLength: h.Size(), Hash: h})
	default:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, h, digest)
	}
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	return &pb.SignResponse{Signature: sig, KeyId: k.meta.KeyId, SigningAlgorithm: sigAlgTo(alg)}, nil
}

// Verify implements CryptoService, with the broker's verifier.
func (f *Fake) Verify(_ context.Context, req *pb.VerifyRequest) (*pb.VerifyResponse, error) {
	alg := sigAlgOf(req.GetSigningAlgorithm())
	if n := len(req.GetSignature()); n == 0 || n > keys.MaxSignature {
		return nil, fieldError("Signature", "must be 1 to %d bytes, got %d", keys.MaxSignature, n)
	}
	k, digest, err := f.signingInput(req.GetKeyId(), alg, req.GetMessageType(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	der, err := publicDER(k)
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	ok, err := keys.VerifySignature(der, alg, digest, req.GetSignature())
	if err != nil {
		return nil, Error(codes.Internal, excInternal, "internal error")
	}
	return &pb.VerifyResponse{SignatureValid: ok, KeyId: k.meta.KeyId, SigningAlgorithm: sigAlgTo(alg)}, nil
}

// maxMACInput is the broker's bound on a MAC message (hsm.MaxMACInput).
const maxMACInput = keys.MaxPlaintext

func (f *Fake) mac(ref string, v pb.MacAlgorithm, msg []byte) (*fakeKey, []byte, error) {
	alg := keys.MacAlgorithm(fromEnum(v, pb.MacAlgorithm_name, "MAC_ALGORITHM_"))
	if !alg.Valid() {
		return nil, nil, fieldError("MacAlgorithm", "must be one of %v", keys.AllMacAlgorithms)
	}
	if err := keys.ValidatePlaintext("Message", msg, maxMACInput); err != nil {
		return nil, nil, invalid(err)
	}
	k, err := f.use("KeyId", ref, keys.UsageGenerateVerifyMAC)
	if err != nil {
		return nil, nil, err
	}
	if err := keys.CheckMacAlgorithm(k.spec, k.usage, alg); err != nil {
		return nil, nil, invalid(err)
	}
	m := hmac.New(alg.Hash().New, k.hmac)
	m.Write(msg)
	return k, m.Sum(nil), nil
}

// GenerateMac implements CryptoService.
func (f *Fake) GenerateMac(_ context.Context, req *pb.GenerateMacRequest) (*pb.GenerateMacResponse, error) {
	k, mac, err := f.mac(req.GetKeyId(), req.GetMacAlgorithm(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &pb.GenerateMacResponse{Mac: mac, KeyId: k.meta.KeyId, MacAlgorithm: req.GetMacAlgorithm()}, nil
}

// VerifyMac implements CryptoService.
func (f *Fake) VerifyMac(_ context.Context, req *pb.VerifyMacRequest) (*pb.VerifyMacResponse, error) {
	if n := len(req.GetMac()); n == 0 || n > 64 {
		return nil, fieldError("Mac", "must be 1 to 64 bytes, got %d", n)
	}
	k, mac, err := f.mac(req.GetKeyId(), req.GetMacAlgorithm(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &pb.VerifyMacResponse{MacValid: hmac.Equal(mac, req.GetMac()), KeyId: k.meta.KeyId, MacAlgorithm: req.GetMacAlgorithm()}, nil
}

// GenerateRandom implements CryptoService.
func (f *Fake) GenerateRandom(_ context.Context, req *pb.GenerateRandomRequest) (*pb.GenerateRandomResponse, error) {
	n := req.GetNumberOfBytes()
	if err := keys.ValidateRandomBytes(int64(n)); err != nil {
		return nil, invalidField("NumberOfBytes", err)
	}
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return &pb.GenerateRandomResponse{Plaintext: b}, nil
}

// GetClusterStatus implements ClusterService: a cluster of one healthy
// node, "fake-1".
func (f *Fake) GetClusterStatus(context.Context, *pb.GetClusterStatusRequest) (*pb.GetClusterStatusResponse, error) {
	return &pb.GetClusterStatusResponse{
		LeaderId: "fake-1", Term: 1, NodeId: "fake-1",
		Nodes: []*pb.NodeStatus{{
			Id: "fake-1", GrpcAddress: "127.0.0.1:7400", RaftAddress: "127.0.0.1:7401",
			Role: pb.NodeRole_NODE_ROLE_LEADER, Healthy: true, LastContact: durationpb.New(0),
			AppliedIndex: 1, CommitIndex: 1,
			Partition: &pb.PartitionInfo{HsmModel: "fake", Manufacturer: "clienttest", TokenLabel: "fake", DomainKeyPresent: true, Health: "ok"},
		}},
	}, nil
}

// BackupChunkSize is the most snapshot bytes one message of the Fake's
// Backup stream carries.
const BackupChunkSize = 1024

// Backup implements ClusterService.Backup: it streams the snapshot set by
// SetSnapshot (by default a list of the key ids) in BackupChunkSize
// pieces, then its size, SHA-256, index 1 and term 1.
func (f *Fake) Backup(_ *pb.BackupRequest, stream pb.ClusterService_BackupServer) error {
	f.mu.Lock()
	snap := f.snapshot
	if snap == nil {
		snap = []byte("clienttest snapshot\n")
		for _, id := range slices.Sorted(maps.Keys(f.keys)) {
			snap = append(snap, id+"\n"...)
		}
	}
	failErr, failAfter := f.backupFail, f.backupFailAfter
	f.backupFail = nil
	f.mu.Unlock()
	sent := 0
	for i := 0; i < len(snap); i += BackupChunkSize {
		if failErr != nil && sent == failAfter {
			return failErr
		}
		if err := stream.Send(&pb.BackupResponse{Chunk: snap[i:min(i+BackupChunkSize, len(snap))]}); err != nil {
			return err
		}
		sent++
	}
	if failErr != nil {
		return failErr
	}
	sum := sha256.Sum256(snap)
	return stream.Send(&pb.BackupResponse{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(snap)), Index: 1, Term: 1,
		Authenticator: BackupAuthenticator(sum[:])})
}

// VerifyBackup implements ClusterService.VerifyBackup against the fake's
// stand-in authenticators (BackupAuthenticator).
func (f *Fake) VerifyBackup(_ context.Context, req *pb.VerifyBackupRequest) (*pb.VerifyBackupResponse, error) {
	sum, err := hex.DecodeString(req.GetSha256())
	if err != nil || len(sum) != sha256.Size {
		return nil, Error(codes.InvalidArgument, excValidation, "Sha256 must be the backup's SHA-256 as 64 hex digits, got %d characters", len(req.GetSha256()))
	}
	if n := len(req.GetAuthenticator()); n != 40 {
		return nil, Error(codes.InvalidArgument, excValidation, "Authenticator must be 40 bytes (from the backup's .auth file), got %d", n)
	}
	return &pb.VerifyBackupResponse{Authentic: bytes.Equal(req.GetAuthenticator(), BackupAuthenticator(sum)), NodeId: "fake-1"}, nil
}

// BackupAuthenticator is the fake's stand-in for a backup's authenticator:
// 40 bytes derived from the snapshot's SHA-256 without a key (a broker
// makes them in its HSM under the domain key), so that clients can be
// tested for carrying it.
func BackupAuthenticator(sum []byte) []byte {
	h := sha512.Sum512(append([]byte("clienttest backup authenticator\x00"), sum...))
	return h[:40]
}

// SetSnapshot sets what Backup sends.
func (f *Fake) SetSnapshot(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshot = bytes.Clone(b)
}

// FailBackupAfter makes the next Backup stream fail with err after it has
// sent chunks pieces of the snapshot (0: before the first), as a broker
// that dies mid-stream would.
func (f *Fake) FailBackupAfter(chunks int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backupFail, f.backupFailAfter = err, chunks
}

// KeyIDs returns the ids of every key, sorted.
func (f *Fake) KeyIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.keys))
}
