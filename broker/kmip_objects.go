package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// KMIP objects: how they are made, found, read, moved through their
// lifecycle and destroyed (kmip_core.go has the type; kmip_attributes.go
// the attributes a client changes; kmip_crypto.go the cryptography).

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
	Material    []byte // 1 to MaxKMIPMaterial bytes; the caller clears it
	Attributes  KMIPAttributes
}

// KMIPCreateRequest makes an AES key in the HSM.
type KMIPCreateRequest struct {
	WrappingKey string
	Attributes  KMIPAttributes // Algorithm: KMIPAES; Length: 128, 192 or 256
}

// Register stores a client's symmetric key or secret data, sealed in the
// HSM under the wrapping key before anything is stored. It returns the
// object as stored, without its material.
func (c *KMIPObjects) Register(ctx context.Context, req KMIPRegisterRequest) (cluster.KMIPObject, error) {
	s := c.s
	a := req.Attributes
	switch req.ObjectType {
	case KMIPSymmetricKey:
		if n := len(req.Material); n == 0 || a.Length != 0 && int(a.Length) != 8*n {
			return cluster.KMIPObject{}, kmipInvalid("the key material is %d bytes but Cryptographic Length says %d bits", n, a.Length)
		}
		// An AES key is one Encrypt can use, as Create makes them.
		if n := len(req.Material); a.Algorithm == KMIPAES && n != 16 && n != 24 && n != 32 {
			return cluster.KMIPObject{}, kmipInvalid("Cryptographic Length must be 128, 192 or 256 for an AES key; the key material is %d bytes (%d bits)", n, 8*n)
		}
		a.Length = int32(8 * len(req.Material))
	case KMIPSecretData:
		a.Algorithm, a.Length = 0, 0
	default:
		return cluster.KMIPObject{}, errUnsupported("object type %d cannot be registered; Symmetric Key and Secret Data can", req.ObjectType)
	}
	if len(req.Material) == 0 || len(req.Material) > MaxKMIPMaterial {
		return cluster.KMIPObject{}, kmipInvalid("the material must be 1 to %d bytes, got %d", MaxKMIPMaterial, len(req.Material))
	}
	if err := checkKMIPAttributes(a, 0); err != nil {
		return cluster.KMIPObject{}, err
	}
	return c.store(ctx, req.WrappingKey, req.ObjectType, a, func(k cluster.Key, ec keys.EncryptionContext) ([]byte, error) {
		return s.sealSymmetric(ctx, k, req.Material, ec)
	})
}

// Create makes an AES key of 128, 192 or 256 bits in the HSM's generator
// and stores it sealed there. It returns the object as stored, without
// its material.
func (c *KMIPObjects) Create(ctx context.Context, req KMIPCreateRequest) (cluster.KMIPObject, error) {
	s := c.s
	a := req.Attributes
	if a.Algorithm != KMIPAES {
		return cluster.KMIPObject{}, errUnsupported("Create makes AES keys (Cryptographic Algorithm 3), not algorithm %d", a.Algorithm)
	}
	if a.Length != 128 && a.Length != 192 && a.Length != 256 {
		return cluster.KMIPObject{}, kmipInvalid("Cryptographic Length must be 128, 192 or 256, got %d", a.Length)
	}
	if err := checkKMIPAttributes(a, 0); err != nil {
		return cluster.KMIPObject{}, err
	}
	return c.store(ctx, req.WrappingKey, KMIPSymmetricKey, a, func(k cluster.Key, ec keys.EncryptionContext) ([]byte, error) {
		pt, err := s.hsm.Random(ctx, int(a.Length/8))
		if err != nil {
			return nil, err
		}
		defer clear(pt)
		return s.sealSymmetric(ctx, k, pt, ec)
	})
}

// ErrKMIPObjectLimit is the cause of the error a request that would make
// a KMIP object gets when the cluster holds MaxKMIPObjects of them, or the
// caller holds its share (KMIPObjects.CheckRoom).
var ErrKMIPObjectLimit = errors.New("kmip: object limit reached")

// CheckRoom refuses, before anything is generated, sealed or proposed, a
// request of the caller that would make n more KMIP objects when the
// cluster holds cluster.MaxKMIPObjects, or when the caller (the principal
// that would own them) already owns its share of them (WithOwnerShare).
// It is the apply's own check (cluster.State.KMIPRoom) on this node's
// state; the apply checks again, so requests that pass here together
// still cannot pass either limit.
func (c *KMIPObjects) CheckRoom(ctx context.Context, n int) error {
	return kmipCreateFailed(c.s.node.State().KMIPRoom(Principal(ctx), n, c.ownerShare))
}

func errKMIPObjectLimit(format string, args ...any) error {
	e := newError(codes.ResourceExhausted, ExcLimitExceeded, format, args...)
	e.Err = ErrKMIPObjectLimit
	return e
}

