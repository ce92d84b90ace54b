package cluster

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// FSM is the raft.FSM of a cluster node. It is a thin adapter: it decodes
// each log entry (DecodeCommand), applies it to its State under the write
// lock, and hands the result back to raft. It also implements
// raft.BatchingFSM, taking the lock once per batch.
//
// Raft calls Apply, ApplyBatch, Snapshot and Restore from one goroutine,
// never concurrently; FSMSnapshot.Persist runs concurrently with Apply. The
// State's read methods may be called at any time from any goroutine.
type FSM struct {
	state    *State
	observer func(Event)
	logger   *slog.Logger
}

var _ raft.BatchingFSM = (*FSM)(nil)

// NewFSM returns an FSM over an empty State. observer, if not nil, is called
// after each successfully applied command and after each Restore (with
// Type TypeRestore), on raft's FSM goroutine and outside the state lock: it
// may read the State, but must return quickly and must not wait for raft
// (Node.Apply, Barrier...), or the node deadlocks. logger may be nil.
func NewFSM(observer func(Event), logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FSM{state: NewState(), observer: observer, logger: logger}
}

// State returns the live state, for reading.
func (f *FSM) State() *State { return f.state }

// Apply applies one log entry. It returns the command's result (a Key, an
// Alias, a NodeInfo or nil, see the command types) or, when the entry is
// malformed or a precondition fails, an error value: the log advances
// either way, and every node reaches the same verdict.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.state.mu.Lock()
	res, ev, err := f.applyLocked(l)
	f.state.mu.Unlock()
	if err != nil {
		return err
	}
	f.notify(ev)
	return res
}

// ApplyBatch applies consecutive committed entries under one lock.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	events := make([]Event, 0, len(logs))
	f.state.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		res, ev, err := f.applyLocked(l)
		if err != nil {
			out[i] = err
			continue
		}
		out[i] = res
		events = append(events, ev)
	}
	f.state.mu.Unlock()
	for _, ev := range events {
		f.notify(ev)
	}
	return out
}

func (f *FSM) applyLocked(l *raft.Log) (res any, ev Event, err error) {
	f.state.index, f.state.term = l.Index, l.Term
	res, ev, err = safeApplyEntry(f.state.data, l.Data)
	if err != nil {
		lvl := slog.LevelDebug
		if errors.Is(err, ErrInvalidCommand) {
			// Proposers validate before proposing, so a malformed entry
			// in the log means a bug or a version mismatch.
			lvl = slog.LevelWarn
		}
		f.logger.Log(context.Background(), lvl, "command rejected", "index", l.Index, "error", err)
	}
	return res, ev, err
}

// applyEntry decodes and applies one encoded command to d.
func applyEntry(d *Data, b []byte) (any, Event, error) {
	c, err := DecodeCommand(b)
	if err != nil {
		return nil, Event{}, err
	}
	return c.apply(d)
}

// safeApplyEntry is applyEntry with a last line of defence: a panic in
// apply would crash every node on the same entry, and again on every
// restart as the log replays. It becomes an error value instead. The apply
// methods check everything before they write, so a panic cannot leave a
// half-applied command behind unless one of them has a bug; the fuzz tests
// call applyEntry directly so that such bugs are not hidden.
func safeApplyEntry(d *Data, b []byte) (res any, ev Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, ev, err = nil, Event{}, invalidCommand("panic while applying: %v", r)
		}
	}()
	return applyEntry(d, b)
}

func (f *FSM) notify(ev Event) {
	if f.observer != nil {
		f.observer(ev)
	}
}

// snapshotFormat is the version of the snapshot and backup encoding.
const snapshotFormat = 1

// snapshotFile is what a snapshot or backup holds: JSON of the whole state
// and the log position it reflects.
type snapshotFile struct {
	Format int    `json:"format"`
	Index  uint64 `json:"index"` // last command applied
	Term   uint64 `json:"term"`
	Data   *Data  `json:"data"`
}

// Snapshot captures a deep copy of the state under the read lock; encoding
// happens later, in Persist, while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{file: f.capture()}, nil
}

func (f *FSM) capture() snapshotFile {
	f.state.mu.RLock()
	defer f.state.mu.RUnlock()
	return snapshotFile{Format: snapshotFormat, Index: f.state.index, Term: f.state.term, Data: f.state.data.Clone()}
}

