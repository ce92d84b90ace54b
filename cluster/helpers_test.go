package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hsmbroker/hsmbroker/keys"
)

// t0 is the tests' fixed "now".
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testKey returns a valid new key of the given spec and usage.
func testKey(id string, spec keys.Spec, usage keys.Usage) Key {
	v := KeyVersion{Number: 1, Wrapped: []byte("wrapped:" + id + ":1"), CreatedAt: t0}
	if spec.IsAsymmetric() {
		v.PublicKey = []byte("spki:" + id)
	}
	return Key{
		ID: id, Spec: spec, Usage: usage, State: keys.StateEnabled,
		Description: "test key " + id, Creator: "admin", CreatedAt: t0,
		Versions: []KeyVersion{v}, CurrentVersion: 1,
	}
}

func symKey(id string) Key {
	return testKey(id, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// sameTokenID is another hash with the id (JoinTokenID) of h.
func sameTokenID(h []byte) []byte {
	o := bytes.Clone(h)
	o[len(o)-1] ^= 1
	return o
}

// rawEntry encodes c without validating it, so tests reach the FSM's own
// checks.
func rawEntry(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("marshal %T: %v", c, err)
	}
	return append([]byte{byte(c.Type())}, b...)
}

// applyRaw feeds one entry to the FSM as raft would.
func applyRaw(f *FSM, index uint64, b []byte) (any, error) {
	resp := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b})
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// fsmApplier applies commands to an FSM with increasing indexes.
type fsmApplier struct {
	f     *FSM
	index uint64
}

func (a *fsmApplier) apply(t testing.TB, c Command) (any, error) {
	t.Helper()
	a.index++
	return applyRaw(a.f, a.index, rawEntry(t, c))
}

func (a *fsmApplier) must(t testing.TB, c Command) any {
	t.Helper()
	res, err := a.apply(t, c)
	if err != nil {
		t.Fatalf("apply %s: %v", c.Type(), err)
	}
	return res
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// snapshotBytes runs the FSM's Snapshot and Persist.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func wantErrIs(t testing.TB, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
