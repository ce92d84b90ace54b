package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hsmbroker/hsmbroker/keys"
)

// CommandType is the first byte of every log entry. The values are part of
// the on-disk log format: never renumber or reuse one.
type CommandType uint8

// Command types.
const (
	TypeCreateKey         CommandType = 1
	TypeUpdateDescription CommandType = 2
	TypeSetKeyState       CommandType = 3
	TypeScheduleDeletion  CommandType = 4
	TypeCancelDeletion    CommandType = 5
	TypeDeleteKey         CommandType = 6
	TypeAddVersion        CommandType = 7
	TypeSetRotation       CommandType = 8
	TypeTagKey            CommandType = 9
	TypeUntagKey          CommandType = 10
	TypeCreateAlias       CommandType = 11
	TypeUpdateAlias       CommandType = 12
	TypeDeleteAlias       CommandType = 13
	TypePutPolicy         CommandType = 14
	TypeUpsertNode        CommandType = 15
	TypeRemoveNode        CommandType = 16
	TypeAddJoinToken      CommandType = 17
	TypeConsumeJoinToken  CommandType = 18
	TypeSetDomainKeyID    CommandType = 19
	TypeCreateGrant       CommandType = 20
	TypeRemoveGrant       CommandType = 21
	TypeSetPrincipalRole  CommandType = 22
	TypeDeletePrincipal   CommandType = 23
	TypeAuditCheckpoint   CommandType = 24
	TypeRevokeJoinToken   CommandType = 25
)

// TypeRestore is not a command: it is the Event.Type the observer sees after
// the FSM replaced its whole state from a snapshot. Zero is never a valid
// type byte.
const TypeRestore CommandType = 0

// commandTable is the dispatch table: the type byte selects the Go type the
// JSON body decodes into. Decoding, validation and application then go
// through the Command methods.
var commandTable = [...]struct {
	name string
	new  func() Command
}{
	TypeCreateKey:         {"CreateKey", func() Command { return new(CreateKey) }},
	TypeUpdateDescription: {"UpdateDescription", func() Command { return new(UpdateDescription) }},
	TypeSetKeyState:       {"SetKeyState", func() Command { return new(SetKeyState) }},
	TypeScheduleDeletion:  {"ScheduleDeletion", func() Command { return new(ScheduleDeletion) }},
	TypeCancelDeletion:    {"CancelDeletion", func() Command { return new(CancelDeletion) }},
	TypeDeleteKey:         {"DeleteKey", func() Command { return new(DeleteKey) }},
	TypeAddVersion:        {"AddVersion", func() Command { return new(AddVersion) }},
	TypeSetRotation:       {"SetRotation", func() Command { return new(SetRotation) }},
	TypeTagKey:            {"TagKey", func() Command { return new(TagKey) }},
	TypeUntagKey:          {"UntagKey", func() Command { return new(UntagKey) }},
	TypeCreateAlias:       {"CreateAlias", func() Command { return new(CreateAlias) }},
	TypeUpdateAlias:       {"UpdateAlias", func() Command { return new(UpdateAlias) }},
	TypeDeleteAlias:       {"DeleteAlias", func() Command { return new(DeleteAlias) }},
	TypePutPolicy:         {"PutPolicy", func() Command { return new(PutPolicy) }},
	TypeUpsertNode:        {"UpsertNode", func() Command { return new(UpsertNode) }},
	TypeRemoveNode:        {"RemoveNode", func() Command { return new(RemoveNode) }},
	TypeAddJoinToken:      {"AddJoinToken", func() Command { return new(AddJoinToken) }},
	TypeConsumeJoinToken:  {"ConsumeJoinToken", func() Command { return new(ConsumeJoinToken) }},
	TypeSetDomainKeyID:    {"SetDomainKeyID", func() Command { return new(SetDomainKeyID) }},
	TypeCreateGrant:       {"CreateGrant", func() Command { return new(CreateGrant) }},
	TypeRemoveGrant:       {"RemoveGrant", func() Command { return new(RemoveGrant) }},
	TypeSetPrincipalRole:  {"SetPrincipalRole", func() Command { return new(SetPrincipalRole) }},
	TypeDeletePrincipal:   {"DeletePrincipal", func() Command { return new(DeletePrincipal) }},
	TypeCreateTDEKey:      {"CreateTDEKey", func() Command { return new(CreateTDEKey) }},
	TypeAddTDEVersion:     {"AddTDEVersion", func() Command { return new(AddTDEVersion) }},
	TypeRetireTDEVersion:  {"RetireTDEVersion", func() Command { return new(RetireTDEVersion) }},
	TypeIssueTDEToken:     {"IssueTDEToken", func() Command { return new(IssueTDEToken) }},
	TypeRevokeTDEToken:    {"RevokeTDEToken", func() Command { return new(RevokeTDEToken) }},
	TypeAuditCheckpoint:   {"AuditCheckpoint", func() Command { return new(AuditCheckpoint) }},
	TypeRevokeJoinToken:   {"RevokeJoinToken", func() Command { return new(RevokeJoinToken) }},
	TypeCreateDataObject:  {"CreateDataObject", func() Command { return new(CreateDataObject) }}, // command_pkcs11.go
	TypeDeleteDataObject:  {"DeleteDataObject", func() Command { return new(DeleteDataObject) }},
	TypeKMIPCreateObject:  {"KMIPCreateObject", func() Command { return new(KMIPCreateObject) }},
	TypeKMIPUpdateObject:  {"KMIPUpdateObject", func() Command { return new(KMIPUpdateObject) }},
	TypeKMIPDeleteObject:  {"KMIPDeleteObject", func() Command { return new(KMIPDeleteObject) }},
	TypeKMIPCreateKeyPair: {"KMIPCreateKeyPair", func() Command { return new(KMIPCreateKeyPair) }},
}

