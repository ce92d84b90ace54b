package cluster

import (
	"context"
	"errors"
	"time"
)

// deletionReaper is the goroutine that finishes scheduled deletions: while
// this node leads, every ReapInterval it applies DeleteKey for each key whose
// deletion date has passed. Only the leader proposes, and DeleteKey itself
// rechecks state and date when applied, so a deletion that races with
// CancelDeletion, or a reaper on a deposed leader, deletes nothing it should
// not.
func (n *Node) deletionReaper() {
	defer close(n.reaperDone)
	t := time.NewTicker(n.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			if n.IsLeader() {
				n.reapDue(n.ctx)
			}
		}
	}
}

// reapDue deletes the keys due now and returns how many it deleted.
func (n *Node) reapDue(ctx context.Context) int {
	now := n.cfg.Now()
	deleted := 0
	for _, id := range n.State().DueForDeletion(now) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := n.Apply(actx, &DeleteKey{KeyID: id, At: now})
		cancel()
		switch {
		case err == nil:
			deleted++
			n.logger.Info("deleted key at the end of its waiting period", "key", id)
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidState):
			// Deleted or cancelled meanwhile.
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrShutdown), ctx.Err() != nil:
			return deleted
		default:
			n.logger.Warn("scheduled key deletion failed; will retry", "key", id, "error", err)
		}
	}
	return deleted
}
