package broker

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/broker/keys"
	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc/codes"
)

// The core of the KMIP front (broker/kmip decodes and encodes TTLV and
// calls these methods). A KMIP object's material lives only as a ciphertext
// blob under one symmetric KMS key of the cluster (the front's wrapping
// key, alias/kmip by default), made by the HSM: Create draws the material
// from the HSM's generator and seals it there, Register seals the client's
// material at once. Get opens the blob in the HSM and hands the material
// to the authorized caller, as GenerateDataKey hands out a data key, and
// only for objects marked extractable.
//
// Authorization: the role gate admits admins and users to the KMIP
// actions below ("kmip:Register"...); then every operation that reaches
// objects checks the wrapping key's policy for its action, so the wrapping
// key's policy says who may do what with KMIP objects.

// FrontKMIP names the KMIP front in audit lines.
const FrontKMIP = "kmip"

// kmipContextKey binds a KMIP object's ciphertext blob to the object: the
// blob opens only under the object's own id.
const kmipContextKey = "kmip-object"

// KMIP actions are kmip:<Operation>; their rules are authz's.

// KMIPPolicy is the policy of the KMIP wrapping key that EnsureKMIPKey
// creates: admins may do everything with the key and with KMIP objects,
// users may use KMIP objects.
func (s *Service) KMIPPolicy() string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Id":"kmip-default","Statement":[`+
		`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:root"},"Action":["kms:*","kmip:*"],"Resource":"*"},`+
		`{"Sid":"KMIP clients","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:role/user"},"Action":"kmip:*","Resource":"*"}]}`, s.cfg.Account)
}

// EnsureKMIPKey makes the symmetric KMS key that wraps KMIP objects, with
// alias and KMIPPolicy in one replicated command, unless alias already
// names a key. It is the daemon's own work at start, not a client request.
func (s *Service) EnsureKMIPKey(ctx context.Context, alias string) (string, error) {
	if requestOf(ctx) != nil {
		return "", newError(codes.Internal, ExcInternal, "EnsureKMIPKey is the node's own work, not a request's")
	}
	if err := keys.ValidateAliasName(alias); err != nil {
		return "", err
	}
	if id, ok := s.node.State().ResolveAlias(alias); ok {
		return id, nil
	}
	g, err := s.hsm.GenerateKey(ctx, keys.SpecSymmetricDefault)
	if err != nil {
		return "", fmt.Errorf("generate the KMIP wrapping key: %w", err)
	}
	now := s.now()
	k := cluster.Key{
		ID: keys.NewKeyID(), Spec: keys.SpecSymmetricDefault, Usage: keys.UsageEncryptDecrypt, State: keys.StateEnabled,
		Description: "wraps the material of KMIP objects", CreatedAt: now, Policy: []byte(s.KMIPPolicy()),
		Versions:       []cluster.KeyVersion{{Number: 1, Wrapped: g.Wrapped, CreatedAt: now}},
		CurrentVersion: 1,
	}
	if _, err := s.apply(Internal(ctx, "kmip-wrapping-key"), &cluster.CreateKey{Key: k, Alias: alias}); err != nil {
		// Another node may have made it meanwhile, or before this node
		// caught up: look again once the state is the leader's.
		if serr := s.syncWithLeader(ctx); serr == nil {
			if id, ok := s.node.State().ResolveAlias(alias); ok {
				return id, nil
			}
		}
		return "", err
	}
	return k.ID, nil
}

// AuthorizeKMIP identifies the caller of a KMIP request begun with
// BeginRequest by its verified client certificate, exactly as gRPC does
// (principal from the certificate, role from the cluster's record or the
// certificate), and applies the role gate for action. objectID is the
// object the request names, for the audit line. It also refuses the
// request while the node is not ready.
func (s *Service) AuthorizeKMIP(ctx context.Context, cert *x509.Certificate, action, objectID string) error {
	rq := requestOf(ctx)
	if rq == nil {
		return newError(codes.Internal, ExcInternal, "request not begun")
	}
	id := authz.Caller{}
	if cert != nil {
		id = s.certIdentity(cert)
	}
	if id.Role == authz.RoleNode {
		id.Role = "" // a node certificate is no KMIP client
	}
	if err := s.roleGate(rq, id, action, RequestContexts{KeyRef: objectID}); err != nil {
		return err
	}
	if s.gate.Load() {
		if ok, why := s.Healthy(); !ok {
			return newError(codes.Unavailable, ExcDependencyTimeout, "node %s is not ready (%s); use another node", s.node.ID(), why)
		}
	}
	return nil
}