// kmipCreateFailed is the error of a proposed KMIPCreateObject or
// KMIPCreateKeyPair. The only invalid states their apply reports are the
// cluster's limit on objects and the owner's share (other requests took
// the last room since CheckRoom), which are told as such.
func kmipCreateFailed(err error) error {
	if errors.Is(err, cluster.ErrInvalidState) {
		return errKMIPObjectLimit("%s", detail(err, cluster.ErrInvalidState))
	}
	return err
}

func (c *KMIPObjects) store(ctx context.Context, wrappingKey string, objectType uint32, a KMIPAttributes, seal func(cluster.Key, keys.EncryptionContext) ([]byte, error)) (cluster.KMIPObject, error) {
	s := c.s
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
	activateBy(&o, a.ActivationDate, now)
	nameObject(ctx, o.ID)
	if o.Wrapped, err = seal(k, keys.EncryptionContext{kmipContextKey: o.ID}); err != nil {
		return cluster.KMIPObject{}, err
	}
	res, err := s.apply(ctx, &cluster.KMIPCreateObject{Object: o, OwnerShare: c.ownerShare})
	if err != nil {
		return cluster.KMIPObject{}, kmipCreateFailed(err)
	}
	if stored, ok := res.(cluster.KMIPObject); ok {
		return stored, nil
	}
	return o, nil
}

// Object returns an object's attributes (never its material).
func (c *KMIPObjects) Object(ctx context.Context, id string) (cluster.KMIPObject, error) {
	o, err := c.object(ctx, id)
	o.Wrapped = nil
	return o, err
}

// KMIPMaterial is an object and its material, as Get returns them.
type KMIPMaterial struct {
	Object cluster.KMIPObject // without its sealed blob
	// Material is the key or secret in plaintext (the DER public key of a
	// Public Key). The caller clears it once it has been sent.
	Material []byte
}

// Get returns an object and its material, opened in the HSM. Only objects
// marked extractable give their material, and never while Compromised; a
// Deactivated key is returned so that old data can still be read.
func (c *KMIPObjects) Get(ctx context.Context, id string) (KMIPMaterial, error) {
	o, err := c.object(ctx, id)
	if err != nil {
		return KMIPMaterial{}, err
	}
	if o.ObjectType == cluster.KMIPPublicKey {
		o.Wrapped = nil
		return KMIPMaterial{Object: o, Material: slices.Clone(o.PublicKey)}, nil
	}
	if !o.Extractable || o.ObjectType == cluster.KMIPPrivateKey {
		return KMIPMaterial{}, newError(codes.PermissionDenied, ExcAccessDenied, "KMIP object %s is not extractable", id)
	}
	if o.State == cluster.KMIPCompromised {
		return KMIPMaterial{}, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is compromised", id)
	}
	_, pt, err := c.s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	if err != nil {
		return KMIPMaterial{}, err
	}
	o.Wrapped = nil
	return KMIPMaterial{Object: o, Material: pt}, nil
}

// KMIPLocateRequest selects objects; empty fields match everything.
type KMIPLocateRequest struct {
	WrappingKey string
	Names       []string // the object has every one of these names
	Groups      []string // and every one of these object groups
	ObjectType  uint32
	State       uint32
	Offset      int
	MaxItems    int // 0: no limit (MaxKMIPLocate)
}

// MaxKMIPLocate is the most identifiers one Locate returns.
const MaxKMIPLocate = 1000

// Locate returns the ids of matching objects, in id order. The caller
// must be allowed kmip:Locate by the wrapping key's policy.
func (c *KMIPObjects) Locate(ctx context.Context, req KMIPLocateRequest) ([]string, error) {
	s := c.s
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
	return s.node.State().KMIPObjectIDs(func(o *cluster.KMIPObject) bool {
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
	}, req.Offset, limit), nil
}

// Activate makes a Pre-Active object Active, dated now.
func (c *KMIPObjects) Activate(ctx context.Context, id string) (cluster.KMIPObject, error) {
	return c.update(ctx, id, func(o *cluster.KMIPObject) error {
		if o.State != cluster.KMIPPreActive {
			return newError(codes.FailedPrecondition, ExcInvalidState, "only a Pre-Active object can be activated")
		}
		o.State, o.ActivationDate = cluster.KMIPActive, c.s.now()
		return nil
	})
}

// KMIP revocation reason codes this core tells apart.
const (
	KMIPRevocationKeyCompromise uint32 = 2
	KMIPRevocationCACompromise  uint32 = 3

	maxKMIPRevocationReason = 8
)

// MaxKMIPRevocationMessage is the longest Revocation Message, in bytes.
const MaxKMIPRevocationMessage = 1024

// KMIPRevokeRequest revokes an object.
type KMIPRevokeRequest struct {
	ID string
	// Reason is a KMIP Revocation Reason Code (1 to 8). Key Compromise and
	// CA Compromise make the object Compromised; the others Deactivated.
	Reason uint32
	// Message is the Revocation Message, at most 1024 bytes.
	Message string
}

