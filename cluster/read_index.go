package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// maxReadIndexWalk bounds how far ReadIndex looks back past entries that
// change no state: one no-op per election and one configuration entry per
// membership change follow each other only a few at a time.
const maxReadIndexWalk = 1024

// ReadIndex returns, on the leader, the index that a member's State must
// reach (State.LastApplied) to reflect every write acknowledged before the
// call, the read index of the Raft paper (section 6.4), and confirms that
// this node still leads.
//
// It waits until this leader has committed an entry of its own term (its
// election's no-op): until then its commit index may lag what the previous
// leader acknowledged. It then takes the commit index, confirms leadership
// with a quorum, and returns the last command at or below that index. raft
// hands only commands to the FSM, not no-ops or configuration changes, so
// a State never reaches the index of those: a member waiting for the commit
// index itself, right after an election or a promotion, would wait until
// the next write.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	return n.readIndex(ctx, true)
}

// LocalReadIndex is ReadIndex without the quorum check: the index that
// reflects every write this node, as leader, had committed, or that an
// earlier leader acknowledged, when called. A leader deposed without
// knowing it yet answers from what it knew; so it serves lookups for which
// a stale answer only refuses what a moment later succeeds, and which must
// not each cost a round to the other voters.
func (n *Node) LocalReadIndex(ctx context.Context) (uint64, error) {
	return n.readIndex(ctx, false)
}

func (n *Node) readIndex(ctx context.Context, confirm bool) (uint64, error) {
	if err := n.requireLeader(); err != nil {
		return 0, err
	}
	term := n.raft.CurrentTerm()
	for n.termCommitted.Load() != term {
		if n.commitsTerm(term) {
			n.termCommitted.Store(term)
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if err := n.requireLeader(); err != nil {
			return 0, err
		}
		if n.raft.CurrentTerm() != term {
			return 0, n.notLeader()
		}
	}
	// Every entry committed before this term is at or below the commit
	// index from now on: it only grows.
	commit := n.raft.CommitIndex()
	if confirm {
		if err := n.VerifyLeader(ctx); err != nil {
			return 0, err
		}
	}
	return n.lastCommandAtOrBelow(commit), nil
}

// commitsTerm reports whether this node's commit index is at an entry of
// term, its current term as leader: then it covers everything an earlier
// leader committed. An entry this node does not hold says nothing: its
// commit index may be one it learned before installing a snapshot, or the
// index of that snapshot, whose later entries an earlier leader may have
// committed without saying so yet. It waits for the election's no-op.
func (n *Node) commitsTerm(term uint64) bool {
	commit := n.raft.CommitIndex()
	if commit == 0 {
		// raft starts every node at commit index 0, whatever its log
		// holds, until its leader's next commit: an empty log only is
		// truly at 0.
		return n.raft.LastIndex() == 0
	}
	var l raft.Log
	return n.logs.GetLog(commit, &l) == nil && l.Term >= term
}

// lastCommandAtOrBelow returns the index of the last command entry at or
// below index: the last entry a State applies. An entry no longer in the
// log (compacted into a snapshot) is taken as it is, as is index when more
// than maxReadIndexWalk entries before it change no state.
func (n *Node) lastCommandAtOrBelow(index uint64) uint64 {
	var l raft.Log
	for i := index; i > 0 && index-i < maxReadIndexWalk; i-- {
		if err := n.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand {
			return i
		}
	}
	return index
}
