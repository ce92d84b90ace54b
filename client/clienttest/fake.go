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
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
// read side of ClusterService (status and backups), following the API's documented semantics and
// errors closely enough to test clients. Key material is generated in
// software and kept in memory.
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

func errNotFound(format string, args ...any) error {
	return Error(codes.NotFound, "NotFoundException", format, args...)
}

func errValidation(format string, args ...any) error {
	return Error(codes.InvalidArgument, "ValidationException", format, args...)
}

func errUsage(format string, args ...any) error {
	return Error(codes.InvalidArgument, "InvalidKeyUsageException", format, args...)
}

func errState(format string, args ...any) error {
	return Error(codes.FailedPrecondition, "KMSInvalidStateException", format, args...)
}

var errInvalidCiphertext = Error(codes.InvalidArgument, "InvalidCiphertextException",
	"the ciphertext is invalid, was not made by this key service, or its encryption context does not match")

func keyARN(id string) string { return "arn:aws:kms:" + Region + ":" + Account + ":key/" + id }

func aliasARN(name string) string { return "arn:aws:kms:" + Region + ":" + Account + ":" + name }

func newKeyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// resolve finds a key by key id or key ARN, and also by alias name or alias
// ARN when aliases is true. The caller holds f.mu.
func (f *Fake) resolve(ref string, aliases bool) (*fakeKey, error) {
	if ref == "" {
		return nil, errValidation("key_id is required")
	}
	id := ref
	if rest, ok := strings.CutPrefix(ref, "arn:aws:kms:"+Region+":"+Account+":"); ok {
		id = rest
		if kid, ok := strings.CutPrefix(rest, "key/"); ok {
			id = kid
		}
	} else if strings.HasPrefix(ref, "arn:") {
		return nil, Error(codes.InvalidArgument, "InvalidArnException", "malformed or foreign ARN %q", ref)
	}
	if strings.HasPrefix(id, "alias/") {
		if !aliases {
			return nil, errValidation("%q: this operation takes a key id or key ARN, not an alias", ref)
		}
		a, ok := f.aliases[id]
		if !ok {
			return nil, errNotFound("alias %s does not exist", id)
		}
		id = a.TargetKeyId
	}
	k, ok := f.keys[id]
	if !ok {
		return nil, errNotFound("key %s does not exist", ref)
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

func validAlias(name string) error {
	rest, ok := strings.CutPrefix(name, "alias/")
	switch {
	case !ok || rest == "" || len(name) > 256:
		return Error(codes.InvalidArgument, "InvalidAliasNameException", "alias name %q must be alias/<name>, 1 to 256 characters", name)
	case strings.HasPrefix(name, "alias/aws/"):
		return Error(codes.InvalidArgument, "InvalidAliasNameException", "alias names under alias/aws/ are reserved")
	}
	for _, r := range rest {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_-", r)) {
			return Error(codes.InvalidArgument, "InvalidAliasNameException", "alias name %q has a character other than letters, digits, /, _ and -", name)
		}
	}
	return nil
}

func validTags(tags map[string]string) error {
	for k, v := range tags {
		switch {
		case k == "" || len(k) > 128 || len(v) > 256:
			return Error(codes.InvalidArgument, "TagException", "tag keys are 1 to 128 characters, values 0 to 256")
		case strings.HasPrefix(k, "aws:"):
			return Error(codes.InvalidArgument, "TagException", "tag keys starting with aws: are reserved")
		}
	}
	if len(tags) > 50 {
		return Error(codes.InvalidArgument, "TagException", "at most 50 tags")
	}
	return nil
}

// algorithms fills the algorithm lists of metadata for its spec and usage.
func algorithms(m *pb.KeyMetadata) {
	spec, usage := m.KeySpec, m.KeyUsage
	switch {
	case spec == pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT:
		m.EncryptionAlgorithms = []pb.EncryptionAlgorithm{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT}
	case isRSA(spec) && usage == pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT:
		m.EncryptionAlgorithms = []pb.EncryptionAlgorithm{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1, pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256}
	case isRSA(spec):
		for a := pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256; a <= pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_512; a++ {
			m.SigningAlgorithms = append(m.SigningAlgorithms, a)
		}
	case isECC(spec):
		m.SigningAlgorithms = []pb.SigningAlgorithm{pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256 + pb.SigningAlgorithm(spec-pb.KeySpec_KEY_SPEC_ECC_NIST_P256)}
	case isHMAC(spec):
		m.MacAlgorithms = []pb.MacAlgorithm{pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256 + pb.MacAlgorithm(spec-pb.KeySpec_KEY_SPEC_HMAC_256)}
	}
}

func isRSA(s pb.KeySpec) bool {
	return s >= pb.KeySpec_KEY_SPEC_RSA_2048 && s <= pb.KeySpec_KEY_SPEC_RSA_4096
}

func isECC(s pb.KeySpec) bool {
	return s >= pb.KeySpec_KEY_SPEC_ECC_NIST_P256 && s <= pb.KeySpec_KEY_SPEC_ECC_NIST_P521
}

func isHMAC(s pb.KeySpec) bool {
	return s >= pb.KeySpec_KEY_SPEC_HMAC_256 && s <= pb.KeySpec_KEY_SPEC_HMAC_512
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
	spec, usage := req.GetKeySpec(), req.GetKeyUsage()
	if spec == pb.KeySpec_KEY_SPEC_UNSPECIFIED {
		spec = pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT
	}
	if _, ok := pb.KeySpec_name[int32(spec)]; !ok {
		return nil, errValidation("unknown key spec %d", spec)
	}
	defaultUsage := pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT
	switch {
	case isECC(spec):
		defaultUsage = pb.KeyUsage_KEY_USAGE_SIGN_VERIFY
	case isHMAC(spec):
		defaultUsage = pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC
	}
	if usage == pb.KeyUsage_KEY_USAGE_UNSPECIFIED {
		usage = defaultUsage
	}
	if usage != defaultUsage && !(isRSA(spec) && usage == pb.KeyUsage_KEY_USAGE_SIGN_VERIFY) {
		return nil, errUsage("key usage %s does not suit key spec %s", usage, spec)
	}
	if err := validAlias(req.GetAliasName()); err != nil {
		return nil, err
	}
	if len(req.GetDescription()) > 8192 {
		return nil, errValidation("description longer than 8192 characters")
	}
	if err := validTags(req.GetTags()); err != nil {
		return nil, err
	}
	now := f.Now()
	k := &fakeKey{meta: &pb.KeyMetadata{
		KeySpec:        spec,
		KeyUsage:       usage,
		KeyState:       pb.KeyState_KEY_STATE_ENABLED,
		Description:    req.GetDescription(),
		CreateTime:     timestamppb.New(now),
		CurrentVersion: 1,
		Creator:        "CN=clienttest admin",
		Tags:           maps.Clone(req.GetTags()),
	}}
	algorithms(k.meta)
	var err error
	switch {
	case spec == pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT:
		k.versions = []fakeVersion{newAESVersion(now)}
	case isRSA(spec):
		bits := map[pb.KeySpec]int{pb.KeySpec_KEY_SPEC_RSA_2048: 2048, pb.KeySpec_KEY_SPEC_RSA_3072: 3072, pb.KeySpec_KEY_SPEC_RSA_4096: 4096}[spec]
		k.rsa, err = rsa.GenerateKey(rand.Reader, bits)
	case isECC(spec):
		curve := []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()}[spec-pb.KeySpec_KEY_SPEC_ECC_NIST_P256]
		k.ec, err = ecdsa.GenerateKey(curve, rand.Reader)
	case isHMAC(spec):
		k.hmac = make([]byte, 32+16*int(spec-pb.KeySpec_KEY_SPEC_HMAC_256))
		_, _ = rand.Read(k.hmac)
	}
	if err != nil {
		return nil, Error(codes.Internal, "KMSInternalException", "key generation failed")
	}
	if k.versions == nil {
		k.versions = []fakeVersion{{created: now}}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.aliases[req.GetAliasName()]; taken {
		return nil, Error(codes.AlreadyExists, "AlreadyExistsException", "alias %s already exists", req.GetAliasName())
	}
	k.meta.KeyId = newKeyID()
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
	k, err := f.resolve(req.GetKeyId(), true)
	if err != nil {
		return nil, err
	}
	return &pb.DescribeKeyResponse{KeyMetadata: f.out(k)}, nil
}

// page returns the slice of items for a page request, and the next token.
func page[T any](items []T, size int32, token string) ([]T, string, error) {
	if size < 0 || size > 1000 {
		return nil, "", errValidation("page_size must be 0 to 1000")
	}
	if size == 0 {
		size = 100
	}
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", Error(codes.InvalidArgument, "InvalidMarkerException", "invalid page_token")
		}
		start = n
	}
	end := min(start+int(size), len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
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
	keys, next, err := page(all, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeysResponse{Keys: keys, NextPageToken: next}, nil
}

// UpdateKeyDescription implements KeyService.
func (f *Fake) UpdateKeyDescription(_ context.Context, req *pb.UpdateKeyDescriptionRequest) (*pb.UpdateKeyDescriptionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if len(req.GetDescription()) > 8192 {
		return nil, errValidation("description longer than 8192 characters")
	}
	k.meta.Description = req.GetDescription()
	return &pb.UpdateKeyDescriptionResponse{}, nil
}

func (f *Fake) setState(ref string, to pb.KeyState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(ref, false)
	if err != nil {
		return err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return errState("key %s is pending deletion", k.meta.KeyId)
	}
	k.meta.KeyState = to
	return nil
}

// EnableKey implements KeyService.
func (f *Fake) EnableKey(_ context.Context, req *pb.EnableKeyRequest) (*pb.EnableKeyResponse, error) {
	return &pb.EnableKeyResponse{}, f.setState(req.GetKeyId(), pb.KeyState_KEY_STATE_ENABLED)
}

// DisableKey implements KeyService.
func (f *Fake) DisableKey(_ context.Context, req *pb.DisableKeyRequest) (*pb.DisableKeyResponse, error) {
	return &pb.DisableKeyResponse{}, f.setState(req.GetKeyId(), pb.KeyState_KEY_STATE_DISABLED)
}

// ScheduleKeyDeletion implements KeyService.
func (f *Fake) ScheduleKeyDeletion(_ context.Context, req *pb.ScheduleKeyDeletionRequest) (*pb.ScheduleKeyDeletionResponse, error) {
	days := req.GetPendingWindowDays()
	if days == 0 {
		days = 30
	}
	if days < 7 || days > 30 {
		return nil, errValidation("pending_window_days must be 7 to 30")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is already pending deletion", k.meta.KeyId)
	}
	k.meta.KeyState = pb.KeyState_KEY_STATE_PENDING_DELETION
	k.meta.PendingWindowDays = days
	k.meta.DeletionDate = timestamppb.New(f.Now().Add(time.Duration(days) * 24 * time.Hour))
	return &pb.ScheduleKeyDeletionResponse{KeyId: k.meta.KeyId, DeletionDate: k.meta.DeletionDate, KeyState: k.meta.KeyState, PendingWindowDays: days}, nil
}

// CancelKeyDeletion implements KeyService.
func (f *Fake) CancelKeyDeletion(_ context.Context, req *pb.CancelKeyDeletionRequest) (*pb.CancelKeyDeletionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState != pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is not pending deletion", k.meta.KeyId)
	}
	k.meta.KeyState = pb.KeyState_KEY_STATE_DISABLED
	k.meta.PendingWindowDays = 0
	k.meta.DeletionDate = nil
	return &pb.CancelKeyDeletionResponse{KeyId: k.meta.KeyId, KeyState: k.meta.KeyState}, nil
}

