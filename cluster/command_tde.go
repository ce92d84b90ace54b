package cluster

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TDE keys are the keys a database's transparent data encryption reads
// through the Vault KV version 2 endpoint (broker/vault). A TDE key lives in
// a mount ("tde" by default), which is bound to one KMS key: every version
// of every TDE key in the mount is a data key made in an HSM and stored only
// as a ciphertext blob of that KMS key (the KMS key's own format, as
// GenerateDataKey returns it). The plaintext never enters the replicated
// state. Tokens for the endpoint are stored as their SHA-256 hashes and map
// to principals, as AWS access keys do.

// Command types of the TDE key endpoint (range 30-39).
const (
	TypeCreateTDEKey     CommandType = 30
	TypeAddTDEVersion    CommandType = 31
	TypeRetireTDEVersion CommandType = 32
	TypeIssueTDEToken    CommandType = 33
	TypeRevokeTDEToken   CommandType = 34
)

// Limits of the TDE state.
const (
	MaxTDEMountLen    = 64
	MaxTDENameLen     = 128
	MaxTDEVersions    = 1000
	maxTDEKeys        = 10000
	maxTDETokens      = 10000
	maxTDEWrappedLen  = 4096
	maxTDEAccessorLen = 64
)

// TDEData is the TDE part of the replicated state. Map keys: TDEMount.Name,
// TDEKey.Mount+"/"+TDEKey.Name, and the lower-case hex of TDEToken.Hash.
type TDEData struct {
	Mounts map[string]*TDEMount `json:"mounts"`
	Keys   map[string]*TDEKey   `json:"keys"`
	Tokens map[string]*TDEToken `json:"tokens"`
}

// TDEMount binds a mount to the KMS key that wraps its TDE keys. It is
// made with the mount's first key and never changes.
type TDEMount struct {
	Name      string    `json:"name"`
	KMSKeyID  string    `json:"kms_key_id"`
	CreatedAt time.Time `json:"created_at"`
}

// TDEKey is one named TDE key with its versions.
type TDEKey struct {
	Mount     string       `json:"mount"`
	Name      string       `json:"name"`
	Bytes     int          `json:"bytes"` // 16, 24 or 32
	Creator   string       `json:"creator"`
	CreatedAt time.Time    `json:"created_at"`
	Versions  []TDEVersion `json:"versions"` // Number i+1 at index i
}

// TDEVersion is one version of a TDE key's material, wrapped.
type TDEVersion struct {
	Number uint32 `json:"number"`
	// Wrapped is a ciphertext blob of the mount's KMS key, made with the
	// encryption context TDEContext(mount, name, number).
	Wrapped   []byte    `json:"wrapped"`
	CreatedAt time.Time `json:"created_at"`
	// RetiredAt is set once an admin retires the version: it is no longer
	// served.
	RetiredAt time.Time `json:"retired_at"`
}

// TDEToken is a token of the endpoint, stored only as its SHA-256 hash.
// Accessor names it in listings and revocations without revealing it.
type TDEToken struct {
	Accessor  string    `json:"accessor"`
	Hash      []byte    `json:"hash"`
	Principal string    `json:"principal"`
	Creator   string    `json:"creator"`
	CreatedAt time.Time `json:"created_at"`
}

// TDEContext is the encryption context a TDE version's blob is bound to,
// so that a blob moved to another name or version does not open.
func TDEContext(mount, name string, version uint32) map[string]string {
	return map[string]string{"hsmbroker:tde-mount": mount, "hsmbroker:tde-key": name,
		"hsmbroker:tde-version": fmt.Sprint(version)}
}

// Current is the key's latest version number.
func (k TDEKey) Current() uint32 { return uint32(len(k.Versions)) }

// Clone returns a deep copy of k.
func (k TDEKey) Clone() TDEKey {
	vs := make([]TDEVersion, len(k.Versions))
	for i, v := range k.Versions {
		v.Wrapped = bytes.Clone(v.Wrapped)
		vs[i] = v
	}
	k.Versions = vs
	return k
}

// Clone returns a deep copy of t.
func (t TDEToken) Clone() TDEToken {
	t.Hash = bytes.Clone(t.Hash)
	return t
}