// KMIPPrincipal returns ctx carrying the principal of a KMIP client
// certificate, for the operations that record an owner.
func KMIPPrincipal(ctx context.Context, cert *x509.Certificate) context.Context {
	if cert == nil {
		return ctx
	}
	return WithPrincipal(ctx, PrincipalFromCert(cert))
}

// KMIPAttributes are the attributes a client gives an object it creates or
// registers.
type KMIPAttributes struct {
	Names          []string
	Groups         []string
	Custom         map[string]string
	Algorithm      uint32 // KMIP Cryptographic Algorithm; AES is 3
	Length         int32  // bits
	UsageMask      int32
	SecretDataType uint32
	// NotExtractable marks an object whose material Get never returns
	// (the client set Extractable false or Sensitive true).
	NotExtractable bool
}

// KMIP object types and the algorithm this core makes keys for.
const (
	KMIPSymmetricKey uint32 = 2
	KMIPSecretData   uint32 = 7
	KMIPAES          uint32 = 3
)

// MaxKMIPMaterial is the largest material Register accepts: what one
// Encrypt call seals.
const MaxKMIPMaterial = keys.MaxPlaintext

// KMIPRegisterRequest imports a client's material.
type KMIPRegisterRequest struct {
	WrappingKey string // the KMS key that seals the material
	ObjectType  uint32 // KMIPSymmetricKey or KMIPSecretData
	Material    []byte
	Attributes  KMIPAttributes
}

// KMIPCreateRequest makes an AES key in the HSM.
type KMIPCreateRequest struct {
	WrappingKey string
	Attributes  KMIPAttributes // Length: 128, 192 or 256
}

func kmipInvalid(format string, args ...any) error {
	return newError(codes.InvalidArgument, ExcValidation, format, args...)
}

func checkKMIPAttributes(a KMIPAttributes) error {
	if len(a.Names) > cluster.MaxKMIPNames || len(a.Groups) > cluster.MaxKMIPGroups || len(a.Custom) > cluster.MaxKMIPCustom {
		return kmipInvalid("an object has at most %d names, %d object groups and %d custom attributes", cluster.MaxKMIPNames, cluster.MaxKMIPGroups, cluster.MaxKMIPCustom)
	}
	return nil
}

// KMIPRegister stores a client's symmetric key or secret data, sealed in
// the HSM under the wrapping key before anything is stored.
func (s *Service) KMIPRegister(ctx context.Context, req KMIPRegisterRequest) (cluster.KMIPObject, error) {
	a := req.Attributes
	switch req.ObjectType {
	case KMIPSymmetricKey:
		if n := len(req.Material); n == 0 || a.Length != 0 && int(a.Length) != 8*n {
			return cluster.KMIPObject{}, kmipInvalid("the key material is %d bytes but Cryptographic Length says %d bits", n, a.Length)
		}
		a.Length = int32(8 * len(req.Material))
	case KMIPSecretData:
		a.Algorithm, a.Length = 0, 0
	default:
		return cluster.KMIPObject{}, newError(codes.Unimplemented, ExcUnsupportedOperation, "object type %d cannot be registered; Symmetric Key and Secret Data can", req.ObjectType)
	}
	if len(req.Material) == 0 || len(req.Material) > MaxKMIPMaterial {
		return cluster.KMIPObject{}, kmipInvalid("the material must be 1 to %d bytes, got %d", MaxKMIPMaterial, len(req.Material))
	}
	if err := checkKMIPAttributes(a); err != nil {
		return cluster.KMIPObject{}, err
	}
	return s.kmipStore(ctx, req.WrappingKey, req.ObjectType, a, func(k cluster.Key, ec keys.EncryptionContext) ([]byte, error) {
		return s.sealSymmetric(ctx, k, req.Material, ec)
	})
}

