package cluster

import (
	"bytes"
	"maps"
	"slices"
	"time"
)

// KMIP managed objects. The KMIP front stores each object it creates or
// registers here: its attributes in the clear and its material only as a
// ciphertext blob under a KMS key of this cluster (WrappingKeyID), made in
// an HSM. The enumerations (object type, state, algorithm...) are KMIP's
// own numbers; this package checks only their ranges and the lifecycle.

// Command types of the KMIP front (range 40-49).
const (
	TypeKMIPCreateObject CommandType = 40
	TypeKMIPUpdateObject CommandType = 41
	TypeKMIPDeleteObject CommandType = 42
	// TypeKMIPCreateKeyPair stores a private and a public key object in
	// one step, so that neither half exists without the other.
	TypeKMIPCreateKeyPair CommandType = 43
)

// KMIP object types of a key pair.
const (
	KMIPPublicKey  uint32 = 3
	KMIPPrivateKey uint32 = 4
)

// KMIP lifecycle states (KMIP 1.0 section 3.22).
const (
	KMIPPreActive            uint32 = 1
	KMIPActive               uint32 = 2
	KMIPDeactivated          uint32 = 3
	KMIPCompromised          uint32 = 4
	KMIPDestroyed            uint32 = 5
	KMIPDestroyedCompromised uint32 = 6
)

// Limits on KMIP objects, so that no client can bloat the state every
// node holds. The broker also bounds an object's attributes together
// (broker.MaxKMIPAttributeBytes) before it proposes a change; that bound
// is not checked here, so that entries and snapshots written before it
// stay valid.
const (
	MaxKMIPObjects = 100000
	MaxKMIPNames   = 16
	MaxKMIPGroups  = 16
	MaxKMIPCustom  = 32
	// MaxKMIPTextLen bounds a name, a group, a custom attribute's name and
	// a revocation message, in bytes.
	MaxKMIPTextLen = 1024
	// MaxKMIPCustomValue bounds a custom attribute's value, in bytes.
	MaxKMIPCustomValue = 4096
)

// KMIPObject is one KMIP managed object (a symmetric key or secret data).
type KMIPObject struct {
	ID             string `json:"id"`
	ObjectType     uint32 `json:"object_type"`
	State          uint32 `json:"state"`
	Algorithm      uint32 `json:"algorithm"`        // Cryptographic Algorithm, 0 for none
	Length         int32  `json:"length"`           // Cryptographic Length in bits
	UsageMask      int32  `json:"usage_mask"`       // Cryptographic Usage Mask
	SecretDataType uint32 `json:"secret_data_type"` // Secret Data objects only
	// Extractable says whether Get may return the material to an
	// authorized client (KMIP 2.0's Extractable attribute).
	Extractable bool     `json:"extractable"`
	Names       []string `json:"names"`
	Groups      []string `json:"groups"`
	// Custom holds text-valued custom attributes ("x-..." names).
	Custom map[string]string `json:"custom"`
	Owner  string            `json:"owner"` // principal that made the object
	// WrappingKeyID is the KMS key whose ciphertext blob Wrapped holds the
	// material.
	WrappingKeyID     string    `json:"wrapping_key_id"`
	Wrapped           []byte    `json:"wrapped"`
	CreatedAt         time.Time `json:"created_at"`
	ActivationDate    time.Time `json:"activation_date"`
	DeactivationDate  time.Time `json:"deactivation_date"`
	CompromiseDate    time.Time `json:"compromise_date"`
	LastChange        time.Time `json:"last_change"`
	RevocationReason  uint32    `json:"revocation_reason"`
	RevocationMessage string    `json:"revocation_message"`
	// KeySpec is set on the two halves of a key pair (Create Key Pair):
	// the key spec (RSA_2048, ECC_NIST_P256...) of the pair. On a Private
	// Key, Wrapped then holds the private key as the HSM generated it,
	// wrapped under the domain key (not a blob under WrappingKeyID, which
	// here names only the key whose policy governs the object).
	KeySpec string `json:"key_spec,omitempty"`
	// PublicKey is the pair's public key, DER SubjectPublicKeyInfo, on
	// both halves; a Public Key object has no Wrapped material.
	PublicKey []byte `json:"public_key,omitempty"`
	// LinkedID is the other half of a key pair (KMIP's Public Key Link
	// on the private key, Private Key Link on the public key).
	LinkedID string `json:"linked_id,omitempty"`
}

// Clone returns a deep copy of o.
func (o KMIPObject) Clone() KMIPObject {
	o.Names = slices.Clone(o.Names)
	o.Groups = slices.Clone(o.Groups)
	o.Custom = maps.Clone(o.Custom)
	o.Wrapped = bytes.Clone(o.Wrapped)
	o.PublicKey = bytes.Clone(o.PublicKey)
	return o
}