func (d TDEData) clone() TDEData {
	c := TDEData{Mounts: make(map[string]*TDEMount, len(d.Mounts)), Keys: make(map[string]*TDEKey, len(d.Keys)),
		Tokens: make(map[string]*TDEToken, len(d.Tokens))}
	for n, m := range d.Mounts {
		mc := *m
		c.Mounts[n] = &mc
	}
	for n, k := range d.Keys {
		kc := k.Clone()
		c.Keys[n] = &kc
	}
	for h, t := range d.Tokens {
		tc := t.Clone()
		c.Tokens[h] = &tc
	}
	return c
}

func tdeKeyID(mount, name string) string { return mount + "/" + name }

// CreateTDEKey makes a TDE key with version 1, and the mount, bound to
// KMSKeyID, if it is the mount's first key.
type CreateTDEKey struct {
	Key      TDEKey `json:"key"`
	KMSKeyID string `json:"kms_key_id"`
}

// AddTDEVersion adds the next version of a TDE key.
type AddTDEVersion struct {
	Mount   string     `json:"mount"`
	Name    string     `json:"name"`
	Version TDEVersion `json:"version"`
}

// RetireTDEVersion stops serving one version. The latest version cannot be
// retired: the database encrypts with it.
type RetireTDEVersion struct {
	Mount   string    `json:"mount"`
	Name    string    `json:"name"`
	Version uint32    `json:"version"`
	At      time.Time `json:"at"`
}

// IssueTDEToken records a token's hash and principal.
type IssueTDEToken struct {
	Token TDEToken `json:"token"`
}

// RevokeTDEToken forgets the token with the accessor.
type RevokeTDEToken struct {
	Accessor string `json:"accessor"`
}

func (*CreateTDEKey) Type() CommandType     { return TypeCreateTDEKey }
func (*AddTDEVersion) Type() CommandType    { return TypeAddTDEVersion }
func (*RetireTDEVersion) Type() CommandType { return TypeRetireTDEVersion }
func (*IssueTDEToken) Type() CommandType    { return TypeIssueTDEToken }
func (*RevokeTDEToken) Type() CommandType   { return TypeRevokeTDEToken }

// CheckTDEMount reports whether m is a valid mount name: 1 to 64 of a-z,
// 0-9, '_' and '-', starting with a letter or digit.
func CheckTDEMount(m string) error {
	if m == "" || len(m) > MaxTDEMountLen {
		return invalidCommand("mount must be 1 to %d characters, not %d", MaxTDEMountLen, len(m))
	}
	for i, r := range m {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
		case (r == '_' || r == '-') && i > 0:
		default:
			return invalidCommand("mount %q: only a-z, 0-9, _ and - (not first) are allowed", m)
		}
	}
	return nil
}

// CheckTDEName reports whether n is a valid TDE key name: 1 to 128 of
// letters, digits, '.', '_' and '-', starting with a letter or digit.
// MariaDB names its keys by decimal ids (1, 2, ...).
func CheckTDEName(n string) error {
	if n == "" || len(n) > MaxTDENameLen {
		return invalidCommand("key name must be 1 to %d characters, not %d", MaxTDENameLen, len(n))
	}
	for i, r := range n {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case (r == '_' || r == '-' || r == '.') && i > 0:
		default:
			return invalidCommand("key name %q: only letters, digits, ., _ and - (not first) are allowed", n)
		}
	}
	return nil
}

func checkTDEVersion(v TDEVersion, number uint32) error {
	if v.Number != number {
		return invalidCommand("version number must be %d, not %d", number, v.Number)
	}
	if len(v.Wrapped) == 0 || len(v.Wrapped) > maxTDEWrappedLen {
		return invalidCommand("version %d wrapped key must be 1 to %d bytes, not %d", v.Number, maxTDEWrappedLen, len(v.Wrapped))
	}
	if !v.RetiredAt.IsZero() {
		return invalidCommand("a new version cannot be retired")
	}
	return checkTime("version created_at", v.CreatedAt, true)
}