// KMIPCreate makes an AES key of 128, 192 or 256 bits in the HSM's
// generator and stores it sealed there.
func (s *Service) KMIPCreate(ctx context.Context, req KMIPCreateRequest) (cluster.KMIPObject, error) {
	a := req.Attributes
	if a.Algorithm != KMIPAES {
		return cluster.KMIPObject{}, newError(codes.Unimplemented, ExcUnsupportedOperation, "Create makes AES keys (Cryptographic Algorithm 3), not algorithm %d", a.Algorithm)
	}
	if a.Length != 128 && a.Length != 192 && a.Length != 256 {
		return cluster.KMIPObject{}, kmipInvalid("Cryptographic Length must be 128, 192 or 256, got %d", a.Length)
	}
	if err := checkKMIPAttributes(a); err != nil {
		return cluster.KMIPObject{}, err
	}
	return s.kmipStore(ctx, req.WrappingKey, KMIPSymmetricKey, a, func(k cluster.Key, ec keys.EncryptionContext) ([]byte, error) {
		pt, err := s.hsm.Random(ctx, int(a.Length/8))
		if err != nil {
			return nil, err
		}
		defer clear(pt)
		return s.sealSymmetric(ctx, k, pt, ec)
	})
}

func (s *Service) kmipStore(ctx context.Context, wrappingKey string, objectType uint32, a KMIPAttributes, seal func(cluster.Key, keys.EncryptionContext) ([]byte, error)) (cluster.KMIPObject, error) {
	k, err := s.resolveUsable(ctx, "WrappingKey", wrappingKey, keys.UsageEncryptDecrypt)
	if err != nil {
		return cluster.KMIPObject{}, err
	}
	if k.Spec != keys.SpecSymmetricDefault {
		return cluster.KMIPObject{}, errKeyUsage("the KMIP wrapping key %s must be symmetric", k.ID)
	}
	now := s.now()
	o := cluster.KMIPObject{
		ID: keys.NewKeyID(), ObjectType: objectType, State: cluster.KMIPPreActive,
		Algorithm: a.Algorithm, Length: a.Length, UsageMask: a.UsageMask, SecretDataType: a.SecretDataType,
		Extractable: !a.NotExtractable, Names: a.Names, Groups: a.Groups, Custom: a.Custom,
		Owner: Principal(ctx), WrappingKeyID: k.ID, CreatedAt: now, LastChange: now,
	}
	if rq := requestOf(ctx); rq != nil {
		rq.mu.Lock()
		rq.contexts.KeyRef = o.ID
		rq.mu.Unlock()
	}
	if o.Wrapped, err = seal(k, keys.EncryptionContext{kmipContextKey: o.ID}); err != nil {
		return cluster.KMIPObject{}, err
	}
	res, err := s.apply(ctx, &cluster.KMIPCreateObject{Object: o})
	if err != nil {
		return cluster.KMIPObject{}, err
	}
	if stored, ok := res.(cluster.KMIPObject); ok {
		return stored, nil
	}
	return o, nil
}

// kmipObject finds an object and checks the caller against its wrapping
// key's policy for the request's action. A follower that does not find it
// catches up with the leader first.
func (s *Service) kmipObject(ctx context.Context, id string) (cluster.KMIPObject, error) {
	if id == "" || len(id) > 256 {
		return cluster.KMIPObject{}, kmipInvalid("Unique Identifier must be 1 to 256 bytes")
	}
	st := s.node.State()
	o, ok := st.KMIPObject(id)
	if !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return o, err
		}
		if o, ok = st.KMIPObject(id); !ok {
			return o, errNotFound("KMIP object %s does not exist", id)
		}
	}
	k, ok := st.Key(o.WrappingKeyID)
	if !ok {
		return o, newError(codes.FailedPrecondition, ExcInvalidState, "the key that wraps KMIP object %s is gone", id)
	}
	if err := s.authorizeKey(ctx, "UniqueIdentifier", k); err != nil {
		return cluster.KMIPObject{}, err
	}
	return o, nil
}

