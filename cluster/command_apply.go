package cluster

import (
	"bytes"
	"encoding/hex"
	"slices"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
)

// The apply methods below run under the state's write lock. Each one checks
// every precondition before it changes anything, so a command that fails
// leaves the state exactly as it was. Stored values are normalised (times in
// UTC, empty collections nil) so that snapshots and digests do not depend on
// how a proposer happened to spell them.

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

func normalizeKey(k *Key) {
	k.CreatedAt = utc(k.CreatedAt)
	k.DeletionDate = utc(k.DeletionDate)
	if len(k.Tags) == 0 {
		k.Tags = nil
	}
	if len(k.Policy) == 0 {
		k.Policy = nil
	}
	for i := range k.Versions {
		normalizeVersion(&k.Versions[i])
	}
}

func normalizeVersion(v *KeyVersion) {
	v.CreatedAt = utc(v.CreatedAt)
	if len(v.PublicKey) == 0 {
		v.PublicKey = nil
	}
	if len(v.Wrapped) == 0 {
		v.Wrapped = nil
	}
}

func normalizeNode(n *NodeInfo) {
	n.LastSeen = utc(n.LastSeen)
	if len(n.Partition.Mechanisms) == 0 {
		n.Partition.Mechanisms = nil
	}
}

func lookupKey(d *Data, id string) (*Key, error) {
	k, ok := d.Keys[id]
	if !ok {
		return nil, notFound("key %q", id)
	}
	return k, nil
}

// mutableKey returns a key that management operations may change: AWS KMS
// refuses them (KMSInvalidStateException) while a key is pending deletion.
func mutableKey(d *Data, id string) (*Key, error) {
	k, err := lookupKey(d, id)
	if err != nil {
		return nil, err
	}
	if k.State == keys.StatePendingDeletion {
		return nil, invalidState("key %q is pending deletion", id)
	}
	return k, nil
}

func keyEvent(t CommandType, k *Key) Event { return Event{Type: t, KeyID: k.ID} }

func (c *CreateKey) apply(d *Data) (any, Event, error) {
	if _, ok := d.Keys[c.Key.ID]; ok {
		return nil, Event{}, alreadyExists("key %q", c.Key.ID)
	}
	if c.Alias != "" {
		if _, ok := d.Aliases[c.Alias]; ok {
			return nil, Event{}, alreadyExists("alias %q", c.Alias)
		}
	}
	k := c.Key.Clone()
	normalizeKey(&k)
	d.Keys[k.ID] = &k
	if c.Alias != "" {
		d.putAlias(&Alias{Name: c.Alias, KeyID: k.ID, CreatedAt: k.CreatedAt, UpdatedAt: k.CreatedAt})
	}
	return k.Clone(), Event{Type: TypeCreateKey, KeyID: k.ID, Version: 1}, nil
}

func (c *UpdateDescription) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	k.Description = c.Description
	return k.Clone(), keyEvent(TypeUpdateDescription, k), nil
}

func (c *SetKeyState) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	k.State = c.State
	return k.Clone(), keyEvent(TypeSetKeyState, k), nil
}

func (c *ScheduleDeletion) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	k.State = keys.StatePendingDeletion
	k.DeletionDate = utc(c.DeletionDate)
	k.PendingWindowDays = c.PendingWindowDays
	return k.Clone(), keyEvent(TypeScheduleDeletion, k), nil
}

func (c *CancelDeletion) apply(d *Data) (any, Event, error) {
	k, err := lookupKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	if k.State != keys.StatePendingDeletion {
		return nil, Event{}, invalidState("key %q is not pending deletion", c.KeyID)
	}
	k.State = keys.StateDisabled
	k.DeletionDate = time.Time{}
	k.PendingWindowDays = 0
	return k.Clone(), keyEvent(TypeCancelDeletion, k), nil
}

func (c *DeleteKey) apply(d *Data) (any, Event, error) {
	k, err := lookupKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	if k.State != keys.StatePendingDeletion {
		return nil, Event{}, invalidState("key %q is not pending deletion", c.KeyID)
	}
	if k.DeletionDate.After(c.At) {
		return nil, Event{}, invalidState("key %q is not due for deletion until %s", c.KeyID, k.DeletionDate.Format(time.RFC3339))
	}
	delete(d.Keys, c.KeyID)
	for _, name := range slices.Clone(d.aliasNamesOf(c.KeyID)) {
		d.dropAlias(name)
	}
	deleteGrantsOf(d, c.KeyID)
	return nil, Event{Type: TypeDeleteKey, KeyID: c.KeyID}, nil
}