func (c *CreateTDEKey) validate() error {
	k := &c.Key
	if err := CheckTDEMount(k.Mount); err != nil {
		return err
	}
	if err := CheckTDEName(k.Name); err != nil {
		return err
	}
	if k.Bytes != 16 && k.Bytes != 24 && k.Bytes != 32 {
		return invalidCommand("key size must be 16, 24 or 32 bytes, not %d", k.Bytes)
	}
	if err := checkID("kms key id", c.KMSKeyID); err != nil {
		return err
	}
	if err := checkText("creator", k.Creator, maxIDLen); err != nil {
		return err
	}
	if err := checkTime("created_at", k.CreatedAt, true); err != nil {
		return err
	}
	if len(k.Versions) != 1 {
		return invalidCommand("a new TDE key must have exactly version 1")
	}
	return checkTDEVersion(k.Versions[0], 1)
}

func (c *AddTDEVersion) validate() error {
	if err := CheckTDEMount(c.Mount); err != nil {
		return err
	}
	if err := CheckTDEName(c.Name); err != nil {
		return err
	}
	if c.Version.Number < 2 || c.Version.Number > MaxTDEVersions {
		return invalidCommand("added version must be 2 to %d, not %d", MaxTDEVersions, c.Version.Number)
	}
	return checkTDEVersion(c.Version, c.Version.Number)
}

func (c *RetireTDEVersion) validate() error {
	if err := CheckTDEMount(c.Mount); err != nil {
		return err
	}
	if err := CheckTDEName(c.Name); err != nil {
		return err
	}
	if c.Version == 0 {
		return invalidCommand("version is 0")
	}
	return checkTime("at", c.At, true)
}

func checkAccessor(a string) error {
	if a == "" || len(a) > maxTDEAccessorLen {
		return invalidCommand("token accessor must be 1 to %d characters", maxTDEAccessorLen)
	}
	for _, r := range a {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9') {
			// The value is not echoed: a token given by mistake is a secret.
			return invalidCommand("token accessor: only a-z and 0-9 are allowed")
		}
	}
	return nil
}

func (c *IssueTDEToken) validate() error {
	t := &c.Token
	if err := checkAccessor(t.Accessor); err != nil {
		return err
	}
	if len(t.Hash) != 32 {
		return invalidCommand("token hash must be 32 bytes (SHA-256), not %d", len(t.Hash))
	}
	if err := checkID("principal", t.Principal); err != nil {
		return err
	}
	if err := checkText("creator", t.Creator, maxIDLen); err != nil {
		return err
	}
	return checkTime("created_at", t.CreatedAt, true)
}

func (c *RevokeTDEToken) validate() error { return checkAccessor(c.Accessor) }

func (c *CreateTDEKey) apply(d *Data) (any, Event, error) {
	t := &d.TDE
	id := tdeKeyID(c.Key.Mount, c.Key.Name)
	if _, ok := t.Keys[id]; ok {
		return nil, Event{}, alreadyExists("TDE key %q in mount %q", c.Key.Name, c.Key.Mount)
	}
	if len(t.Keys) >= maxTDEKeys {
		return nil, Event{}, invalidState("the cluster already holds %d TDE keys, the most it may", len(t.Keys))
	}
	m, ok := t.Mounts[c.Key.Mount]
	if ok && m.KMSKeyID != c.KMSKeyID {
		return nil, Event{}, invalidState("mount %q is bound to KMS key %s, not %s", c.Key.Mount, m.KMSKeyID, c.KMSKeyID)
	}
	if !ok {
		if _, err := lookupKey(d, c.KMSKeyID); err != nil {
			return nil, Event{}, err
		}
		t.Mounts[c.Key.Mount] = &TDEMount{Name: c.Key.Mount, KMSKeyID: c.KMSKeyID, CreatedAt: utc(c.Key.CreatedAt)}
	}
	k := c.Key.Clone()
	normalizeTDEKey(&k)
	t.Keys[id] = &k
	return k.Clone(), Event{Type: TypeCreateTDEKey, KeyID: t.Mounts[k.Mount].KMSKeyID, Version: 1}, nil
}

func normalizeTDEKey(k *TDEKey) {
	k.CreatedAt = utc(k.CreatedAt)
	for i := range k.Versions {
		k.Versions[i].CreatedAt = utc(k.Versions[i].CreatedAt)
		k.Versions[i].RetiredAt = utc(k.Versions[i].RetiredAt)
	}
}