// KMIPObject returns an object's attributes (never its material).
func (s *Service) KMIPObject(ctx context.Context, id string) (cluster.KMIPObject, error) {
	o, err := s.kmipObject(ctx, id)
	o.Wrapped = nil
	return o, err
}

// KMIPGet returns an object and its material, opened in the HSM. Only
// objects marked extractable give their material, and never while
// Compromised; a Deactivated key is returned so that old data can still
// be read.
func (s *Service) KMIPGet(ctx context.Context, id string) (cluster.KMIPObject, []byte, error) {
	o, err := s.kmipObject(ctx, id)
	if err != nil {
		return o, nil, err
	}
	if o.ObjectType == cluster.KMIPPublicKey {
		o.Wrapped = nil
		return o, slices.Clone(o.PublicKey), nil
	}
	if !o.Extractable || o.ObjectType == cluster.KMIPPrivateKey {
		return o, nil, newError(codes.PermissionDenied, ExcAccessDenied, "KMIP object %s is not extractable", id)
	}
	if o.State == cluster.KMIPCompromised {
		return o, nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is compromised", id)
	}
	_, pt, err := s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	o.Wrapped = nil
	return o, pt, err
}

// KMIPLocateRequest selects objects; empty fields match everything.
type KMIPLocateRequest struct {
	WrappingKey string
	Names       []string // the object has every one of these names
	Groups      []string
	ObjectType  uint32
	State       uint32
	Offset      int
	MaxItems    int // 0: no limit
}

// MaxKMIPLocate is the most identifiers one Locate returns.
const MaxKMIPLocate = 1000

// KMIPLocate returns the ids of matching objects, in id order. The caller
// must be allowed kmip:Locate by the wrapping key's policy.
func (s *Service) KMIPLocate(ctx context.Context, req KMIPLocateRequest) ([]string, error) {
	if _, err := s.resolve(ctx, "WrappingKey", req.WrappingKey); err != nil {
		return nil, err
	}
	if req.Offset < 0 || req.MaxItems < 0 {
		return nil, kmipInvalid("Offset Items and Maximum Items must not be negative")
	}
	limit := req.MaxItems
	if limit == 0 || limit > MaxKMIPLocate {
		limit = MaxKMIPLocate
	}
	if err := s.syncWithLeader(ctx); err != nil {
		return nil, err
	}
	objs := s.node.State().KMIPObjects(func(o *cluster.KMIPObject) bool {
		if req.ObjectType != 0 && o.ObjectType != req.ObjectType || req.State != 0 && o.State != req.State {
			return false
		}
		for _, n := range req.Names {
			if !slices.Contains(o.Names, n) {
				return false
			}
		}
		for _, g := range req.Groups {
			if !slices.Contains(o.Groups, g) {
				return false
			}
		}
		return true
	}, req.Offset, limit)
	ids := make([]string, len(objs))
	for i, o := range objs {
		ids[i] = o.ID
	}
	return ids, nil
}

// KMIPUpdate changes an object's mutable attributes with change, which
// sees a copy and returns an error to refuse; the lifecycle is checked
// here and again where the change is applied. It returns the object as
// stored.
func (s *Service) KMIPUpdate(ctx context.Context, id string, change func(o *cluster.KMIPObject) error) (cluster.KMIPObject, error) {
	o, err := s.kmipObject(ctx, id)
	if err != nil {
		return o, err
	}
	from := o.State
	n := o.Clone()
	if err := change(&n); err != nil {
		return o, err
	}
	if !cluster.KMIPTransitionAllowed(from, n.State) {
		return o, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s cannot go from state %d to %d", id, from, n.State)
	}
	if err := checkKMIPAttributes(KMIPAttributes{Names: n.Names, Groups: n.Groups, Custom: n.Custom}); err != nil {
		return o, err
	}
	n.LastChange = s.now()
	res, err := s.apply(ctx, &cluster.KMIPUpdateObject{FromState: from, Object: n})
	if err != nil {
		return o, err
	}
	stored, _ := res.(cluster.KMIPObject)
	stored.Wrapped = nil
	return stored, nil
}

