package cluster

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// failingLogs fails writes to a real in-memory store on demand.
type failingLogs struct {
	*raft.InmemStore
	fail error
}

func (f *failingLogs) StoreLogs(ls []*raft.Log) error {
	if f.fail != nil {
		return f.fail
	}
	return f.InmemStore.StoreLogs(ls)
}

func (f *failingLogs) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

// TestWatchedLogsRemembersTheLastFailure: a failed write is passed on and
// remembered until a later write succeeds.
func TestWatchedLogsRemembersTheLastFailure(t *testing.T) {
	store := &failingLogs{InmemStore: raft.NewInmemStore()}
	w := &watchedLogs{LogStore: store}
	if _, err := w.failing(); err != nil {
		t.Fatalf("failing before any write: %v", err)
	}
	full := errors.New("write raft.db: no space left on device")
	store.fail = full
	if err := w.StoreLogs([]*raft.Log{{Index: 1}}); !errors.Is(err, full) {
		t.Fatalf("StoreLogs = %v, want the store's error", err)
	}
	if at, err := w.failing(); !errors.Is(err, full) || at.IsZero() {
		t.Fatalf("failing after a failed write = %v, %v", at, err)
	}
	if err := w.StoreLog(&raft.Log{Index: 1}); !errors.Is(err, full) {
		t.Fatalf("StoreLog = %v, want the store's error", err)
	}
	store.fail = nil
	if err := w.StoreLog(&raft.Log{Index: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.failing(); err != nil {
		t.Fatalf("failing after a write succeeded: %v", err)
	}
	var got raft.Log
	if err := w.GetLog(1, &got); err != nil || got.Index != 1 {
		t.Fatalf("the write that succeeded was not stored: %v", err)
	}
}