// Restore replaces the whole state with a snapshot's. It decodes and checks
// the snapshot into a fresh Data first and swaps it in under the write lock,
// so a bad snapshot leaves the current state untouched.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	sf, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.state.mu.Lock()
	f.state.data, f.state.index, f.state.term = sf.Data, sf.Index, sf.Term
	f.state.mu.Unlock()
	f.notify(Event{Type: TypeRestore})
	return nil
}

// readSnapshot decodes and checks a snapshot or backup.
func readSnapshot(r io.Reader) (snapshotFile, error) {
	var sf snapshotFile
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return snapshotFile{}, fmt.Errorf("cluster: decode snapshot: %w", err)
	}
	if sf.Format != snapshotFormat {
		return snapshotFile{}, fmt.Errorf("cluster: unsupported snapshot format %d", sf.Format)
	}
	if sf.Data == nil {
		return snapshotFile{}, errors.New("cluster: snapshot has no data")
	}
	if err := checkData(sf.Data); err != nil {
		return snapshotFile{}, fmt.Errorf("cluster: inconsistent snapshot: %w", err)
	}
	return sf, nil
}

// checkData verifies the invariants the commands maintain, and normalises d
// the way the commands do, so that a restored state is indistinguishable
// from one built by applying the log.
func checkData(d *Data) error {
	if d.Keys == nil {
		d.Keys = map[string]*Key{}
	}
	if d.Aliases == nil {
		d.Aliases = map[string]*Alias{}
	}
	if d.Nodes == nil {
		d.Nodes = map[string]*NodeInfo{}
	}
	if d.JoinTokens == nil {
		d.JoinTokens = map[string]*JoinToken{}
	}
	if d.Grants == nil {
		d.Grants = map[string]*Grant{}
	}
	if d.Principals == nil {
		d.Principals = map[string]*Principal{}
	}
	for id, k := range d.Keys {
		if k == nil || k.ID != id {
			return fmt.Errorf("key entry %q does not hold key %q", id, id)
		}
		if int(k.CurrentVersion) != len(k.Versions) || len(k.Versions) == 0 {
			return fmt.Errorf("key %q: current version %d with %d versions", id, k.CurrentVersion, len(k.Versions))
		}
		for i, v := range k.Versions {
			if v.Number != uint32(i+1) {
				return fmt.Errorf("key %q: version %d at position %d", id, v.Number, i+1)
			}
			if err := checkTime("version created_at", v.CreatedAt, false); err != nil {
				return err
			}
		}
		for _, t := range [...]struct {
			what string
			t    time.Time
		}{{"created_at", k.CreatedAt}, {"deletion_date", k.DeletionDate}} {
			if err := checkTime(t.what, t.t, false); err != nil {
				return fmt.Errorf("key %q: %w", id, err)
			}
		}
		normalizeKey(k)
	}
	for name, a := range d.Aliases {
		if a == nil || a.Name != name {
			return fmt.Errorf("alias entry %q does not hold alias %q", name, name)
		}
		if _, ok := d.Keys[a.KeyID]; !ok {
			return fmt.Errorf("alias %q points at missing key %q", name, a.KeyID)
		}
		if err := checkTime("alias created_at", a.CreatedAt, false); err != nil {
			return err
		}
		if err := checkTime("alias updated_at", a.UpdatedAt, false); err != nil {
			return err
		}
		a.CreatedAt, a.UpdatedAt = utc(a.CreatedAt), utc(a.UpdatedAt)
	}
	d.indexAliases()
	for id, n := range d.Nodes {
		if n == nil || n.ID != id {
			return fmt.Errorf("node entry %q does not hold node %q", id, id)
		}
		if err := checkTime("node last_seen", n.LastSeen, false); err != nil {
			return err
		}
		normalizeNode(n)
	}
	tokenIDs := make(map[string]bool, len(d.JoinTokens))
	for h, t := range d.JoinTokens {
		if t == nil || len(t.Hash) != 32 || hex.EncodeToString(t.Hash) != h {
			return fmt.Errorf("join token entry %q does not hold its token", h)
		}
		if tokenIDs[t.ID()] {
			return fmt.Errorf("two join tokens have the id %s", t.ID())
		}
		tokenIDs[t.ID()] = true
		if err := checkTime("join token expires", t.Expires, false); err != nil {
			return err
		}
		if err := checkTime("join token created_at", t.CreatedAt, false); err != nil {
			return err
		}
		if t.NodeID != "" {
			if err := checkID("join token node id", t.NodeID); err != nil {
				return err
			}
		}
		t.Expires, t.CreatedAt = utc(t.Expires), utc(t.CreatedAt)
	}
	for id, g := range d.Grants {
		if g == nil || g.ID != id {
			return fmt.Errorf("grant entry %q does not hold grant %q", id, id)
		}
		if _, ok := d.Keys[g.KeyID]; !ok {
			return fmt.Errorf("grant %q is on missing key %q", id, g.KeyID)
		}
		if err := (&CreateGrant{Grant: *g}).validate(); err != nil {
			return fmt.Errorf("grant %q: %w", id, err)
		}
		normalizeGrant(g)
	}
	if err := d.TDE.check(d); err != nil {
		return err
	}
	for name, p := range d.Principals {
		if p == nil || p.Name != name {
			return fmt.Errorf("principal entry %q does not hold principal %q", name, name)
		}
		if !p.Role.Valid() {
			return fmt.Errorf("principal %q has unknown role %q", name, p.Role)
		}
		if err := checkTime("principal updated_at", p.UpdatedAt, false); err != nil {
			return err
		}
		p.UpdatedAt = utc(p.UpdatedAt)
	}
	if err := checkAuditHeads(d); err != nil {
		return err
	}
	if err := checkDataObjects(d); err != nil {
		return err
	}
	if err := checkRemovedNodes(d); err != nil {
		return err
	}
	if err := checkKMIP(d); err != nil {
		return err
	}
	d.indexKMIP()
	return nil
}