func (t CommandType) String() string {
	if t == TypeRestore {
		return "Restore"
	}
	if int(t) < len(commandTable) && commandTable[t].new != nil {
		return commandTable[t].name
	}
	return "CommandType(" + strconv.Itoa(int(t)) + ")"
}

// Command is a change to the replicated state. It is implemented by pointers
// to the structs in this file (&CreateKey{...}); they are plain data, and
// all times in them come from the proposer's clock so that applying a
// command is deterministic.
//
// A successful command's result (FSM.Apply, Node.Apply) is a copy of what
// it changed: a Key for CreateKey and the other commands on one key, an
// Alias for CreateAlias and UpdateAlias, a NodeInfo for UpsertNode, a Grant
// for CreateGrant, a Principal for SetPrincipalRole, and nil for DeleteKey,
// DeleteAlias, RemoveNode, the join-token commands, SetDomainKeyID,
// RemoveGrant and DeletePrincipal.
type Command interface {
	// Type is the type byte that starts the command's log entry.
	Type() CommandType

	// validate checks the command on its own, without looking at state.
	validate() error

	// apply checks the command's preconditions against d and, only when
	// they all hold, changes d. It returns the value handed back to the
	// proposer and the event for the observer.
	apply(d *Data) (result any, ev Event, err error)
}

