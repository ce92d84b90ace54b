package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A node joins as a non-voter and is made a voter once it has caught up
// (broker's promotion loop decides when, from CaughtUp and the node's own
// record). raft keeps each follower's match index to itself, so the leader
// learns it where raft does: from the followers' answers to its
// AppendEntries, which its transport carries. Each answer that succeeds
// says the follower's log holds the leader's, up to the request's last
// entry (or its previous entry, for a request without entries); the
// request also carries the leader's commit index when it was sent. A
// follower whose log reached that commit index holds everything the
// cluster had committed, and, as a voter, adds to the quorum of the next
// entry at once. The leader sends every follower a request at least every
// CommitTimeout, so the latest answer is at most that old while the
// follower answers.
//
// This relies on every AppendEntries going through Transport.AppendEntries:
// replication without the pipeline (MaxRPCsInFlight 1, node.go). raft's
// heartbeats also go that way, but carry no log position and are skipped.

// appendOutcome is what the leader last learned of one follower's log.
type appendOutcome struct {
	term     uint64    // the leader's term in the request
	at       time.Time // when the answer came
	caughtUp bool      // the log reached the request's commit index
}

// followerLogs holds the latest appendOutcome of every follower this node
// sent AppendEntries to as leader.
type followerLogs struct {
	mu   sync.Mutex
	last map[raft.ServerID]appendOutcome
}

// appended records a successful AppendEntries answer from id.
func (f *followerLogs) appended(id raft.ServerID, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if !resp.Success || (req.PrevLogEntry == 0 && len(req.Entries) == 0) {
		return // refused, or a heartbeat
	}
	match := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		match = req.Entries[n-1].Index
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.last = map[raft.ServerID]appendOutcome{}
	}
	f.last[id] = appendOutcome{term: req.Term, at: time.Now(), caughtUp: match >= req.LeaderCommitIndex}
}

func (f *followerLogs) outcome(id raft.ServerID) (appendOutcome, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.last[id]
	return o, ok
}

func (f *followerLogs) forget(id raft.ServerID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.last, id)
}

// CaughtUp reports whether this node, as leader, last heard from the
// member id within HeartbeatTimeout, in its current term, in an answer
// that showed id's log holding every entry committed when the request was
// sent. It is false on a node that does not lead, and for a member this
// leader has not replicated to yet.
func (n *Node) CaughtUp(id string) bool {
	if n.raft.State() != raft.Leader {
		return false
	}
	o, ok := n.trans.followers.outcome(raft.ServerID(id))
	return ok && o.caughtUp && o.term == n.raft.CurrentTerm() && time.Since(o.at) < n.cfg.HeartbeatTimeout
}

// Answered reports whether this node, as leader, had a successful answer
// to an AppendEntries from the member id, in its current term, within the
// last HeartbeatTimeout. The leader sends each member one at least every
// CommitTimeout, so a member that answers shows at once; right after an
// election, until it has answered, it does not.
func (n *Node) Answered(id string) bool {
	if n.raft.State() != raft.Leader {
		return false
	}
	o, ok := n.trans.followers.outcome(raft.ServerID(id))
	return ok && o.term == n.raft.CurrentTerm() && time.Since(o.at) < n.cfg.HeartbeatTimeout
}

// AddNonvoter adds a member that receives the log and serves, but neither
// votes nor counts toward a quorum, and waits for the configuration change
// to commit. If id is a member already, only its address changes. Leader
// only.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	// A member added again starts over: what an earlier member of that id
	// answered says nothing of this one.
	n.trans.followers.forget(raft.ServerID(id))
	return n.wait(ctx, n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx)))
}

// PromoteNonvoter makes the non-voter id, at raft address addr, a voter,
// and waits for the change to commit. The change applies only to the
// configuration in which it was found a non-voter at addr: a change made
// meanwhile (its removal, say) makes it fail rather than bring id back. It
// fails with ErrNotFound when id is not a member, and with ErrInvalidState
// when id is a voter already or has another address. Leader only.
func (n *Node) PromoteNonvoter(ctx context.Context, id, addr string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	cf := n.raft.GetConfiguration()
	if err := n.wait(ctx, cf); err != nil {
		return err
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) != id {
			continue
		}
		switch {
		case s.Suffrage == raft.Voter:
			return invalidState("node %q is a voter already", id)
		case string(s.Address) != addr:
			return invalidState("node %q is at raft address %s, not %s", id, s.Address, addr)
		}
		return n.wait(ctx, n.raft.AddVoter(s.ID, s.Address, cf.Index(), enqueueTimeout(ctx)))
	}
	return notFound("node %q", id)
}