// RotateKey implements KeyService.
func (f *Fake) RotateKey(_ context.Context, req *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if k.meta.KeySpec != pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT {
		return nil, Error(codes.FailedPrecondition, "UnsupportedOperationException", "only SYMMETRIC_DEFAULT keys rotate")
	}
	if err := usable(k, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT); err != nil {
		return nil, err
	}
	k.versions = append(k.versions, newAESVersion(f.Now()))
	k.meta.CurrentVersion = uint32(len(k.versions))
	return &pb.RotateKeyResponse{KeyId: k.meta.KeyId, Version: k.meta.CurrentVersion}, nil
}

// ListKeyVersions implements KeyService.
func (f *Fake) ListKeyVersions(_ context.Context, req *pb.ListKeyVersionsRequest) (*pb.ListKeyVersionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), true)
	if err != nil {
		return nil, err
	}
	var all []*pb.KeyVersion
	for i, v := range k.versions {
		all = append(all, &pb.KeyVersion{Version: uint32(i + 1), CreateTime: timestamppb.New(v.created), Current: uint32(i+1) == k.meta.CurrentVersion})
	}
	versions, next, err := page(all, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeyVersionsResponse{Versions: versions, NextPageToken: next}, nil
}

// TagKey implements KeyService.
func (f *Fake) TagKey(_ context.Context, req *pb.TagKeyRequest) (*pb.TagKeyResponse, error) {
	if len(req.GetTags()) == 0 {
		return nil, errValidation("tags: at least one required")
	}
	if err := validTags(req.GetTags()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
	}
	tags := maps.Clone(k.meta.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, req.GetTags())
	if len(tags) > 50 {
		return nil, Error(codes.InvalidArgument, "TagException", "a key holds at most 50 tags")
	}
	k.meta.Tags = tags
	return &pb.TagKeyResponse{}, nil
}