// Revoke revokes an object as KMIP's state model says, in one
// replicated change checked against the object's state:
//
//   - Key Compromise and CA Compromise make a Pre-Active, Active or
//     Deactivated object Compromised, dated now (a Compromised object
//     stays Compromised);
//   - every other reason (Unspecified, Affiliation Changed, Superseded,
//     Cessation of Operation, Privilege Withdrawn) deactivates an Active
//     object, dated now, and is refused in any other state: a Pre-Active
//     object was never in use, and a Deactivated or Compromised one is
//     already out of use.
//
// A refused revocation is a wrong lifecycle state and changes nothing.
func (c *KMIPObjects) Revoke(ctx context.Context, req KMIPRevokeRequest) (cluster.KMIPObject, error) {
	if req.Reason < 1 || req.Reason > maxKMIPRevocationReason {
		return cluster.KMIPObject{}, kmipInvalid("Revocation Reason Code must be a KMIP revocation reason")
	}
	if len(req.Message) > MaxKMIPRevocationMessage {
		return cluster.KMIPObject{}, kmipInvalid("Revocation Message must be a Text String of at most %d bytes", MaxKMIPRevocationMessage)
	}
	now := c.s.now()
	return c.update(ctx, req.ID, func(o *cluster.KMIPObject) error {
		return kmipRevoke(o, req, now)
	})
}

// kmipRevoke applies a revocation to o, or refuses it (Revoke).
func kmipRevoke(o *cluster.KMIPObject, req KMIPRevokeRequest, now time.Time) error {
	switch req.Reason {
	case KMIPRevocationKeyCompromise, KMIPRevocationCACompromise:
		o.State, o.CompromiseDate = cluster.KMIPCompromised, now
	default:
		if o.State != cluster.KMIPActive {
			return kmipWrongState("KMIP object %s is %s: only an Active object can be revoked for a reason other than Key Compromise or CA Compromise", o.ID, kmipStateName(o.State))
		}
		o.State = cluster.KMIPDeactivated
		if o.DeactivationDate.IsZero() {
			o.DeactivationDate = now
		}
	}
	o.RevocationReason, o.RevocationMessage = req.Reason, req.Message
	return nil
}

// update changes an object with change, which sees a copy and returns an
// error to refuse; the lifecycle is checked here and again where the
// change is applied. It returns the object as stored, without its
// material.
func (c *KMIPObjects) update(ctx context.Context, id string, change func(o *cluster.KMIPObject) error) (cluster.KMIPObject, error) {
	s := c.s
	o, err := c.object(ctx, id)
	if err != nil {
		return cluster.KMIPObject{}, err
	}
	from := o.State
	n := o.Clone()
	if err := change(&n); err != nil {
		return cluster.KMIPObject{}, err
	}
	if !cluster.KMIPTransitionAllowed(from, n.State) {
		return cluster.KMIPObject{}, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s cannot go from state %d to %d", id, from, n.State)
	}
	was := kmipAttributeBytes(KMIPAttributes{Names: o.Names, Groups: o.Groups, Custom: o.Custom})
	if err := checkKMIPAttributes(KMIPAttributes{Names: n.Names, Groups: n.Groups, Custom: n.Custom}, was); err != nil {
		return cluster.KMIPObject{}, err
	}
	n.LastChange = s.now()
	res, err := s.apply(ctx, &cluster.KMIPUpdateObject{FromState: from, Object: n})
	if err != nil {
		return cluster.KMIPObject{}, err
	}
	stored, _ := res.(cluster.KMIPObject)
	stored.Wrapped = nil
	return stored, nil
}

// Destroy removes an object and its sealed material. An Active object
// must be revoked first.
func (c *KMIPObjects) Destroy(ctx context.Context, id string) error {
	s := c.s
	o, err := c.object(ctx, id)
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

// The dates a client may give (Activation Date): from the Unix epoch (a
// KMIP Date-Time is POSIX time) to the end of year 9999, the last the
// replicated state holds.
var (
	minKMIPDate = time.Unix(0, 0).UTC()
	maxKMIPDate = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// checkKMIPDate refuses a date outside what a client may give; field names
// the attribute.
func checkKMIPDate(field string, t time.Time) error {
	if t.Before(minKMIPDate) || t.After(maxKMIPDate) {
		return kmipInvalid("%s must be from %s to %s", field, minKMIPDate.Format(time.DateOnly), maxKMIPDate.Format(time.DateOnly))
	}
	return nil
}

// kmipStateName names a KMIP state in messages.
func kmipStateName(s uint32) string {
	switch s {
	case cluster.KMIPPreActive:
		return "Pre-Active"
	case cluster.KMIPActive:
		return "Active"
	case cluster.KMIPDeactivated:
		return "Deactivated"
	case cluster.KMIPCompromised:
		return "Compromised"
	}
	return fmt.Sprintf("state %d", s)
}

// kmipWrongState is the error of a change the lifecycle does not allow
// (KMIP 2.0's Wrong Key Lifecycle State; the front answers 1.x clients
// with Permission Denied).
func kmipWrongState(format string, args ...any) error {
	return newError(codes.FailedPrecondition, ExcInvalidState, format, args...)
}