// EncodeCommand returns the log entry for c: its type byte followed by its
// JSON encoding. Commands that fail validation are refused with
// ErrInvalidCommand, so they never reach the log.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil || reflect.ValueOf(c).IsNil() {
		return nil, invalidCommand("nil command")
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte(byte(c.Type()))
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, invalidCommand("encode %s: %v", c.Type(), err)
	}
	// Encoder.Encode ends with a newline; keep entries minimal.
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeCommand parses and validates a log entry. Every failure wraps
// ErrInvalidCommand. Unknown JSON fields are refused rather than ignored: a
// node that silently dropped a field it does not know would diverge from
// nodes that honour it.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, invalidCommand("empty entry")
	}
	t := CommandType(b[0])
	if int(t) >= len(commandTable) || commandTable[t].new == nil {
		return nil, invalidCommand("unknown command type %d", b[0])
	}
	c := commandTable[t].new()
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, invalidCommand("decode %s: %v", t, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalidCommand("decode %s: trailing data after JSON body", t)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Event tells the observer what a successfully applied command changed.
type Event struct {
	Type    CommandType
	KeyID   string // the key concerned, "" for node, token and domain commands
	Version uint32 // the version created by CreateKey (1) or AddVersion
}

// CreateKey creates a key with its first version, its tags and policy (the
// Key's Policy, stored as PutPolicy stores one; none means the default)
// and, when Alias is set, an alias for it, atomically. gRPC CreateKey
// always names an alias; the AWS KMS front, like AWS, may not.
type CreateKey struct {
	Key   Key    `json:"key"`
	Alias string `json:"alias"`
}

// UpdateDescription replaces a key's description.
type UpdateDescription struct {
	KeyID       string `json:"key_id"`
	Description string `json:"description"`
}

// SetKeyState enables or disables a key. Deletion has its own commands.
type SetKeyState struct {
	KeyID string     `json:"key_id"`
	State keys.State `json:"state"` // Enabled or Disabled
}

// ScheduleDeletion puts a key in PendingDeletion until DeletionDate, which
// the proposer computes as its now + PendingWindowDays (7 to 30) days.
type ScheduleDeletion struct {
	KeyID             string    `json:"key_id"`
	DeletionDate      time.Time `json:"deletion_date"`
	PendingWindowDays int32     `json:"pending_window_days"`
}

// CancelDeletion takes a key out of PendingDeletion. Like AWS KMS, the key
// comes back Disabled.
type CancelDeletion struct {
	KeyID string `json:"key_id"`
}

// DeleteKey removes a key, with all its versions and aliases, for good. The
// key must be pending deletion with a deletion date not after At, so a
// deletion racing with CancelDeletion loses.
type DeleteKey struct {
	KeyID string    `json:"key_id"`
	At    time.Time `json:"at"`
}

// AddVersion rotates a key: it appends a version, numbered CurrentVersion+1,
// and makes it current.
type AddVersion struct {
	KeyID   string     `json:"key_id"`
	Version KeyVersion `json:"version"`
}

// SetRotation turns automatic rotation on or off.
type SetRotation struct {
	KeyID   string `json:"key_id"`
	Enabled bool   `json:"enabled"`
}

// TagKey adds tags to a key, replacing the values of existing tag keys.
type TagKey struct {
	KeyID string            `json:"key_id"`
	Tags  map[string]string `json:"tags"`
}

// UntagKey removes tags from a key; tag keys it does not have are ignored.
type UntagKey struct {
	KeyID   string   `json:"key_id"`
	TagKeys []string `json:"tag_keys"`
}

// CreateAlias creates an alias for a key.
type CreateAlias struct {
	Name  string    `json:"name"`
	KeyID string    `json:"key_id"`
	At    time.Time `json:"at"`
}

// UpdateAlias points an existing alias at another key, which must have the
// same usage and be of the same type (symmetric, asymmetric or HMAC), as
// AWS KMS requires.
type UpdateAlias struct {
	Name  string    `json:"name"`
	KeyID string    `json:"key_id"`
	At    time.Time `json:"at"`
}

// DeleteAlias removes an alias; the key is unaffected.
type DeleteAlias struct {
	Name string `json:"name"`
}

// PutPolicy replaces a key's policy document.
type PutPolicy struct {
	KeyID  string `json:"key_id"`
	Policy []byte `json:"policy"`
}

// UpsertNode records a member and its partition, replacing what was known.
// A node removed from the cluster (RemoveNode) is recorded again only with
// Admit, which the leader sets when it admits the node through a new join.
type UpsertNode struct {
	Node  NodeInfo `json:"node"`
	Admit bool     `json:"admit,omitempty"`
}

// RemoveNode forgets a member's record and keeps its id as removed
// (removed_nodes.go). Raft membership is separate (Node.RemoveServer).
type RemoveNode struct {
	ID string `json:"id"`
}

// AddJoinToken stores a one-time join token's SHA-256 hash. Tokens that
// expired before At are dropped at the same time, so they do not pile up.
type AddJoinToken struct {
	Hash    []byte    `json:"hash"`
	Expires time.Time `json:"expires"`
	At      time.Time `json:"at"`
	// NodeID, when set, binds the token to one node id: ConsumeJoinToken
	// for another id fails and leaves it unused.
	NodeID string `json:"node_id,omitempty"`
}

// ConsumeJoinToken uses up a join token. It fails with ErrNotFound when no
// token has the hash (including one already used) and with ErrInvalidState
// when the token expired at or before At; callers should treat both as an
// authorisation failure.
type ConsumeJoinToken struct {
	Hash []byte    `json:"hash"`
	At   time.Time `json:"at"`
	// NodeID is the id of the node the token admits (checked against a
	// token bound to one).
	NodeID string `json:"node_id,omitempty"`
}

// RevokeJoinToken forgets an unused join token, named by its id
// (JoinTokenID), before it expires. It fails with ErrNotFound when no token
// has the id, or the one that has it expired at or before At (revoking a
// token that can no longer be used would be a change no one could see).
type RevokeJoinToken struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// SetDomainKeyID records the id of the cluster's domain key and its check
// blob: a throwaway AES key wrapped under the domain key, which unwraps only
// in a partition holding the same domain key (hsm.Partition.VerifyDomainKey).
// It can be set once; after that it fails with ErrAlreadyExists.
type SetDomainKeyID struct {
	ID    string `json:"id"`
	Check []byte `json:"check"`
}

func (*CreateKey) Type() CommandType         { return TypeCreateKey }
func (*UpdateDescription) Type() CommandType { return TypeUpdateDescription }
func (*SetKeyState) Type() CommandType       { return TypeSetKeyState }
func (*ScheduleDeletion) Type() CommandType  { return TypeScheduleDeletion }
func (*CancelDeletion) Type() CommandType    { return TypeCancelDeletion }
func (*DeleteKey) Type() CommandType         { return TypeDeleteKey }
func (*AddVersion) Type() CommandType        { return TypeAddVersion }
func (*SetRotation) Type() CommandType       { return TypeSetRotation }
func (*TagKey) Type() CommandType            { return TypeTagKey }
func (*UntagKey) Type() CommandType          { return TypeUntagKey }
func (*CreateAlias) Type() CommandType       { return TypeCreateAlias }
func (*UpdateAlias) Type() CommandType       { return TypeUpdateAlias }
func (*DeleteAlias) Type() CommandType       { return TypeDeleteAlias }
func (*PutPolicy) Type() CommandType         { return TypePutPolicy }
func (*UpsertNode) Type() CommandType        { return TypeUpsertNode }
func (*RemoveNode) Type() CommandType        { return TypeRemoveNode }
func (*AddJoinToken) Type() CommandType      { return TypeAddJoinToken }
func (*ConsumeJoinToken) Type() CommandType  { return TypeConsumeJoinToken }
func (*SetDomainKeyID) Type() CommandType    { return TypeSetDomainKeyID }
func (*RevokeJoinToken) Type() CommandType   { return TypeRevokeJoinToken }

// Limits on field sizes. They keep a single bad proposal from bloating the
// state that every node holds and every snapshot carries.
const (
	maxIDLen = 256
	// The API counts characters (AWS: 8192, 128 and 256); these bound the
	// bytes, at most 4 per character in UTF-8, so that they are never
	// stricter than the API's limits.
	maxDescriptionLen = 4 * 8192
	maxTagKeyLen      = 4 * 128
	maxTagValueLen    = 4 * 256
	maxTags           = 50
	maxPolicyLen      = 32 << 10 // AWS: 32 KiB
	maxBlobLen        = 64 << 10
	maxNodeFieldLen   = 1024
	maxMechanisms     = 1024
	minPendingDays    = 7
	maxPendingDays    = 30
)

func checkID(what, id string) error {
	if id == "" {
		return invalidCommand("%s is empty", what)
	}
	return checkText(what, id, maxIDLen)
}

// checkText refuses overlong strings, invalid UTF-8 and control characters.
func checkText(what, s string, max int) error {
	if len(s) > max {
		return invalidCommand("%s is longer than %d bytes", what, max)
	}
	if !utf8.ValidString(s) {
		return invalidCommand("%s is not valid UTF-8", what)
	}
	if strings.ContainsFunc(s, keys.IsControl) {
		return invalidCommand("%s contains a control character", what)
	}
	return nil
}

// checkAliasName applies the alias name rules of keys
// (keys.ValidateAliasName), their one home, to a command.
func checkAliasName(name string) error {
	if err := keys.ValidateAliasName(name); err != nil {
		return invalidCommand("%v", err)
	}
	return nil
}

// checkTime refuses times that cannot be encoded (JSON and RFC 3339 stop at
// year 9999) and, when required, the zero time.
func checkTime(what string, t time.Time, required bool) error {
	if t.IsZero() {
		if required {
			return invalidCommand("%s is not set", what)
		}
		return nil
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return invalidCommand("%s is out of range", what)
	}
	return nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > maxTags {
		return invalidCommand("more than %d tags", maxTags)
	}
	for k, v := range tags {
		if k == "" {
			return invalidCommand("empty tag key")
		}
		if err := checkText("tag key", k, maxTagKeyLen); err != nil {
			return err
		}
		if err := checkText("tag value", v, maxTagValueLen); err != nil {
			return err
		}
	}
	return nil
}

// rotatable reports whether keys of spec s may get new versions. As in AWS
// KMS only symmetric encryption keys rotate: a new version of an asymmetric
// key would change its public key under its users' feet.
func rotatable(s keys.Spec, u keys.Usage) bool {
	return s == keys.SpecSymmetricDefault && u != keys.UsageRawEncryptDecrypt
}

func checkVersion(spec keys.Spec, v KeyVersion) error {
	if len(v.Wrapped) == 0 {
		return invalidCommand("version %d has no wrapped key", v.Number)
	}
	if len(v.Wrapped) > maxBlobLen {
		return invalidCommand("version %d wrapped key is longer than %d bytes", v.Number, maxBlobLen)
	}
	if spec.IsAsymmetric() != (len(v.PublicKey) > 0) {
		if spec.IsAsymmetric() {
			return invalidCommand("version %d of a %s key has no public key", v.Number, spec)
		}
		return invalidCommand("version %d of a %s key has a public key", v.Number, spec)
	}
	if len(v.PublicKey) > maxBlobLen {
		return invalidCommand("version %d public key is longer than %d bytes", v.Number, maxBlobLen)
	}
	return checkTime(fmt.Sprintf("version %d created_at", v.Number), v.CreatedAt, true)
}

func (c *CreateKey) validate() error {
	k := &c.Key
	if err := checkID("key id", k.ID); err != nil {
		return err
	}
	if !k.Spec.Valid() {
		return invalidCommand("unknown key spec %q", k.Spec)
	}
	if !k.Spec.AllowsUsage(k.Usage) {
		return invalidCommand("key usage %q is not allowed for %s", k.Usage, k.Spec)
	}
	if k.State != keys.StateEnabled && k.State != keys.StateDisabled {
		return invalidCommand("a new key must be Enabled or Disabled, not %q", k.State)
	}
	if err := checkText("description", k.Description, maxDescriptionLen); err != nil {
		return err
	}
	if err := checkTags(k.Tags); err != nil {
		return err
	}
	if err := checkText("creator", k.Creator, maxIDLen); err != nil {
		return err
	}
	if err := checkTime("created_at", k.CreatedAt, true); err != nil {
		return err
	}
	if !k.DeletionDate.IsZero() || k.PendingWindowDays != 0 {
		return invalidCommand("a new key cannot be scheduled for deletion")
	}
	if k.RotationEnabled && !rotatable(k.Spec, k.Usage) {
		return invalidCommand("%s keys do not rotate", k.Spec)
	}
	if len(k.Versions) != 1 || k.Versions[0].Number != 1 || k.CurrentVersion != 1 {
		return invalidCommand("a new key must have exactly version 1, current")
	}
	if err := checkVersion(k.Spec, k.Versions[0]); err != nil {
		return err
	}
	if len(k.Policy) > maxPolicyLen {
		return invalidCommand("policy is longer than %d bytes", maxPolicyLen)
	}
	if c.Alias != "" {
		return checkAliasName(c.Alias)
	}
	return nil
}

func (c *UpdateDescription) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	return checkText("description", c.Description, maxDescriptionLen)
}