func (o *KMIPObject) check() error {
	if err := checkID("kmip object id", o.ID); err != nil {
		return err
	}
	if o.ObjectType == 0 || o.ObjectType > 10 {
		return invalidCommand("kmip object %s: object type %d", o.ID, o.ObjectType)
	}
	if o.State < KMIPPreActive || o.State > KMIPCompromised {
		return invalidCommand("kmip object %s: state %d", o.ID, o.State)
	}
	if len(o.Names) > MaxKMIPNames || len(o.Groups) > MaxKMIPGroups || len(o.Custom) > MaxKMIPCustom {
		return invalidCommand("kmip object %s: more than %d names, %d groups or %d custom attributes", o.ID, MaxKMIPNames, MaxKMIPGroups, MaxKMIPCustom)
	}
	for _, s := range append(slices.Clone(o.Names), o.Groups...) {
		if s == "" {
			return invalidCommand("kmip object %s: empty name or group", o.ID)
		}
		if err := checkText("kmip name or group", s, MaxKMIPTextLen); err != nil {
			return err
		}
	}
	for k, v := range o.Custom {
		if err := checkText("kmip custom attribute name", k, MaxKMIPTextLen); err != nil {
			return err
		}
		if err := checkText("kmip custom attribute value", v, MaxKMIPCustomValue); err != nil {
			return err
		}
	}
	if err := checkText("kmip owner", o.Owner, maxIDLen); err != nil {
		return err
	}
	if err := checkText("kmip revocation message", o.RevocationMessage, MaxKMIPTextLen); err != nil {
		return err
	}
	if err := checkID("kmip wrapping key id", o.WrappingKeyID); err != nil {
		return err
	}
	if err := o.checkPairFields(); err != nil {
		return err
	}
	if (len(o.Wrapped) == 0 && o.ObjectType != KMIPPublicKey) || len(o.Wrapped) > maxBlobLen {
		return invalidCommand("kmip object %s: wrapped material of %d bytes", o.ID, len(o.Wrapped))
	}
	for _, t := range []time.Time{o.CreatedAt, o.ActivationDate, o.DeactivationDate, o.CompromiseDate, o.LastChange} {
		if err := checkTime("kmip date", t, false); err != nil {
			return err
		}
	}
	return nil
}

// checkPairFields checks the fields only the halves of a key pair carry.
func (o *KMIPObject) checkPairFields() error {
	pair := o.ObjectType == KMIPPublicKey || o.ObjectType == KMIPPrivateKey
	if !pair {
		if o.KeySpec != "" || len(o.PublicKey) != 0 || o.LinkedID != "" {
			return invalidCommand("kmip object %s: key pair fields on object type %d", o.ID, o.ObjectType)
		}
		return nil
	}
	if err := checkText("kmip key spec", o.KeySpec, 32); err != nil || o.KeySpec == "" {
		return invalidCommand("kmip object %s: a key pair half needs a key spec", o.ID)
	}
	if len(o.PublicKey) == 0 || len(o.PublicKey) > maxBlobLen {
		return invalidCommand("kmip object %s: public key of %d bytes", o.ID, len(o.PublicKey))
	}
	if o.ObjectType == KMIPPublicKey && len(o.Wrapped) != 0 {
		return invalidCommand("kmip object %s: a public key carries no wrapped material", o.ID)
	}
	return checkID("kmip linked object id", o.LinkedID)
}

func normalizeKMIP(o *KMIPObject) {
	for _, t := range []*time.Time{&o.CreatedAt, &o.ActivationDate, &o.DeactivationDate, &o.CompromiseDate, &o.LastChange} {
		*t = utc(*t)
	}
	if len(o.Names) == 0 {
		o.Names = nil
	}
	if len(o.Groups) == 0 {
		o.Groups = nil
	}
	if len(o.Custom) == 0 {
		o.Custom = nil
	}
}

// KMIPCreateObject stores a new KMIP object.
type KMIPCreateObject struct {
	Object KMIPObject `json:"object"`
	// OwnerShare, when above 0, is the most KMIP objects the object's
	// owner may hold once it is stored: the apply refuses the object when
	// the owner holds that many already, so concurrent requests of one
	// client cannot pass it. It travels in the command, so every node
	// applies the same limit.
	OwnerShare int `json:"owner_share,omitempty"`
}