func lookupTDEKey(d *Data, mount, name string) (*TDEKey, error) {
	k, ok := d.TDE.Keys[tdeKeyID(mount, name)]
	if !ok {
		return nil, notFound("TDE key %q in mount %q", name, mount)
	}
	return k, nil
}

func (c *AddTDEVersion) apply(d *Data) (any, Event, error) {
	k, err := lookupTDEKey(d, c.Mount, c.Name)
	if err != nil {
		return nil, Event{}, err
	}
	n := c.Version.Number
	if n <= k.Current() {
		return nil, Event{}, alreadyExists("TDE key %q version %d", c.Name, n)
	}
	if n != k.Current()+1 {
		return nil, Event{}, invalidCommand("TDE key %q: next version is %d, not %d", c.Name, k.Current()+1, n)
	}
	v := c.Version
	v.Wrapped = bytes.Clone(v.Wrapped)
	v.CreatedAt = utc(v.CreatedAt)
	k.Versions = append(k.Versions, v)
	return k.Clone(), Event{Type: TypeAddTDEVersion, KeyID: d.TDE.Mounts[k.Mount].KMSKeyID, Version: n}, nil
}

func (c *RetireTDEVersion) apply(d *Data) (any, Event, error) {
	k, err := lookupTDEKey(d, c.Mount, c.Name)
	if err != nil {
		return nil, Event{}, err
	}
	if c.Version > k.Current() {
		return nil, Event{}, notFound("TDE key %q version %d", c.Name, c.Version)
	}
	if c.Version == k.Current() {
		return nil, Event{}, invalidState("version %d is TDE key %q's latest; rotate before retiring it", c.Version, c.Name)
	}
	v := &k.Versions[c.Version-1]
	if !v.RetiredAt.IsZero() {
		return nil, Event{}, invalidState("TDE key %q version %d is already retired", c.Name, c.Version)
	}
	v.RetiredAt = utc(c.At)
	return k.Clone(), Event{Type: TypeRetireTDEVersion}, nil
}

func (c *IssueTDEToken) apply(d *Data) (any, Event, error) {
	t := &d.TDE
	h := hex.EncodeToString(c.Token.Hash)
	if _, ok := t.Tokens[h]; ok {
		return nil, Event{}, alreadyExists("TDE token")
	}
	for _, o := range t.Tokens {
		if o.Accessor == c.Token.Accessor {
			return nil, Event{}, alreadyExists("TDE token accessor %q", c.Token.Accessor)
		}
	}
	if len(t.Tokens) >= maxTDETokens {
		return nil, Event{}, invalidState("the cluster already holds %d TDE tokens, the most it may", len(t.Tokens))
	}
	tok := c.Token.Clone()
	tok.CreatedAt = utc(tok.CreatedAt)
	t.Tokens[h] = &tok
	res := tok.Clone()
	res.Hash = nil
	return res, Event{Type: TypeIssueTDEToken}, nil
}

func (c *RevokeTDEToken) apply(d *Data) (any, Event, error) {
	for h, t := range d.TDE.Tokens {
		if t.Accessor == c.Accessor {
			delete(d.TDE.Tokens, h)
			return nil, Event{Type: TypeRevokeTDEToken}, nil
		}
	}
	return nil, Event{}, notFound("TDE token with accessor %q", c.Accessor)
}