func (c *SetKeyState) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if c.State != keys.StateEnabled && c.State != keys.StateDisabled {
		return invalidCommand("key state must be Enabled or Disabled, not %q", c.State)
	}
	return nil
}

func (c *ScheduleDeletion) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if c.PendingWindowDays < minPendingDays || c.PendingWindowDays > maxPendingDays {
		return invalidCommand("pending window must be %d to %d days, not %d", minPendingDays, maxPendingDays, c.PendingWindowDays)
	}
	return checkTime("deletion_date", c.DeletionDate, true)
}

func (c *CancelDeletion) validate() error { return checkID("key id", c.KeyID) }

func (c *DeleteKey) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	return checkTime("at", c.At, true)
}

func (c *AddVersion) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if c.Version.Number < 2 {
		return invalidCommand("added version number must be at least 2, not %d", c.Version.Number)
	}
	if len(c.Version.Wrapped) == 0 {
		return invalidCommand("version %d has no wrapped key", c.Version.Number)
	}
	// The spec-dependent checks happen in apply, which knows the key.
	return checkTime("version created_at", c.Version.CreatedAt, true)
}

func (c *SetRotation) validate() error { return checkID("key id", c.KeyID) }

func (c *TagKey) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if len(c.Tags) == 0 {
		return invalidCommand("no tags")
	}
	return checkTags(c.Tags)
}