// KMIPUpdateObject replaces the mutable attributes of an object (state,
// names, groups, custom attributes, dates, revocation) if it is still in
// state FromState; its type, material and cryptographic attributes never
// change.
type KMIPUpdateObject struct {
	FromState uint32     `json:"from_state"`
	Object    KMIPObject `json:"object"`
}

// KMIPDeleteObject removes a destroyed object if it is still in state
// FromState, which must not be Active.
type KMIPDeleteObject struct {
	ID        string `json:"id"`
	FromState uint32 `json:"from_state"`
}

func (*KMIPCreateObject) Type() CommandType { return TypeKMIPCreateObject }
func (*KMIPUpdateObject) Type() CommandType { return TypeKMIPUpdateObject }
func (*KMIPDeleteObject) Type() CommandType { return TypeKMIPDeleteObject }

// KMIPCreateKeyPair stores the two halves of a key pair, linked to each
// other, in one step.
type KMIPCreateKeyPair struct {
	Private KMIPObject `json:"private"`
	Public  KMIPObject `json:"public"`
	// OwnerShare is as in KMIPCreateObject, for the two objects together.
	OwnerShare int `json:"owner_share,omitempty"`
}

func (*KMIPCreateKeyPair) Type() CommandType { return TypeKMIPCreateKeyPair }

func (c *KMIPCreateKeyPair) validate() error {
	if err := c.Private.check(); err != nil {
		return err
	}
	if err := c.Public.check(); err != nil {
		return err
	}
	if c.Private.ObjectType != KMIPPrivateKey || c.Public.ObjectType != KMIPPublicKey {
		return invalidCommand("kmip key pair: object types %d and %d", c.Private.ObjectType, c.Public.ObjectType)
	}
	if c.Private.ID == c.Public.ID || c.Private.LinkedID != c.Public.ID || c.Public.LinkedID != c.Private.ID {
		return invalidCommand("kmip key pair %s, %s: the halves must be distinct and linked to each other", c.Private.ID, c.Public.ID)
	}
	if c.Private.KeySpec != c.Public.KeySpec || !bytes.Equal(c.Private.PublicKey, c.Public.PublicKey) || c.Private.WrappingKeyID != c.Public.WrappingKeyID ||
		c.Private.Owner != c.Public.Owner {
		return invalidCommand("kmip key pair %s, %s: the halves disagree", c.Private.ID, c.Public.ID)
	}
	return checkOwnerShare(c.OwnerShare)
}

// checkOwnerShare checks a command's OwnerShare: 0 (none) to
// MaxKMIPObjects.
func checkOwnerShare(n int) error {
	if n < 0 || n > MaxKMIPObjects {
		return invalidCommand("kmip owner share %d, want 0 to %d", n, MaxKMIPObjects)
	}
	return nil
}

// kmipRoom refuses n more KMIP objects for owner past the cluster's
// MaxKMIPObjects, or past owner's share when share is above 0.
func (d *Data) kmipRoom(owner string, n, share int) error {
	if len(d.KMIP)+n > MaxKMIPObjects {
		return invalidState("the cluster holds %d KMIP objects; the limit is %d", len(d.KMIP), MaxKMIPObjects)
	}
	if share > 0 && d.kmipByOwner[owner]+n > share {
		return invalidState("this client owns %d KMIP objects; one client may own at most %d of the cluster's %d; destroy some first", d.kmipByOwner[owner], share, MaxKMIPObjects)
	}
	return nil
}

func (c *KMIPCreateKeyPair) apply(d *Data) (any, Event, error) {
	for _, id := range []string{c.Private.ID, c.Public.ID} {
		if _, ok := d.KMIP[id]; ok {
			return nil, Event{}, alreadyExists("kmip object %q", id)
		}
	}
	if err := d.kmipRoom(c.Private.Owner, 2, c.OwnerShare); err != nil {
		return nil, Event{}, err
	}
	if _, ok := d.Keys[c.Private.WrappingKeyID]; !ok {
		return nil, Event{}, notFound("key %q", c.Private.WrappingKeyID)
	}
	if d.KMIP == nil {
		d.KMIP = map[string]*KMIPObject{}
	}
	out := make([]KMIPObject, 0, 2)
	for _, src := range []KMIPObject{c.Private, c.Public} {
		o := src.Clone()
		normalizeKMIP(&o)
		d.KMIP[o.ID] = &o
		d.countKMIP(o.Owner, 1)
		out = append(out, o.Clone())
	}
	return out, Event{Type: TypeKMIPCreateKeyPair}, nil
}

func (c *KMIPCreateObject) validate() error {
	if err := c.Object.check(); err != nil {
		return err
	}
	return checkOwnerShare(c.OwnerShare)
}