// KMIPDestroy removes an object and its sealed material. An Active object
// must be revoked first.
func (s *Service) KMIPDestroy(ctx context.Context, id string) error {
	o, err := s.kmipObject(ctx, id)
	if err != nil {
		return err
	}
	if o.State == cluster.KMIPActive {
		return newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is Active; revoke it before destroying it", id)
	}
	_, err = s.apply(ctx, &cluster.KMIPDeleteObject{ID: id, FromState: o.State})
	if err == nil && o.ObjectType == cluster.KMIPPrivateKey {
		s.hsm.Evict(ctx, id) // the private key may still be loaded from a Sign
	}
	return err
}

// Now is the service's clock, for the dates KMIP attributes carry.
func (s *Service) Now() time.Time { return s.now() }

// The AES modes of KMIPCryptRequest, and GCM's tag size: the partition's
// own names, so that the KMIP front need not import broker/hsm.
const (
	KMIPModeCBCPad = hsm.RawCBCPad
	KMIPModeCBC    = hsm.RawCBC
	KMIPModeGCM    = hsm.RawGCM
	KMIPGCMTagSize = hsm.GCMTagSize
)

// KMIPCryptRequest encrypts or decrypts with a KMIP symmetric key in the
// HSM.
type KMIPCryptRequest struct {
	ID      string
	Encrypt bool
	Mode    hsm.RawMode // KMIPModeCBCPad, KMIPModeCBC or KMIPModeGCM
	IV      []byte      // nil on Encrypt: the HSM's generator makes one
	AAD     []byte      // GCM only
	Data    []byte
}

// KMIP usage mask bits.
const (
	kmipUsageEncrypt int32 = 0x04
	kmipUsageDecrypt int32 = 0x08
)

// KMIPCrypt runs AES with a KMIP key inside the HSM: the key's sealed
// material is opened in the HSM and becomes a session object for the one
// operation. Encrypt needs an Active key; Decrypt an Active or
// Deactivated one; both need the usage mask to allow them (when it is
// set). It returns the output and the IV used.
func (s *Service) KMIPCrypt(ctx context.Context, req KMIPCryptRequest) ([]byte, []byte, error) {
	o, err := s.kmipObject(ctx, req.ID)
	if err != nil {
		return nil, nil, err
	}
	if o.ObjectType != KMIPSymmetricKey || o.Algorithm != KMIPAES {
		return nil, nil, errKeyUsage("KMIP object %s is not an AES key", req.ID)
	}
	bit, verb := kmipUsageDecrypt, "decrypt"
	if req.Encrypt {
		bit, verb = kmipUsageEncrypt, "encrypt"
	}
	if o.UsageMask != 0 && o.UsageMask&bit == 0 {
		return nil, nil, errKeyUsage("the usage mask of KMIP object %s does not allow it to %s", req.ID, verb)
	}
	if o.State != cluster.KMIPActive && (req.Encrypt || o.State != cluster.KMIPDeactivated) {
		return nil, nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; %s needs an Active key", req.ID, o.State, verb)
	}
	iv := req.IV
	if req.Encrypt && len(iv) == 0 {
		n := 16
		if req.Mode == hsm.RawGCM {
			n = hsm.GCMIVSize
		}
		if iv, err = s.hsm.Random(ctx, n); err != nil {
			return nil, nil, err
		}
	}
	_, key, err := s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	if err != nil {
		return nil, nil, err
	}
	defer clear(key)
	op := hsm.RawOp{Mode: req.Mode, IV: iv}
	if req.Mode == hsm.RawGCM {
		// KMIP GCM here is the 96-bit IV form; other modes ignore the
		// additional data a client sends.
		if len(iv) != hsm.GCMIVSize {
			return nil, nil, kmipInvalid("GCM needs a %d-byte IV and a %d-byte tag", hsm.GCMIVSize, hsm.GCMTagSize)
		}
		op.AAD = req.AAD
	}
	out, err := s.hsm.CryptWithValue(ctx, key, req.Encrypt, op, req.Data)
	switch {
	case errors.Is(err, hsm.ErrInvalidInput), errors.Is(err, hsm.ErrUnsupported):
		return nil, nil, kmipInvalid("%s", strings.TrimPrefix(err.Error(), hsm.ErrInvalidInput.Error()+": "))
	case err != nil:
		return nil, nil, err
	}
	return out, iv, nil
}