func (c *UntagKey) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if len(c.TagKeys) == 0 {
		return invalidCommand("no tag keys")
	}
	if len(c.TagKeys) > maxTags {
		return invalidCommand("more than %d tag keys", maxTags)
	}
	return nil
}

func (c *CreateAlias) validate() error {
	if err := checkAliasName(c.Name); err != nil {
		return err
	}
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	return checkTime("at", c.At, true)
}

func (c *UpdateAlias) validate() error {
	if err := checkAliasName(c.Name); err != nil {
		return err
	}
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	return checkTime("at", c.At, true)
}

func (c *DeleteAlias) validate() error {
	// No checkAliasName: an alias that exists can always be deleted, even
	// if the naming rules have since become stricter.
	return checkID("alias name", c.Name)
}

func (c *PutPolicy) validate() error {
	if err := checkID("key id", c.KeyID); err != nil {
		return err
	}
	if len(c.Policy) > maxPolicyLen {
		return invalidCommand("policy is longer than %d bytes", maxPolicyLen)
	}
	return nil
}

func (c *UpsertNode) validate() error {
	n := &c.Node
	if err := checkID("node id", n.ID); err != nil {
		return err
	}
	p := &n.Partition
	for _, f := range []struct{ what, v string }{
		{"raft address", n.RaftAddr}, {"gRPC address", n.GRPCAddr},
		{"model", p.Model}, {"manufacturer", p.Manufacturer}, {"serial", p.Serial},
		{"token label", p.TokenLabel}, {"library", p.Library}, {"firmware", p.Firmware},
		{"health", p.Health},
	} {
		if err := checkText(f.what, f.v, maxNodeFieldLen); err != nil {
			return err
		}
	}
	if len(p.Mechanisms) > maxMechanisms {
		return invalidCommand("more than %d mechanisms", maxMechanisms)
	}
	for _, m := range p.Mechanisms {
		if err := checkText("mechanism", m, maxNodeFieldLen); err != nil {
			return err
		}
	}
	return checkTime("last_seen", n.LastSeen, false)
}