func (c *KMIPUpdateObject) validate() error {
	if c.FromState < KMIPPreActive || c.FromState > KMIPCompromised {
		return invalidCommand("kmip from state %d", c.FromState)
	}
	return c.Object.check()
}

func (c *KMIPDeleteObject) validate() error {
	if c.FromState < KMIPPreActive || c.FromState > KMIPCompromised || c.FromState == KMIPActive {
		return invalidCommand("kmip object in state %d cannot be destroyed", c.FromState)
	}
	return checkID("kmip object id", c.ID)
}

// KMIPTransitionAllowed reports whether the KMIP lifecycle lets an object
// move from one state to another (KMIP 1.0 section 3.22): Pre-Active to
// Active, Deactivated or Compromised; Active to Deactivated or
// Compromised; Deactivated to Compromised. Staying put is allowed.
func KMIPTransitionAllowed(from, to uint32) bool {
	if from == to {
		return true
	}
	switch from {
	case KMIPPreActive:
		return to == KMIPActive || to == KMIPDeactivated || to == KMIPCompromised
	case KMIPActive:
		return to == KMIPDeactivated || to == KMIPCompromised
	case KMIPDeactivated:
		return to == KMIPCompromised
	}
	return false
}

func (c *KMIPCreateObject) apply(d *Data) (any, Event, error) {
	if _, ok := d.KMIP[c.Object.ID]; ok {
		return nil, Event{}, alreadyExists("kmip object %q", c.Object.ID)
	}
	if err := d.kmipRoom(c.Object.Owner, 1, c.OwnerShare); err != nil {
		return nil, Event{}, err
	}
	if _, ok := d.Keys[c.Object.WrappingKeyID]; !ok {
		return nil, Event{}, notFound("key %q", c.Object.WrappingKeyID)
	}
	o := c.Object.Clone()
	normalizeKMIP(&o)
	if d.KMIP == nil {
		d.KMIP = map[string]*KMIPObject{}
	}
	d.KMIP[o.ID] = &o
	d.countKMIP(o.Owner, 1)
	return o.Clone(), Event{Type: TypeKMIPCreateObject}, nil
}

func (c *KMIPUpdateObject) apply(d *Data) (any, Event, error) {
	cur, ok := d.KMIP[c.Object.ID]
	if !ok {
		return nil, Event{}, notFound("kmip object %q", c.Object.ID)
	}
	if cur.State != c.FromState {
		return nil, Event{}, invalidState("kmip object %q is in state %d, not %d", cur.ID, cur.State, c.FromState)
	}
	if !KMIPTransitionAllowed(cur.State, c.Object.State) {
		return nil, Event{}, invalidState("kmip object %q cannot go from state %d to %d", cur.ID, cur.State, c.Object.State)
	}
	n := c.Object.Clone()
	normalizeKMIP(&n)
	// What an update cannot change.
	n.ObjectType, n.Algorithm, n.Length, n.SecretDataType = cur.ObjectType, cur.Algorithm, cur.Length, cur.SecretDataType
	n.Owner, n.WrappingKeyID, n.Wrapped, n.CreatedAt, n.Extractable = cur.Owner, cur.WrappingKeyID, bytes.Clone(cur.Wrapped), cur.CreatedAt, cur.Extractable
	n.KeySpec, n.PublicKey, n.LinkedID = cur.KeySpec, bytes.Clone(cur.PublicKey), cur.LinkedID
	d.KMIP[n.ID] = &n
	return n.Clone(), Event{Type: TypeKMIPUpdateObject}, nil
}

func (c *KMIPDeleteObject) apply(d *Data) (any, Event, error) {
	cur, ok := d.KMIP[c.ID]
	if !ok {
		return nil, Event{}, notFound("kmip object %q", c.ID)
	}
	if cur.State != c.FromState {
		return nil, Event{}, invalidState("kmip object %q is in state %d, not %d", cur.ID, cur.State, c.FromState)
	}
	delete(d.KMIP, c.ID)
	d.countKMIP(cur.Owner, -1)
	return nil, Event{Type: TypeKMIPDeleteObject}, nil
}

// KMIPObject returns one KMIP object.
func (s *State) KMIPObject(id string) (KMIPObject, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.data.KMIP[id]
	if !ok {
		return KMIPObject{}, false
	}
	return o.Clone(), true
}

// KMIPRoom is the check the KMIP creates apply, on the current state: it
// refuses (ErrInvalidState) n more objects for owner past MaxKMIPObjects
// or past a share above 0. The KMIP core asks it before it makes anything,
// to refuse early, without HSM work, what the apply would refuse.
func (s *State) KMIPRoom(owner string, n, share int) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.kmipRoom(owner, n, share)
}