// UntagKey implements KeyService.
func (f *Fake) UntagKey(_ context.Context, req *pb.UntagKeyRequest) (*pb.UntagKeyResponse, error) {
	if len(req.GetTagKeys()) == 0 || len(req.GetTagKeys()) > 50 {
		return nil, errValidation("tag_keys: 1 to 50 required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetKeyId(), false)
	if err != nil {
		return nil, err
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
	k, err := f.resolve(req.GetKeyId(), true)
	if err != nil {
		return nil, err
	}
	return &pb.ListKeyTagsResponse{KeyId: k.meta.KeyId, Tags: maps.Clone(k.meta.Tags)}, nil
}

// CreateAlias implements KeyService.
func (f *Fake) CreateAlias(_ context.Context, req *pb.CreateAliasRequest) (*pb.CreateAliasResponse, error) {
	if err := validAlias(req.GetAliasName()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(req.GetTargetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is pending deletion", k.meta.KeyId)
	}
	if _, taken := f.aliases[req.GetAliasName()]; taken {
		return nil, Error(codes.AlreadyExists, "AlreadyExistsException", "alias %s already exists", req.GetAliasName())
	}
	now := timestamppb.New(f.Now())
	a := &pb.Alias{AliasName: req.GetAliasName(), AliasArn: aliasARN(req.GetAliasName()), TargetKeyId: k.meta.KeyId, CreateTime: now, UpdateTime: now}
	f.aliases[a.AliasName] = a
	return &pb.CreateAliasResponse{Alias: proto.Clone(a).(*pb.Alias)}, nil
}

// UpdateAlias implements KeyService.
func (f *Fake) UpdateAlias(_ context.Context, req *pb.UpdateAliasRequest) (*pb.UpdateAliasResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.aliases[req.GetAliasName()]
	if !ok {
		return nil, errNotFound("alias %s does not exist", req.GetAliasName())
	}
	k, err := f.resolve(req.GetTargetKeyId(), false)
	if err != nil {
		return nil, err
	}
	if k.meta.KeyState == pb.KeyState_KEY_STATE_PENDING_DELETION {
		return nil, errState("key %s is pending deletion", k.meta.KeyId)
	}
	old := f.keys[a.TargetKeyId]
	if old != nil && (old.meta.KeySpec != k.meta.KeySpec || old.meta.KeyUsage != k.meta.KeyUsage) {
		return nil, Error(codes.InvalidArgument, "ValidationException", "the new key's spec and usage differ from the current key's")
	}
	a.TargetKeyId = k.meta.KeyId
	a.UpdateTime = timestamppb.New(f.Now())
	return &pb.UpdateAliasResponse{Alias: proto.Clone(a).(*pb.Alias)}, nil
}

// DeleteAlias implements KeyService.
func (f *Fake) DeleteAlias(_ context.Context, req *pb.DeleteAliasRequest) (*pb.DeleteAliasResponse, error) {
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
	f.mu.Lock()
	defer f.mu.Unlock()
	var keyID string
	if req.GetKeyId() != "" {
		k, err := f.resolve(req.GetKeyId(), false)
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
	aliases, next, err := page(all, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListAliasesResponse{Aliases: aliases, NextPageToken: next}, nil
}

// usable checks that k is enabled and has the usage.
func usable(k *fakeKey, usage pb.KeyUsage) error {
	switch k.meta.KeyState {
	case pb.KeyState_KEY_STATE_DISABLED:
		return Error(codes.FailedPrecondition, "DisabledException", "key %s is disabled", k.meta.KeyId)
	case pb.KeyState_KEY_STATE_PENDING_DELETION:
		return errState("key %s is pending deletion", k.meta.KeyId)
	}
	if k.meta.KeyUsage != usage {
		return errUsage("key %s has usage %s", k.meta.KeyId, k.meta.KeyUsage)
	}
	return nil
}

// use resolves ref and checks it is usable for usage.
func (f *Fake) use(ref string, usage pb.KeyUsage) (*fakeKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.resolve(ref, true)
	if err != nil {
		return nil, err
	}
	return k, usable(k, usage)
}

// encodeContext is the broker's canonical encryption context encoding.
func encodeContext(ctx map[string]string) []byte {
	if len(ctx) == 0 {
		return nil
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(ctx)))
	for _, k := range slices.Sorted(maps.Keys(ctx)) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(ctx[k])))
		b = append(b, ctx[k]...)
	}
	return b
}

// The fake symmetric blob: "FAKE" | uint16 len | key id | uint32 version |
// 12-byte nonce | AES-GCM ciphertext and tag, with the part before the
// nonce and the encoded context as AAD.
const blobMagic = "FAKE"

func (f *Fake) sealSymmetric(k *fakeKey, plaintext []byte, ctx map[string]string) []byte {
	f.mu.Lock()
	v := k.meta.CurrentVersion
	aead := k.versions[v-1].aes
	f.mu.Unlock()
	b := append([]byte(blobMagic), byte(len(k.meta.KeyId)>>8), byte(len(k.meta.KeyId)))
	b = append(b, k.meta.KeyId...)
	b = binary.BigEndian.AppendUint32(b, v)
	head := len(b)
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	b = append(b, nonce...)
	return aead.Seal(b, nonce, plaintext, append(slices.Clone(b[:head]), encodeContext(ctx)...))
}

func (f *Fake) openSymmetric(blob []byte, ctx map[string]string) (*fakeKey, []byte, error) {
	if len(blob) < len(blobMagic)+2 || string(blob[:len(blobMagic)]) != blobMagic {
		return nil, nil, errInvalidCiphertext
	}
	n := int(binary.BigEndian.Uint16(blob[len(blobMagic):]))
	rest := blob[len(blobMagic)+2:]
	if len(rest) < n+4+12+16 {
		return nil, nil, errInvalidCiphertext
	}
	version := binary.BigEndian.Uint32(rest[n:])
	head := len(blob) - len(rest) + n + 4
	f.mu.Lock()
	k, ok := f.keys[string(rest[:n])]
	var aead cipher.AEAD
	if ok && version > 0 && int(version) <= len(k.versions) {
		aead = k.versions[version-1].aes
	}
	f.mu.Unlock()
	if aead == nil {
		return nil, nil, errInvalidCiphertext
	}
	pt, err := aead.Open(nil, blob[head:head+12], blob[head+12:], append(slices.Clone(blob[:head]), encodeContext(ctx)...))
	if err != nil {
		return nil, nil, errInvalidCiphertext
	}
	return k, pt, nil
}

func oaepHash(a pb.EncryptionAlgorithm) (hash.Hash, error) {
	switch a {
	case pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1:
		return sha1.New(), nil
	case pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256:
		return sha256.New(), nil
	}
	return nil, errUsage("RSA keys need an RSAES_OAEP algorithm")
}

// Encrypt implements CryptoService.
func (f *Fake) Encrypt(_ context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	k, err := f.use(req.GetKeyId(), pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	if err != nil {
		return nil, err
	}
	alg := req.GetEncryptionAlgorithm()
	if len(req.GetPlaintext()) == 0 || len(req.GetPlaintext()) > 4096 {
		return nil, errValidation("plaintext must be 1 to 4096 bytes")
	}
	if k.rsa != nil {
		if len(req.GetEncryptionContext()) > 0 {
			return nil, errValidation("RSA keys take no encryption context")
		}
		h, err := oaepHash(alg)
		if err != nil {
			return nil, err
		}
		ct, err := rsa.EncryptOAEP(h, rand.Reader, &k.rsa.PublicKey, req.GetPlaintext(), nil)
		if err != nil {
			return nil, errValidation("plaintext too long for the key and algorithm")
		}
		return &pb.EncryptResponse{CiphertextBlob: ct, KeyId: k.meta.KeyId, EncryptionAlgorithm: alg}, nil
	}
	if alg != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_UNSPECIFIED && alg != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT {
		return nil, errUsage("symmetric keys take only SYMMETRIC_DEFAULT")
	}
	return &pb.EncryptResponse{
		CiphertextBlob:      f.sealSymmetric(k, req.GetPlaintext(), req.GetEncryptionContext()),
		KeyId:               k.meta.KeyId,
		EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT,
	}, nil
}

// Decrypt implements CryptoService.
func (f *Fake) Decrypt(_ context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	alg := req.GetEncryptionAlgorithm()
	if alg == pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1 || alg == pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256 {
		if req.GetKeyId() == "" {
			return nil, errValidation("key_id is required for RSA ciphertext")
		}
		k, err := f.use(req.GetKeyId(), pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
		if err != nil {
			return nil, err
		}
		if k.rsa == nil {
			return nil, errUsage("key %s is not an RSA key", k.meta.KeyId)
		}
		h, _ := oaepHash(alg)
		pt, err := rsa.DecryptOAEP(h, nil, k.rsa, req.GetCiphertextBlob(), nil)
		if err != nil {
			return nil, errInvalidCiphertext
		}
		return &pb.DecryptResponse{Plaintext: pt, KeyId: k.meta.KeyId, EncryptionAlgorithm: alg}, nil
	}
	k, pt, err := f.openSymmetric(req.GetCiphertextBlob(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	if req.GetKeyId() != "" {
		named, err := f.use(req.GetKeyId(), pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
		if err != nil {
			return nil, err
		}
		if named != k {
			return nil, Error(codes.InvalidArgument, "IncorrectKeyException", "the ciphertext was made under another key")
		}
	}
	f.mu.Lock()
	err = usable(k, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &pb.DecryptResponse{Plaintext: pt, KeyId: k.meta.KeyId, EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT}, nil
}

func dataKeyLen(spec pb.DataKeySpec, n uint32) (int, error) {
	switch {
	case spec != pb.DataKeySpec_DATA_KEY_SPEC_UNSPECIFIED && n != 0, spec == pb.DataKeySpec_DATA_KEY_SPEC_UNSPECIFIED && n == 0:
		return 0, errValidation("give exactly one of key_spec and number_of_bytes")
	case spec == pb.DataKeySpec_DATA_KEY_SPEC_AES_256:
		return 32, nil
	case spec == pb.DataKeySpec_DATA_KEY_SPEC_AES_128:
		return 16, nil
	case n > 1024:
		return 0, errValidation("number_of_bytes must be 1 to 1024")
	case n > 0:
		return int(n), nil
	}
	return 0, errValidation("unknown key_spec %d", spec)
}

func (f *Fake) dataKey(keyID string, spec pb.DataKeySpec, n uint32, ctx map[string]string) (*fakeKey, []byte, []byte, error) {
	size, err := dataKeyLen(spec, n)
	if err != nil {
		return nil, nil, nil, err
	}
	k, err := f.use(keyID, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	if err != nil {
		return nil, nil, nil, err
	}
	if k.meta.KeySpec != pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT {
		return nil, nil, nil, errUsage("data keys need a SYMMETRIC_DEFAULT key")
	}
	dk := make([]byte, size)
	_, _ = rand.Read(dk)
	return k, dk, f.sealSymmetric(k, dk, ctx), nil
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

// GetPublicKey implements CryptoService.
func (f *Fake) GetPublicKey(_ context.Context, req *pb.GetPublicKeyRequest) (*pb.GetPublicKeyResponse, error) {
	f.mu.Lock()
	k, err := f.resolve(req.GetKeyId(), true)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var pub crypto.PublicKey
	switch {
	case k.rsa != nil:
		pub = &k.rsa.PublicKey
	case k.ec != nil:
		pub = &k.ec.PublicKey
	default:
		return nil, Error(codes.FailedPrecondition, "UnsupportedOperationException", "key %s has no public key", k.meta.KeyId)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, Error(codes.Internal, "KMSInternalException", "internal error")
	}
	return &pb.GetPublicKeyResponse{
		KeyId: k.meta.KeyId, PublicKey: der, KeySpec: k.meta.KeySpec, KeyUsage: k.meta.KeyUsage,
		EncryptionAlgorithms: k.meta.EncryptionAlgorithms, SigningAlgorithms: k.meta.SigningAlgorithms,
	}, nil
}

func signingHash(a pb.SigningAlgorithm) crypto.Hash {
	switch a {
	case pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256, pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256, pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256:
		return crypto.SHA256
	case pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_384, pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_384, pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_384:
		return crypto.SHA384
	}
	return crypto.SHA512
}

// digestFor checks the algorithm against the key and returns the digest
// to sign or verify.
func digestFor(k *fakeKey, alg pb.SigningAlgorithm, msg []byte, mt pb.MessageType) ([]byte, error) {
	if !slices.Contains(k.meta.SigningAlgorithms, alg) {
		return nil, errUsage("key %s does not support %s", k.meta.KeyId, alg)
	}
	if len(msg) == 0 || len(msg) > 4096 {
		return nil, errValidation("message must be 1 to 4096 bytes")
	}
	h := signingHash(alg)
	if mt == pb.MessageType_MESSAGE_TYPE_DIGEST {
		if len(msg) != h.Size() {
			return nil, errValidation("a digest for %s is %d bytes", alg, h.Size())
		}
		return msg, nil
	}
	d := h.New()
	d.Write(msg)
	return d.Sum(nil), nil
}

// Sign implements CryptoService.
func (f *Fake) Sign(_ context.Context, req *pb.SignRequest) (*pb.SignResponse, error) {
	k, err := f.use(req.GetKeyId(), pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	if err != nil {
		return nil, err
	}
	alg := req.GetSigningAlgorithm()
	digest, err := digestFor(k, alg, req.GetMessage(), req.GetMessageType())
	if err != nil {
		return nil, err
	}
	h := signingHash(alg)
	var sig []byte
	switch {
	case k.ec != nil:
		sig, err = ecdsa.SignASN1(rand.Reader, k.ec, digest)
	case alg <= pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_512:
		sig, err = rsa.SignPSS(rand.Reader, k.rsa, h, digest, &rsa.PSSOptions{SaltLength: h.Size(), Hash: h})
	default:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, h, digest)
	}
	if err != nil {
		return nil, Error(codes.Internal, "KMSInternalException", "internal error")
	}
	return &pb.SignResponse{Signature: sig, KeyId: k.meta.KeyId, SigningAlgorithm: alg}, nil
}

// Verify implements CryptoService.
func (f *Fake) Verify(_ context.Context, req *pb.VerifyRequest) (*pb.VerifyResponse, error) {
	k, err := f.use(req.GetKeyId(), pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	if err != nil {
		return nil, err
	}
	alg := req.GetSigningAlgorithm()
	digest, err := digestFor(k, alg, req.GetMessage(), req.GetMessageType())
	if err != nil {
		return nil, err
	}
	h, sig := signingHash(alg), req.GetSignature()
	var ok bool
	switch {
	case k.ec != nil:
		ok = ecdsa.VerifyASN1(&k.ec.PublicKey, digest, sig)
	case alg <= pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_512:
		ok = rsa.VerifyPSS(&k.rsa.PublicKey, h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size(), Hash: h}) == nil
	default:
		ok = rsa.VerifyPKCS1v15(&k.rsa.PublicKey, h, digest, sig) == nil
	}
	return &pb.VerifyResponse{SignatureValid: ok, KeyId: k.meta.KeyId, SigningAlgorithm: alg}, nil
}

func (f *Fake) mac(keyID string, alg pb.MacAlgorithm, msg []byte) (*fakeKey, []byte, error) {
	k, err := f.use(keyID, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC)
	if err != nil {
		return nil, nil, err
	}
	if !slices.Contains(k.meta.MacAlgorithms, alg) {
		return nil, nil, errUsage("key %s does not support %s", k.meta.KeyId, alg)
	}
	if len(msg) == 0 || len(msg) > 4096 {
		return nil, nil, errValidation("message must be 1 to 4096 bytes")
	}
	newHash := map[pb.MacAlgorithm]func() hash.Hash{
		pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256: sha256.New,
		pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_384: sha512.New384,
		pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_512: sha512.New,
	}[alg]
	m := hmac.New(newHash, k.hmac)
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
	k, mac, err := f.mac(req.GetKeyId(), req.GetMacAlgorithm(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &pb.VerifyMacResponse{MacValid: hmac.Equal(mac, req.GetMac()), KeyId: k.meta.KeyId, MacAlgorithm: req.GetMacAlgorithm()}, nil
}

// GenerateRandom implements CryptoService.
func (f *Fake) GenerateRandom(_ context.Context, req *pb.GenerateRandomRequest) (*pb.GenerateRandomResponse, error) {
	n := req.GetNumberOfBytes()
	if n == 0 || n > 1024 {
		return nil, errValidation("number_of_bytes must be 1 to 1024")
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
	return stream.Send(&pb.BackupResponse{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(snap)), Index: 1, Term: 1})
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