func (c *RemoveNode) validate() error { return checkID("node id", c.ID) }

func (c *AddJoinToken) validate() error {
	if len(c.Hash) != 32 {
		return invalidCommand("join token hash must be 32 bytes (SHA-256), not %d", len(c.Hash))
	}
	if err := checkTime("expires", c.Expires, true); err != nil {
		return err
	}
	if err := checkTime("at", c.At, true); err != nil {
		return err
	}
	if !c.At.Before(c.Expires) {
		return invalidCommand("join token expires before it is added")
	}
	if c.Expires.Sub(c.At) > MaxJoinTokenTTL {
		return invalidCommand("join token lives %s, more than %s", c.Expires.Sub(c.At), MaxJoinTokenTTL)
	}
	if c.NodeID != "" {
		return checkID("join token node id", c.NodeID)
	}
	return nil
}

// MaxJoinTokenTTL is the longest a join token may live, from the time it
// is added.
const MaxJoinTokenTTL = 24 * time.Hour

func (c *ConsumeJoinToken) validate() error {
	if len(c.Hash) != 32 {
		return invalidCommand("join token hash must be 32 bytes (SHA-256), not %d", len(c.Hash))
	}
	if c.NodeID != "" {
		if err := checkID("join token node id", c.NodeID); err != nil {
			return err
		}
	}
	return checkTime("at", c.At, true)
}

func (c *RevokeJoinToken) validate() error {
	if !ValidJoinTokenID(c.ID) {
		// Not echoed: a token given by mistake for its id is a secret.
		return invalidCommand("join token id: want %d lowercase hex digits", JoinTokenIDLen)
	}
	return checkTime("at", c.At, true)
}

func (c *SetDomainKeyID) validate() error {
	if len(c.Check) > maxBlobLen {
		return invalidCommand("domain key check blob of %d bytes exceeds %d", len(c.Check), maxBlobLen)
	}
	return checkID("domain key id", c.ID)
}