func (c *AddVersion) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	if !rotatable(k.Spec, k.Usage) {
		return nil, Event{}, invalidCommand("%s keys do not rotate", k.Spec)
	}
	if k.State != keys.StateEnabled {
		return nil, Event{}, invalidState("key %q is %s; only enabled keys rotate", c.KeyID, k.State)
	}
	n := c.Version.Number
	if n <= k.CurrentVersion {
		return nil, Event{}, alreadyExists("key %q version %d", c.KeyID, n)
	}
	if n != k.CurrentVersion+1 {
		return nil, Event{}, invalidCommand("key %q: next version is %d, not %d", c.KeyID, k.CurrentVersion+1, n)
	}
	if err := checkVersion(k.Spec, c.Version); err != nil {
		return nil, Event{}, err
	}
	v := c.Version.Clone()
	normalizeVersion(&v)
	k.Versions = append(k.Versions, v)
	k.CurrentVersion = n
	return k.Clone(), Event{Type: TypeAddVersion, KeyID: k.ID, Version: n}, nil
}

func (c *SetRotation) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	if c.Enabled {
		if !rotatable(k.Spec, k.Usage) {
			return nil, Event{}, invalidCommand("%s keys do not rotate", k.Spec)
		}
		if k.State != keys.StateEnabled {
			return nil, Event{}, invalidState("key %q is %s; rotation can be enabled only on enabled keys", c.KeyID, k.State)
		}
	}
	k.RotationEnabled = c.Enabled
	return k.Clone(), keyEvent(TypeSetRotation, k), nil
}

func (c *TagKey) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	n := len(k.Tags)
	for tk := range c.Tags {
		if _, ok := k.Tags[tk]; !ok {
			n++
		}
	}
	if n > maxTags {
		return nil, Event{}, invalidCommand("key %q would have more than %d tags", c.KeyID, maxTags)
	}
	if k.Tags == nil {
		k.Tags = make(map[string]string, len(c.Tags))
	}
	for tk, tv := range c.Tags {
		k.Tags[tk] = tv
	}
	return k.Clone(), keyEvent(TypeTagKey, k), nil
}

func (c *UntagKey) apply(d *Data) (any, Event, error) {
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	for _, tk := range c.TagKeys {
		delete(k.Tags, tk)
	}
	if len(k.Tags) == 0 {
		k.Tags = nil
	}
	return k.Clone(), keyEvent(TypeUntagKey, k), nil
}

func (c *CreateAlias) apply(d *Data) (any, Event, error) {
	if _, ok := d.Aliases[c.Name]; ok {
		return nil, Event{}, alreadyExists("alias %q", c.Name)
	}
	if _, err := mutableKey(d, c.KeyID); err != nil {
		return nil, Event{}, err
	}
	at := utc(c.At)
	a := &Alias{Name: c.Name, KeyID: c.KeyID, CreatedAt: at, UpdatedAt: at}
	d.putAlias(a)
	return *a, Event{Type: TypeCreateAlias, KeyID: c.KeyID}, nil
}

func (c *UpdateAlias) apply(d *Data) (any, Event, error) {
	a, ok := d.Aliases[c.Name]
	if !ok {
		return nil, Event{}, notFound("alias %q", c.Name)
	}
	k, err := mutableKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	if old, ok := d.Keys[a.KeyID]; ok {
		if old.Spec.Family() != k.Spec.Family() || old.Usage != k.Usage {
			return nil, Event{}, invalidCommand("alias %q points at a %s %s key; %q is a %s %s key",
				c.Name, old.Spec.Family(), old.Usage, c.KeyID, k.Spec.Family(), k.Usage)
		}
	}
	moved := *a
	moved.KeyID = c.KeyID
	moved.UpdatedAt = utc(c.At)
	d.putAlias(&moved)
	return moved, Event{Type: TypeUpdateAlias, KeyID: c.KeyID}, nil
}

func (c *DeleteAlias) apply(d *Data) (any, Event, error) {
	a, ok := d.Aliases[c.Name]
	if !ok {
		return nil, Event{}, notFound("alias %q", c.Name)
	}
	d.dropAlias(c.Name)
	return nil, Event{Type: TypeDeleteAlias, KeyID: a.KeyID}, nil
}

