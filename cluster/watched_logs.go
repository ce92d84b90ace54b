package cluster

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// watchedLogs is the node's Raft log store, which remembers its last
// failed write until a later write succeeds. It passes every error on:
// Raft fails the writes it was making (a leader steps down), and nothing
// is acknowledged that was not stored. What it adds is for readiness: a
// full or read-only disk may fail the log's appends while the term and
// vote, small writes into pages the store already holds, still succeed,
// and the node then stays up refusing every write (docs/OPERATIONS.md).
type watchedLogs struct {
	raft.LogStore

	mu     sync.Mutex
	err    error
	failAt time.Time
}

func (w *watchedLogs) StoreLog(l *raft.Log) error {
	return w.note(w.LogStore.StoreLog(l))
}

func (w *watchedLogs) StoreLogs(ls []*raft.Log) error {
	return w.note(w.LogStore.StoreLogs(ls))
}

func (w *watchedLogs) note(err error) error {
	w.mu.Lock()
	if err != nil {
		w.err, w.failAt = err, time.Now()
	} else {
		w.err = nil
	}
	w.mu.Unlock()
	return err
}

// failing is when the last write failed and its error, nil if the last
// write succeeded or there was none.
func (w *watchedLogs) failing() (time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failAt, w.err
}
