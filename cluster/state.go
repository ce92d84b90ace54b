package cluster

import (
	"bytes"
	"encoding/hex"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
)

// Key is a KMS key as the cluster replicates it. It carries no key material:
// each version holds the key wrapped under the cluster's domain key inside an
// HSM, and the public key for asymmetric specs.
type Key struct {
	ID          string            `json:"id"`
	Spec        keys.Spec         `json:"spec"`
	Usage       keys.Usage        `json:"usage"`
	State       keys.State        `json:"state"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
	Creator     string            `json:"creator"` // principal that created the key
	CreatedAt   time.Time         `json:"created_at"`
	// DeletionDate and PendingWindowDays are set while State is
	// PendingDeletion and zero otherwise.
	DeletionDate      time.Time    `json:"deletion_date"`
	PendingWindowDays int32        `json:"pending_window_days"`
	RotationEnabled   bool         `json:"rotation_enabled"`
	Versions          []KeyVersion `json:"versions"` // ascending, Number i+1 at index i
	CurrentVersion    uint32       `json:"current_version"`
	Policy            []byte       `json:"policy"` // opaque to this package
}

// KeyVersion is one generation of a key's material.
type KeyVersion struct {
	Number    uint32    `json:"number"`
	Wrapped   []byte    `json:"wrapped"`    // key material wrapped under the domain key
	PublicKey []byte    `json:"public_key"` // DER SubjectPublicKeyInfo, asymmetric specs only
	CreatedAt time.Time `json:"created_at"`
}

// Alias is a friendly name (alias/...) pointing at one key.
type Alias struct {
	Name      string    `json:"name"`
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// NodeInfo is a cluster member as it last reported itself (raft membership
// itself lives in the raft configuration; see Node.Stats).
type NodeInfo struct {
	ID        string        `json:"id"`
	RaftAddr  string        `json:"raft_addr"`
	GRPCAddr  string        `json:"grpc_addr"`
	Partition PartitionInfo `json:"partition"`
	LastSeen  time.Time     `json:"last_seen"`
}

// PartitionInfo describes the HSM partition behind a node.
type PartitionInfo struct {
	Model            string   `json:"model"`
	Manufacturer     string   `json:"manufacturer"`
	Serial           string   `json:"serial"`
	TokenLabel       string   `json:"token_label"`
	Library          string   `json:"library"`
	Firmware         string   `json:"firmware"`
	Mechanisms       []string `json:"mechanisms"`
	DomainKeyPresent bool     `json:"domain_key_present"`
	Health           string   `json:"health"`
}

// JoinToken is a one-time join token, stored only as its SHA-256 hash.
type JoinToken struct {
	Hash    []byte    `json:"hash"`
	Expires time.Time `json:"expires"`
	// NodeID, when set, is the one node id the token admits.
	NodeID string `json:"node_id,omitempty"`
	// CreatedAt is when the token was added (AddJoinToken.At); zero for a
	// token added before the state recorded it.
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// JoinTokenIDLen is the length of a join token's id: the first 8 bytes of
// its SHA-256 hash in lowercase hex.
const JoinTokenIDLen = 16

// JoinTokenID is the id of the join token whose SHA-256 hash is hash: what
// operators list and revoke it by. It is part of a one-way hash of a
// 256-bit secret, so the token cannot be derived from it; the state holds
// at most one token per id (AddJoinToken).
func JoinTokenID(hash []byte) string {
	return hex.EncodeToString(hash[:min(len(hash), JoinTokenIDLen/2)])
}

// ID is the token's id (JoinTokenID).
func (t JoinToken) ID() string { return JoinTokenID(t.Hash) }

// ValidJoinTokenID reports whether id has the form of a join token id.
func ValidJoinTokenID(id string) bool {
	if len(id) != JoinTokenIDLen {
		return false
	}
	for i := range len(id) {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Data is the whole replicated state as plain values. It is what snapshots
// and backups contain. Map keys are the objects' own identifiers: Key.ID,
// Alias.Name, NodeInfo.ID and the lower-case hex of JoinToken.Hash.
//
// Data has no lock. The live copy belongs to a State; the copies handed out
// by State.Data are the caller's own.
type Data struct {
	Keys       map[string]*Key       `json:"keys"`
	Aliases    map[string]*Alias     `json:"aliases"`
	Nodes      map[string]*NodeInfo  `json:"nodes"`
	JoinTokens map[string]*JoinToken `json:"join_tokens"`
	// DomainKeyID names the cluster's domain key (a random identifier, not
	// material). Empty until the first node sets it.
	DomainKeyID string `json:"domain_key_id"`
	// DomainKeyCheck proves which domain key a partition holds; see
	// SetDomainKeyID.
	DomainKeyCheck []byte `json:"domain_key_check"`
	// Grants by Grant.ID, and principal records by Principal.Name.
	Grants     map[string]*Grant     `json:"grants"`
	Principals map[string]*Principal `json:"principals"`
	// TDE holds the TDE key endpoint's mounts, keys and tokens.
	TDE TDEData `json:"tde"`
	// AuditHeads are the audit chains' checkpoints, by node/segment
	// (command_audit.go).
	AuditHeads map[string]*AuditHead `json:"audit_heads"`
	// DataObjects by DataObject.ID (command_pkcs11.go); omitted when empty.
	DataObjects map[string]*DataObject `json:"data_objects,omitempty"`
	// KMIP objects by id (command_kmip.go); absent while there are none.
	KMIP map[string]*KMIPObject `json:"kmip_objects,omitempty"`
	// RemovedNodes are the ids of nodes removed from the cluster and not
	// admitted again since (removed_nodes.go); absent while there are none.
	RemovedNodes map[string]bool `json:"removed_nodes,omitempty"`

	// aliasesByKey indexes Aliases by key id (the sorted names of each
	// key's aliases), so that a key's aliases are found without a scan of every
	// alias. It is derived from Aliases: not encoded, rebuilt by
	// indexAliases, kept current by putAlias and dropAlias, the only
	// writers of Aliases. Every Data the package works on comes from
	// NewData, Clone or checkData, which build it.
	aliasesByKey map[string][]string
	// kmipByOwner counts the KMIP objects of each owner, so that the KMIP
	// front can keep one client to its share without a scan of every
	// object. Derived like aliasesByKey: not encoded, rebuilt by indexKMIP
	// (NewData, Clone, checkData), kept current by the KMIP commands that
	// add and delete objects, the only writers of KMIP's membership.
	kmipByOwner map[string]int
}

// NewData returns empty state.
func NewData() *Data {
	return &Data{
		Keys:       map[string]*Key{},
		Aliases:    map[string]*Alias{},
		Nodes:      map[string]*NodeInfo{},
		JoinTokens: map[string]*JoinToken{},
		Grants:     map[string]*Grant{},
		Principals: map[string]*Principal{},
		TDE:        TDEData{}.clone(),
		AuditHeads: map[string]*AuditHead{},

		aliasesByKey: map[string][]string{},
		kmipByOwner:  map[string]int{},
	}
}

// indexKMIP rebuilds the count of KMIP objects by owner from KMIP.
func (d *Data) indexKMIP() {
	d.kmipByOwner = make(map[string]int)
	for _, o := range d.KMIP {
		d.kmipByOwner[o.Owner]++
	}
}

// countKMIP adds n (1 or -1) to owner's count of KMIP objects.
func (d *Data) countKMIP(owner string, n int) {
	if d.kmipByOwner == nil {
		d.indexKMIP()
		return
	}
	if c := d.kmipByOwner[owner] + n; c > 0 {
		d.kmipByOwner[owner] = c
	} else {
		delete(d.kmipByOwner, owner)
	}
}

// indexAliases rebuilds the alias index from Aliases.
func (d *Data) indexAliases() {
	d.aliasesByKey = make(map[string][]string, len(d.Aliases))
	for name, a := range d.Aliases {
		d.aliasesByKey[a.KeyID] = append(d.aliasesByKey[a.KeyID], name)
	}
	for _, names := range d.aliasesByKey {
		slices.Sort(names)
	}
}

// putAlias adds a or points an existing alias of the same name at a.KeyID.
func (d *Data) putAlias(a *Alias) {
	if old, ok := d.Aliases[a.Name]; ok {
		d.unindexAlias(old.KeyID, a.Name)
	}
	d.Aliases[a.Name] = a
	names := d.aliasesByKey[a.KeyID]
	i, _ := slices.BinarySearch(names, a.Name)
	d.aliasesByKey[a.KeyID] = slices.Insert(names, i, a.Name)
}

// dropAlias removes the alias with the given name, if there is one.
func (d *Data) dropAlias(name string) {
	if old, ok := d.Aliases[name]; ok {
		d.unindexAlias(old.KeyID, name)
		delete(d.Aliases, name)
	}
}

func (d *Data) unindexAlias(keyID, name string) {
	names := slices.DeleteFunc(d.aliasesByKey[keyID], func(n string) bool { return n == name })
	if len(names) == 0 {
		delete(d.aliasesByKey, keyID)
		return
	}
	d.aliasesByKey[keyID] = names
}

// aliasNamesOf returns the names of the aliases of one key; the caller
// must not modify the slice.
func (d *Data) aliasNamesOf(keyID string) []string { return d.aliasesByKey[keyID] }

// Clone returns a deep copy of d.
func (d *Data) Clone() *Data {
	c := &Data{
		Keys:        make(map[string]*Key, len(d.Keys)),
		Aliases:     make(map[string]*Alias, len(d.Aliases)),
		Nodes:       make(map[string]*NodeInfo, len(d.Nodes)),
		JoinTokens:  make(map[string]*JoinToken, len(d.JoinTokens)),
		DomainKeyID: d.DomainKeyID,
		Grants:      make(map[string]*Grant, len(d.Grants)),
		Principals:  make(map[string]*Principal, len(d.Principals)),
		TDE:         d.TDE.clone(),
		AuditHeads:  make(map[string]*AuditHead, len(d.AuditHeads)),
		KMIP:        cloneKMIP(d.KMIP),

		RemovedNodes: cloneRemoved(d.RemovedNodes),
	}
	c.indexKMIP()
	c.DomainKeyCheck = append([]byte(nil), d.DomainKeyCheck...)
	for id, k := range d.Keys {
		kc := k.Clone()
		c.Keys[id] = &kc
	}
	for name, a := range d.Aliases {
		ac := *a
		c.Aliases[name] = &ac
	}
	c.indexAliases()
	for id, n := range d.Nodes {
		nc := n.Clone()
		c.Nodes[id] = &nc
	}
	for h, t := range d.JoinTokens {
		tc := t.Clone()
		c.JoinTokens[h] = &tc
	}
	for id, g := range d.Grants {
		gc := g.Clone()
		c.Grants[id] = &gc
	}
	for name, p := range d.Principals {
		pc := *p
		c.Principals[name] = &pc
	}
	for k, h := range d.AuditHeads {
		hc := h.Clone()
		c.AuditHeads[k] = &hc
	}
	if len(d.DataObjects) > 0 {
		c.DataObjects = make(map[string]*DataObject, len(d.DataObjects))
		for id, o := range d.DataObjects {
			oc := o.Clone()
			c.DataObjects[id] = &oc
		}
	}
	return c
}

// Clone returns a deep copy of k.
func (k Key) Clone() Key {
	k.Tags = maps.Clone(k.Tags)
	k.Policy = bytes.Clone(k.Policy)
	if k.Versions != nil {
		vs := make([]KeyVersion, len(k.Versions))
		for i, v := range k.Versions {
			vs[i] = v.Clone()
		}
		k.Versions = vs
	}
	return k
}

// Version returns version n of the key.
func (k Key) Version(n uint32) (KeyVersion, bool) {
	// Versions are dense and ascending, so n lives at index n-1.
	if n == 0 || int64(n) > int64(len(k.Versions)) {
		return KeyVersion{}, false
	}
	return k.Versions[n-1], true
}

// Clone returns a deep copy of v.
func (v KeyVersion) Clone() KeyVersion {
	v.Wrapped = bytes.Clone(v.Wrapped)
	v.PublicKey = bytes.Clone(v.PublicKey)
	return v
}

// Clone returns a deep copy of n.
func (n NodeInfo) Clone() NodeInfo {
	n.Partition.Mechanisms = slices.Clone(n.Partition.Mechanisms)
	return n
}

// Clone returns a deep copy of t.
func (t JoinToken) Clone() JoinToken {
	t.Hash = bytes.Clone(t.Hash)
	return t
}

// State is the live replicated state of one node with a read API.
//
// The FSM is its only writer. Every read method is safe to call concurrently
// with Apply, Restore and other reads, and returns copies: callers may keep
// and modify what they get without affecting the state.
type State struct {
	mu   sync.RWMutex
	data *Data
	// index and term of the last log entry applied (successfully or not).
	index, term uint64
}

// NewState returns an empty state.
func NewState() *State { return &State{data: NewData()} }

// Key returns the key with the given id.
func (s *State) Key(id string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.data.Keys[id]
	if !ok {
		return Key{}, false
	}
	return k.Clone(), true
}

// ResolveAlias returns the id of the key an alias points to.
func (s *State) ResolveAlias(name string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.data.Aliases[name]
	if !ok {
		return "", false
	}
	return a.KeyID, true
}

// Alias returns the alias with the given name.
func (s *State) Alias(name string) (Alias, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.data.Aliases[name]
	if !ok {
		return Alias{}, false
	}
	return *a, true
}

// Keys returns every key, sorted by ID.
func (s *State) Keys() []Key {
	ks, _ := s.KeysPage("", 0)
	return ks
}

// KeysPage returns up to limit keys with IDs after the given one, sorted by
// ID (limit <= 0: no limit). next is the cursor for the following page, ""
// when there is none. A key deleted between pages does not disturb the walk.
//
// The read lock is taken twice, for a pass over the map and for copying
// the page, and let go for picking the page's ids in order between
// (firstSorted): with 100,000 keys a sort of every id took 26 ms, which
// replicated changes (they wait for the lock) waited for on every page. A
// key deleted between the two is left out of the page; the cursor stays
// the page's last id.
func (s *State) KeysPage(after string, limit int) (page []Key, next string) {
	s.mu.RLock()
	ids := make([]string, 0, len(s.data.Keys))
	for id := range s.data.Keys {
		if id > after {
			ids = append(ids, id)
		}
	}
	s.mu.RUnlock()
	more := limit > 0 && len(ids) > limit
	ids = firstSorted(ids, limit)
	if more {
		next = ids[len(ids)-1]
	}
	page = make([]Key, 0, len(ids))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, id := range ids {
		if k, ok := s.data.Keys[id]; ok {
			page = append(page, k.Clone())
		}
	}
	return page, next
}

// Aliases returns the aliases of one key, or all aliases when keyID is "",
// sorted by name.
func (s *State) Aliases(keyID string) []Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	as := []Alias{}
	if keyID != "" {
		for _, name := range s.data.aliasNamesOf(keyID) {
			as = append(as, *s.data.Aliases[name])
		}
	} else {
		for _, a := range s.data.Aliases {
			as = append(as, *a)
		}
	}
	slices.SortFunc(as, func(a, b Alias) int { return strings.Compare(a.Name, b.Name) })
	return as
}

// Node returns the member record with the given id.
func (s *State) Node(id string) (NodeInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.data.Nodes[id]
	if !ok {
		return NodeInfo{}, false
	}
	return n.Clone(), true
}

// Nodes returns every member, sorted by ID.
func (s *State) Nodes() []NodeInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ns := make([]NodeInfo, 0, len(s.data.Nodes))
	for _, n := range s.data.Nodes {
		ns = append(ns, n.Clone())
	}
	slices.SortFunc(ns, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return ns
}

// JoinToken returns the join token with the given SHA-256 hash, expired or
// not. Whether it can be used is decided when ConsumeJoinToken is applied.
func (s *State) JoinToken(hash []byte) (JoinToken, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.data.JoinTokens[hex.EncodeToString(hash)]
	if !ok {
		return JoinToken{}, false
	}
	return t.Clone(), true
}

// CheckJoinToken is ConsumeJoinToken's check on the current state, which
// uses nothing up: it fails (ErrNotFound, ErrInvalidState) unless the node
// nodeID may use the join token whose hash is hash at time at.
func (s *State) CheckJoinToken(hash []byte, nodeID string, at time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, err := s.data.usableJoinToken(hash, nodeID, at)
	return err
}

// JoinTokens returns every join token the state holds, expired ones
// included (they are dropped only when a later token is added), ordered by
// expiry, then id.
func (s *State) JoinTokens() []JoinToken {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts := make([]JoinToken, 0, len(s.data.JoinTokens))
	for _, t := range s.data.JoinTokens {
		ts = append(ts, t.Clone())
	}
	slices.SortFunc(ts, func(a, b JoinToken) int {
		if c := a.Expires.Compare(b.Expires); c != 0 {
			return c
		}
		return strings.Compare(a.ID(), b.ID())
	})
	return ts
}

// DomainKeyID returns the id of the cluster's domain key, "" if unset.
func (s *State) DomainKeyID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.DomainKeyID
}

// DomainKeyCheck returns the cluster's domain key check blob, nil if unset.
func (s *State) DomainKeyCheck() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]byte(nil), s.data.DomainKeyCheck...)
}

// DueForDeletion returns the IDs of keys pending deletion whose deletion
// date is not after now, sorted.
func (s *State) DueForDeletion(now time.Time) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	for id, k := range s.data.Keys {
		if k.State == keys.StatePendingDeletion && !k.DeletionDate.After(now) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Data returns a deep copy of the whole state.
func (s *State) Data() *Data {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.Clone()
}

// LastApplied returns the index and term of the last log entry applied to
// this state (0, 0 for a fresh state). Entries that raft does not hand to the
// FSM, such as configuration changes, do not count. After a Restore it is
// the position recorded in the snapshot until the next entry is applied.
func (s *State) LastApplied() (index, term uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index, s.term
}

// Digest returns a SHA-256 hash of a canonical encoding of the whole state.
// Two states have the same digest exactly when they hold the same data, so
// it proves that nodes agree. The applied index is not included.
func (s *State) Digest() [32]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.Digest()
}