// check verifies and normalises the TDE part of a restored state.
func (t *TDEData) check(d *Data) error {
	if t.Mounts == nil {
		t.Mounts = map[string]*TDEMount{}
	}
	if t.Keys == nil {
		t.Keys = map[string]*TDEKey{}
	}
	if t.Tokens == nil {
		t.Tokens = map[string]*TDEToken{}
	}
	for n, m := range t.Mounts {
		if m == nil || m.Name != n {
			return fmt.Errorf("TDE mount entry %q does not hold its mount", n)
		}
		m.CreatedAt = utc(m.CreatedAt)
	}
	for id, k := range t.Keys {
		if k == nil || tdeKeyID(k.Mount, k.Name) != id {
			return fmt.Errorf("TDE key entry %q does not hold its key", id)
		}
		if _, ok := t.Mounts[k.Mount]; !ok {
			return fmt.Errorf("TDE key %q is in missing mount %q", id, k.Mount)
		}
		if len(k.Versions) == 0 || len(k.Versions) > MaxTDEVersions {
			return fmt.Errorf("TDE key %q has %d versions", id, len(k.Versions))
		}
		for i, v := range k.Versions {
			if v.Number != uint32(i+1) {
				return fmt.Errorf("TDE key %q: version %d at position %d", id, v.Number, i+1)
			}
		}
		normalizeTDEKey(k)
	}
	for h, tok := range t.Tokens {
		if tok == nil || hex.EncodeToString(tok.Hash) != h {
			return fmt.Errorf("TDE token entry %q does not hold its token", h)
		}
		tok.CreatedAt = utc(tok.CreatedAt)
	}
	return nil
}

func (e *digestEncoder) tde(t *TDEData) {
	e.uint(uint64(len(t.Mounts)))
	for _, n := range sortedKeys(t.Mounts) {
		m := t.Mounts[n]
		e.str(n)
		e.str(m.Name)
		e.str(m.KMSKeyID)
		e.time(m.CreatedAt)
	}
	e.uint(uint64(len(t.Keys)))
	for _, id := range sortedKeys(t.Keys) {
		k := t.Keys[id]
		e.str(id)
		e.str(k.Mount)
		e.str(k.Name)
		e.int(int64(k.Bytes))
		e.str(k.Creator)
		e.time(k.CreatedAt)
		e.uint(uint64(len(k.Versions)))
		for _, v := range k.Versions {
			e.uint(uint64(v.Number))
			e.bytes(v.Wrapped)
			e.time(v.CreatedAt)
			e.time(v.RetiredAt)
		}
	}
	e.uint(uint64(len(t.Tokens)))
	for _, h := range sortedKeys(t.Tokens) {
		tok := t.Tokens[h]
		e.str(h)
		e.str(tok.Accessor)
		e.bytes(tok.Hash)
		e.str(tok.Principal)
		e.str(tok.Creator)
		e.time(tok.CreatedAt)
	}
}

// TDEMount returns a mount's binding.
func (s *State) TDEMount(name string) (TDEMount, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.data.TDE.Mounts[name]
	if !ok {
		return TDEMount{}, false
	}
	return *m, true
}

// TDEKey returns a TDE key.
func (s *State) TDEKey(mount, name string) (TDEKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.data.TDE.Keys[tdeKeyID(mount, name)]
	if !ok {
		return TDEKey{}, false
	}
	return k.Clone(), true
}

// TDEKeys returns the TDE keys of a mount, or of every mount when mount is
// "", sorted by mount and name.
func (s *State) TDEKeys(mount string) []TDEKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ks := []TDEKey{}
	for _, k := range s.data.TDE.Keys {
		if mount == "" || k.Mount == mount {
			ks = append(ks, k.Clone())
		}
	}
	slices.SortFunc(ks, func(a, b TDEKey) int {
		if c := strings.Compare(a.Mount, b.Mount); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return ks
}

// TDEMounts returns every mount, sorted by name.
func (s *State) TDEMounts() []TDEMount {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ms := make([]TDEMount, 0, len(s.data.TDE.Mounts))
	for _, n := range sortedKeys(s.data.TDE.Mounts) {
		ms = append(ms, *s.data.TDE.Mounts[n])
	}
	return ms
}

// TDEToken returns the token with the given SHA-256 hash.
func (s *State) TDEToken(hash []byte) (TDEToken, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.data.TDE.Tokens[hex.EncodeToString(hash)]
	if !ok {
		return TDEToken{}, false
	}
	return t.Clone(), true
}

// TDETokens returns every token without its hash, sorted by accessor.
func (s *State) TDETokens() []TDEToken {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts := make([]TDEToken, 0, len(s.data.TDE.Tokens))
	for _, t := range s.data.TDE.Tokens {
		c := *t
		c.Hash = nil
		ts = append(ts, c)
	}
	slices.SortFunc(ts, func(a, b TDEToken) int { return strings.Compare(a.Accessor, b.Accessor) })
	return ts
}