// KMIPObjectCount returns how many KMIP objects the state holds and how
// many of them owner owns, from the count the state keeps by owner.
func (s *State) KMIPObjectCount(owner string) (total, owned int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.data.KMIP), s.data.kmipByOwner[owner]
}

// ActivationDue reports whether o is Pre-Active with an Activation Date
// that is not after now: KMIP's state model makes it Active then.
func (o *KMIPObject) ActivationDue(now time.Time) bool {
	return o.State == KMIPPreActive && !o.ActivationDate.IsZero() && !o.ActivationDate.After(now)
}

// KMIPActivationsDue returns the ids of the Pre-Active objects whose
// Activation Date is set and not after now, sorted, and the earliest
// Activation Date after now among the other Pre-Active objects (zero when
// there is none).
func (s *State) KMIPActivationsDue(now time.Time) (due []string, next time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, o := range s.data.KMIP {
		switch {
		case o.State != KMIPPreActive || o.ActivationDate.IsZero():
		case o.ActivationDue(now):
			due = append(due, id)
		case next.IsZero() || o.ActivationDate.Before(next):
			next = o.ActivationDate
		}
	}
	slices.Sort(due)
	return due, next
}

// KMIPObjectIDs returns the ids of the KMIP objects match accepts, in id
// order, skipping the first offset matches and returning at most limit
// (0: no limit). It copies no object: a Locate needs only ids, and one
// request may hold many Locates. The read lock is held for the matching
// only; the page is picked in order after it is let go (firstSorted), so
// that a Locate over MaxKMIPObjects objects holds back the writers
// (replicated changes) for one pass over the map, not for a sort of every
// id.
func (s *State) KMIPObjectIDs(match func(*KMIPObject) bool, offset, limit int) []string {
	s.mu.RLock()
	ids := make([]string, 0, len(s.data.KMIP))
	for id, o := range s.data.KMIP {
		if match(o) {
			ids = append(ids, id)
		}
	}
	s.mu.RUnlock()
	if offset >= len(ids) {
		return nil
	}
	k := 0 // every match, sorted
	if limit > 0 {
		k = offset + limit
	}
	return slices.Clip(firstSorted(ids, k)[offset:])
}

// kmip hooks for Data's Clone, checkData and Digest.

func cloneKMIP(m map[string]*KMIPObject) map[string]*KMIPObject {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]*KMIPObject, len(m))
	for id, o := range m {
		oc := o.Clone()
		c[id] = &oc
	}
	return c
}

func checkKMIP(d *Data) error {
	for id, o := range d.KMIP {
		if o == nil || o.ID != id {
			return invalidCommand("kmip entry %q does not hold object %q", id, id)
		}
		if err := o.check(); err != nil {
			return err
		}
		normalizeKMIP(o)
	}
	if len(d.KMIP) == 0 {
		d.KMIP = nil
	}
	return nil
}

// digestKMIP adds the KMIP objects to a digest; an empty set adds nothing,
// so that a state without KMIP objects keeps the digest it always had.
func (e *digestEncoder) kmip(m map[string]*KMIPObject) {
	if len(m) == 0 {
		return
	}
	e.str("kmip")
	e.uint(uint64(len(m)))
	for _, id := range sortedKeys(m) {
		o := m[id]
		e.str(id)
		e.str(o.ID)
		e.uint(uint64(o.ObjectType))
		e.uint(uint64(o.State))
		e.uint(uint64(o.Algorithm))
		e.int(int64(o.Length))
		e.int(int64(o.UsageMask))
		e.uint(uint64(o.SecretDataType))
		e.bool(o.Extractable)
		e.uint(uint64(len(o.Names)))
		for _, n := range o.Names {
			e.str(n)
		}
		e.uint(uint64(len(o.Groups)))
		for _, g := range o.Groups {
			e.str(g)
		}
		e.uint(uint64(len(o.Custom)))
		for _, k := range sortedKeys(o.Custom) {
			e.str(k)
			e.str(o.Custom[k])
		}
		e.str(o.Owner)
		e.str(o.WrappingKeyID)
		e.bytes(o.Wrapped)
		e.time(o.CreatedAt)
		e.time(o.ActivationDate)
		e.time(o.DeactivationDate)
		e.time(o.CompromiseDate)
		e.time(o.LastChange)
		e.uint(uint64(o.RevocationReason))
		e.str(o.RevocationMessage)
		if o.KeySpec != "" { // key pair halves only, so that older states digest as before
			e.str(o.KeySpec)
			e.bytes(o.PublicKey)
			e.str(o.LinkedID)
		}
	}
}