// PutPolicy works in every key state, pending deletion included, so that an
// administrator locked out by a policy can still regain access and cancel
// the deletion.
func (c *PutPolicy) apply(d *Data) (any, Event, error) {
	k, err := lookupKey(d, c.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	k.Policy = bytes.Clone(c.Policy)
	if len(k.Policy) == 0 {
		k.Policy = nil
	}
	return k.Clone(), keyEvent(TypePutPolicy, k), nil
}

func (c *UpsertNode) apply(d *Data) (any, Event, error) {
	if d.RemovedNodes[c.Node.ID] {
		if !c.Admit {
			return nil, Event{}, invalidState("node %s was removed from the cluster; it comes back only by joining again", c.Node.ID)
		}
		delete(d.RemovedNodes, c.Node.ID)
		if len(d.RemovedNodes) == 0 {
			d.RemovedNodes = nil
		}
	}
	n := c.Node.Clone()
	normalizeNode(&n)
	d.Nodes[n.ID] = &n
	return n.Clone(), Event{Type: TypeUpsertNode}, nil
}

// apply forgets the record, if there is one, and marks the id removed
// either way: a member that never wrote its record is removed too.
func (c *RemoveNode) apply(d *Data) (any, Event, error) {
	delete(d.Nodes, c.ID)
	d.markRemoved(c.ID)
	return nil, Event{Type: TypeRemoveNode}, nil
}

func (c *AddJoinToken) apply(d *Data) (any, Event, error) {
	h := hex.EncodeToString(c.Hash)
	if _, ok := d.JoinTokens[h]; ok {
		return nil, Event{}, alreadyExists("join token")
	}
	// A token is revoked by its id, so no two live tokens share one (a
	// chance of one in 2^64 per pair, refused rather than left ambiguous).
	id := JoinTokenID(c.Hash)
	for _, t := range d.JoinTokens {
		if c.At.Before(t.Expires) && t.ID() == id {
			return nil, Event{}, alreadyExists("join token id %s", id)
		}
	}
	for th, t := range d.JoinTokens {
		if !c.At.Before(t.Expires) {
			delete(d.JoinTokens, th)
		}
	}
	d.JoinTokens[h] = &JoinToken{Hash: slices.Clone(c.Hash), Expires: utc(c.Expires), NodeID: c.NodeID, CreatedAt: utc(c.At)}
	return nil, Event{Type: TypeAddJoinToken}, nil
}

// apply finds the token by its id: ids are unique among live tokens
// (AddJoinToken), and an expired one that shares it is not revoked.
func (c *RevokeJoinToken) apply(d *Data) (any, Event, error) {
	for h, t := range d.JoinTokens {
		if t.ID() == c.ID && c.At.Before(t.Expires) {
			delete(d.JoinTokens, h)
			return nil, Event{Type: TypeRevokeJoinToken}, nil
		}
	}
	return nil, Event{}, notFound("outstanding join token %s", c.ID)
}

func (c *ConsumeJoinToken) apply(d *Data) (any, Event, error) {
	h, err := d.usableJoinToken(c.Hash, c.NodeID, c.At)
	if err != nil {
		return nil, Event{}, err
	}
	delete(d.JoinTokens, h)
	return nil, Event{Type: TypeConsumeJoinToken}, nil
}

// usableJoinToken returns the key of the join token whose hash is hash if
// the node nodeID may use it at time at: it is held, unexpired, and made
// for that node or any.
func (d *Data) usableJoinToken(hash []byte, nodeID string, at time.Time) (string, error) {
	h := hex.EncodeToString(hash)
	t, ok := d.JoinTokens[h]
	if !ok {
		return "", notFound("join token")
	}
	if !at.Before(t.Expires) {
		return "", invalidState("join token expired at %s", t.Expires.Format(time.RFC3339))
	}
	if t.NodeID != "" && t.NodeID != nodeID {
		return "", invalidState("join token made for node %q", t.NodeID)
	}
	return h, nil
}

func (c *SetDomainKeyID) apply(d *Data) (any, Event, error) {
	if d.DomainKeyID != "" {
		return nil, Event{}, alreadyExists("the cluster's domain key id")
	}
	d.DomainKeyID = c.ID
	d.DomainKeyCheck = append([]byte(nil), c.Check...)
	return nil, Event{Type: TypeSetDomainKeyID}, nil
}