// KMIP HMAC algorithms (Cryptographic Algorithm) and the usage mask bit
// MAC needs.
const (
	KMIPHMACSHA256 uint32 = 9
	KMIPHMACSHA384 uint32 = 10
	KMIPHMACSHA512 uint32 = 11

	kmipUsageMACGenerate int32 = 0x80
)

var kmipHMACHash = map[uint32]crypto.Hash{KMIPHMACSHA256: crypto.SHA256, KMIPHMACSHA384: crypto.SHA384, KMIPHMACSHA512: crypto.SHA512}

// KMIPMACRequest computes an HMAC with a KMIP symmetric key or secret.
type KMIPMACRequest struct {
	ID        string
	Algorithm uint32 // KMIPHMACSHA256/384/512; 0: the object's own algorithm
	Data      []byte
}

// KMIPMAC computes an HMAC inside the HSM with a KMIP Symmetric Key or
// Secret Data object: its sealed material is opened in the HSM and becomes
// a non-extractable session object for the one call, as in KMIPCrypt. The
// object must be Active and its usage mask must allow MAC Generate; a key
// whose own Cryptographic Algorithm is an HMAC is used with that
// algorithm only.
func (s *Service) KMIPMAC(ctx context.Context, req KMIPMACRequest) ([]byte, error) {
	o, err := s.kmipObject(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if o.ObjectType != KMIPSymmetricKey && o.ObjectType != KMIPSecretData {
		return nil, errKeyUsage("KMIP object %s is not a symmetric key or secret", req.ID)
	}
	alg := req.Algorithm
	if _, own := kmipHMACHash[o.Algorithm]; own {
		if alg != 0 && alg != o.Algorithm {
			return nil, kmipInvalid("KMIP object %s is a key for Cryptographic Algorithm %d, not %d", req.ID, o.Algorithm, alg)
		}
		alg = o.Algorithm
	}
	h, ok := kmipHMACHash[alg]
	if !ok {
		return nil, newError(codes.Unimplemented, ExcUnsupportedOperation, "MAC is HMAC-SHA256, HMAC-SHA384 or HMAC-SHA512 (Cryptographic Algorithm 9, 10 or 11), not %d", alg)
	}
	if o.UsageMask&kmipUsageMACGenerate == 0 {
		return nil, errKeyUsage("the usage mask of KMIP object %s does not allow MAC Generate", req.ID)
	}
	if o.State != cluster.KMIPActive {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; MAC needs an Active object", req.ID, o.State)
	}
	if len(req.Data) == 0 || len(req.Data) > hsm.MaxGCMInput {
		return nil, kmipInvalid("Data must be 1 to %d bytes, got %d", hsm.MaxGCMInput, len(req.Data))
	}
	_, key, err := s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	if err != nil {
		return nil, err
	}
	defer clear(key)
	out, err := s.hsm.MACWithValue(ctx, key, h, req.Data)
	switch {
	case errors.Is(err, hsm.ErrInvalidInput), errors.Is(err, hsm.ErrUnsupported):
		return nil, kmipInvalid("%s", strings.TrimPrefix(err.Error(), hsm.ErrInvalidInput.Error()+": "))
	case err != nil:
		return nil, err
	}
	return out, nil
}

// KMIP algorithms of key pairs, and the usage mask bits of signing.
const (
	KMIPRSA   uint32 = 4
	KMIPECDSA uint32 = 6
	KMIPEC    uint32 = 0x1A

	kmipUsageSign   int32 = 0x01
	kmipUsageVerify int32 = 0x02
)

// KMIPCreateKeyPairRequest makes an RSA or EC key pair in the HSM.
type KMIPCreateKeyPairRequest struct {
	WrappingKey string
	Algorithm   uint32 // KMIPRSA, KMIPECDSA or KMIPEC
	Length      int32  // RSA 2048 or 3072; EC 256 or 384
	// Private and Public are each half's attributes (names, groups, usage
	// mask), the common ones already merged in.
	Private, Public KMIPAttributes
}

func kmipPairSpec(alg uint32, bits int32) (keys.Spec, error) {
	switch {
	case alg == KMIPRSA && bits == 2048:
		return keys.SpecRSA2048, nil
	case alg == KMIPRSA && bits == 3072:
		return keys.SpecRSA3072, nil
	case (alg == KMIPECDSA || alg == KMIPEC) && bits == 256:
		return keys.SpecECCNISTP256, nil
	case (alg == KMIPECDSA || alg == KMIPEC) && bits == 384:
		return keys.SpecECCNISTP384, nil
	case alg == KMIPRSA || alg == KMIPECDSA || alg == KMIPEC:
		return "", kmipInvalid("Cryptographic Length must be 2048 or 3072 for RSA, 256 or 384 for EC, got %d", bits)
	}
	return "", newError(codes.Unimplemented, ExcUnsupportedOperation, "Create Key Pair makes RSA and EC keys (Cryptographic Algorithm 4, 6 or 26), not algorithm %d", alg)
}

// KMIPCreateKeyPair makes a key pair with the broker's own asymmetric key
// generation: the HSM generates it, the private key leaves the HSM only
// wrapped under the domain key, as a KMS key's does. It is stored as two
// linked objects in one replicated command: a Private Key that is never
// extractable and a Public Key that Get returns. Unless the client says
// otherwise, the private key's usage mask is Sign and the public key's
// Verify. It returns the private and the public object.
func (s *Service) KMIPCreateKeyPair(ctx context.Context, req KMIPCreateKeyPairRequest) (cluster.KMIPObject, cluster.KMIPObject, error) {
	spec, err := kmipPairSpec(req.Algorithm, req.Length)
	if err != nil {
		return cluster.KMIPObject{}, cluster.KMIPObject{}, err
	}
	for _, a := range []KMIPAttributes{req.Private, req.Public} {
		if err := checkKMIPAttributes(a); err != nil {
			return cluster.KMIPObject{}, cluster.KMIPObject{}, err
		}
	}
	k, err := s.resolveUsable(ctx, "WrappingKey", req.WrappingKey, keys.UsageEncryptDecrypt)
	if err != nil {
		return cluster.KMIPObject{}, cluster.KMIPObject{}, err
	}
	g, err := s.hsm.GenerateKey(ctx, spec)
	if err != nil {
		return cluster.KMIPObject{}, cluster.KMIPObject{}, err
	}
	now := s.now()
	half := func(t uint32, a KMIPAttributes, mask int32) cluster.KMIPObject {
		if a.UsageMask == 0 {
			a.UsageMask = mask
		}
		return cluster.KMIPObject{
			ID: keys.NewKeyID(), ObjectType: t, State: cluster.KMIPPreActive, Algorithm: req.Algorithm, Length: req.Length,
			UsageMask: a.UsageMask, Names: a.Names, Groups: a.Groups, Custom: a.Custom, Owner: Principal(ctx),
			WrappingKeyID: k.ID, CreatedAt: now, LastChange: now, KeySpec: string(spec), PublicKey: g.PublicKey,
		}
	}
	priv := half(cluster.KMIPPrivateKey, req.Private, kmipUsageSign)
	pub := half(cluster.KMIPPublicKey, req.Public, kmipUsageVerify)
	priv.Wrapped, priv.LinkedID = g.Wrapped, pub.ID
	pub.LinkedID, pub.Extractable = priv.ID, true
	if rq := requestOf(ctx); rq != nil {
		rq.mu.Lock()
		rq.contexts.KeyRef = priv.ID
		rq.mu.Unlock()
	}
	res, err := s.apply(ctx, &cluster.KMIPCreateKeyPair{Private: priv, Public: pub})
	if err != nil {
		return cluster.KMIPObject{}, cluster.KMIPObject{}, err
	}
	if out, ok := res.([]cluster.KMIPObject); ok && len(out) == 2 {
		priv, pub = out[0], out[1]
	}
	priv.Wrapped = nil
	return priv, pub, nil
}

// KMIPSignRequest signs data with a KMIP private key, or checks a
// signature with a KMIP public key.
type KMIPSignRequest struct {
	ID        string
	Algorithm string // a KMS signing algorithm ("RSASSA_PSS_SHA_256"...); "": the key's default
	Data      []byte
	Signature []byte // Verify only
}

// kmipSigning checks a Sign or Signature Verify request against its
// object and returns the object, the algorithm and the digest.
func (s *Service) kmipSigning(ctx context.Context, req KMIPSignRequest, objectType uint32, bit int32, verb string) (cluster.KMIPObject, keys.SigningAlgorithm, []byte, error) {
	o, err := s.kmipObject(ctx, req.ID)
	if err != nil {
		return o, "", nil, err
	}
	if o.ObjectType != objectType || o.KeySpec == "" {
		return o, "", nil, errKeyUsage("KMIP object %s is not a %s key of a key pair", req.ID, map[uint32]string{cluster.KMIPPrivateKey: "private", cluster.KMIPPublicKey: "public"}[objectType])
	}
	if o.UsageMask&bit == 0 {
		return o, "", nil, errKeyUsage("the usage mask of KMIP object %s does not allow it to %s", req.ID, verb)
	}
	if o.State != cluster.KMIPActive && (objectType == cluster.KMIPPrivateKey || o.State != cluster.KMIPDeactivated) {
		return o, "", nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; it cannot %s", req.ID, o.State, verb)
	}
	spec := keys.Spec(o.KeySpec)
	alg := keys.SigningAlgorithm(req.Algorithm)
	if alg == "" {
		alg = keys.SigningRSASSAPKCS1V15SHA256
		if spec.IsEC() {
			alg = spec.SigningAlgorithms(keys.UsageSignVerify)[0]
		}
	}
	if !alg.Valid() {
		return o, "", nil, kmipInvalid("signing algorithm %q is not one of %v", alg, keys.AllSigningAlgorithms)
	}
	if err := keys.CheckSigningAlgorithm(spec, keys.UsageSignVerify, alg); err != nil {
		return o, "", nil, err
	}
	if err := keys.ValidateMessage(keys.MessageRaw, alg, req.Data); err != nil {
		return o, "", nil, err
	}
	h := alg.Hash().New()
	h.Write(req.Data)
	return o, alg, h.Sum(nil), nil
}

// KMIPSign signs data with a KMIP private key in the HSM, through the
// path KMS Sign uses: the domain-wrapped private key is unwrapped in the
// HSM and signs there. The key must be Active and its usage mask allow
// Sign.
func (s *Service) KMIPSign(ctx context.Context, req KMIPSignRequest) ([]byte, error) {
	o, alg, digest, err := s.kmipSigning(ctx, req, cluster.KMIPPrivateKey, kmipUsageSign, "sign")
	if err != nil {
		return nil, err
	}
	ref := hsm.KeyRef{ID: o.ID, Version: 1, Spec: keys.Spec(o.KeySpec), Usage: keys.UsageSignVerify, Wrapped: o.Wrapped}
	return s.hsm.SignDigest(ctx, ref, alg, digest)
}

// KMIPSignatureVerify checks a signature with a KMIP public key, as KMS
// Verify does. A signature that does not verify is false, not an error.
func (s *Service) KMIPSignatureVerify(ctx context.Context, req KMIPSignRequest) (bool, error) {
	if n := len(req.Signature); n == 0 || n > maxSignature {
		return false, kmipInvalid("Signature Data must be 1 to %d bytes, got %d", maxSignature, n)
	}
	o, alg, digest, err := s.kmipSigning(ctx, req, cluster.KMIPPublicKey, kmipUsageVerify, "verify")
	if err != nil {
		return false, err
	}
	return keys.VerifySignature(o.PublicKey, alg, digest, req.Signature)
}