type fsmSnapshot struct{ file snapshotFile }

// Persist writes the snapshot as JSON.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, &s.file); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the snapshot is a private copy.
func (s *fsmSnapshot) Release() {}

// writeSnapshot writes sf as the JSON a snapshotFile encodes to, one map
// entry at a time (keys sorted), so that a snapshot of any size needs no
// buffer of its whole encoding: json.Encoder would build all of it in
// memory first (66 MiB at 100,000 keys) before writing a byte.
func writeSnapshot(w io.Writer, sf *snapshotFile) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	// One Encoder for every value: it reuses its buffer, and the newline it
	// writes after each value is JSON white space.
	enc := json.NewEncoder(bw)
	d := sf.Data
	var err error
	put := func(s string) {
		if err == nil {
			_, err = bw.WriteString(s)
		}
	}
	value := func(v any) {
		if err == nil {
			err = enc.Encode(v)
		}
	}
	put(fmt.Sprintf(`{"format":%d,"index":%d,"term":%d,"data":{`, sf.Format, sf.Index, sf.Term))
	putMap(put, value, "keys", d.Keys)
	put(",")
	putMap(put, value, "aliases", d.Aliases)
	put(",")
	putMap(put, value, "nodes", d.Nodes)
	put(",")
	putMap(put, value, "join_tokens", d.JoinTokens)
	put(`,"domain_key_id":`)
	value(d.DomainKeyID)
	put(`,"domain_key_check":`)
	value(d.DomainKeyCheck)
	put(",")
	putMap(put, value, "grants", d.Grants)
	put(",")
	putMap(put, value, "principals", d.Principals)
	put(`,"tde":`)
	value(d.TDE)
	put(",")
	putMap(put, value, "audit_heads", d.AuditHeads)
	if len(d.DataObjects) > 0 {
		put(",")
		putMap(put, value, "data_objects", d.DataObjects)
	}
	if len(d.KMIP) > 0 {
		put(",")
		putMap(put, value, "kmip_objects", d.KMIP)
	}
	if len(d.RemovedNodes) > 0 {
		put(",")
		putMap(put, value, "removed_nodes", d.RemovedNodes)
	}
	put("}}\n")
	if err != nil {
		return err
	}
	return bw.Flush()
}

// putMap writes "name":{...} with m's entries in key order (null for a nil
// map, as encoding/json writes it).
func putMap[V any](put func(string), value func(any), name string, m map[string]V) {
	put(`"` + name + `":`)
	if m == nil {
		put("null")
		return
	}
	put("{")
	for i, k := range sortedKeys(m) {
		if i > 0 {
			put(",")
		}
		value(k)
		put(":")
		value(m[k])
	}
	put("}")
}
