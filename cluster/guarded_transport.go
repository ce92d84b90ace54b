package cluster

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// guardedTransport is the node's Raft transport with its heartbeat fast
// path guarded. The transport calls raft's heartbeat handler on the
// connection's own goroutine, which raft's Shutdown does not wait for: a
// heartbeat that passed raft's own shutdown check could still be saving
// the term when Shutdown closed the store, and raft panics on that write
// ("failed to save current term: database not open"). stopHeartbeats
// refuses new heartbeats and waits for those under way, so the store is
// closed only after them.
//
// It also keeps what the followers' answers to this node's AppendEntries
// say of their logs (catch_up.go), and refuses an answer given in another
// node's name (answeredAs).
type guardedTransport struct {
	*raft.NetworkTransport
	mu        sync.RWMutex
	stopped   bool
	followers followerLogs
}

// AppendEntries sends the request and notes what a successful answer says
// of the follower's log.
func (g *guardedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := answeredAs(id, target, resp, g.NetworkTransport.AppendEntries(id, target, args, resp)); err != nil {
		return err
	}
	g.followers.appended(id, args, resp)
	return nil
}

// RequestVote sends the request; an answer in another node's name fails.
func (g *guardedTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return answeredAs(id, target, resp, g.NetworkTransport.RequestVote(id, target, args, resp))
}

// RequestPreVote sends the request; an answer in another node's name fails.
func (g *guardedTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return answeredAs(id, target, resp, g.NetworkTransport.RequestPreVote(id, target, args, resp))
}

// InstallSnapshot sends the snapshot; an answer in another node's name
// fails.
func (g *guardedTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return answeredAs(id, target, resp, g.NetworkTransport.InstallSnapshot(id, target, args, resp, data))
}

// TimeoutNow sends the request; an answer in another node's name fails.
func (g *guardedTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return answeredAs(id, target, resp, g.NetworkTransport.TimeoutNow(id, target, args, resp))
}

// answeredAs refuses an answer whose sender names another node than the
// one the request was for. raft refuses an address twice in its
// configuration, not two names for one node: a member added at another
// name of a member's address (a wrong raft_advertise) reaches that
// member, which answers in its own name, and without this check its
// answers would count for both, its vote in an election and its log in a
// quorum included. The node reached still acts on the request (a leader
// reached at another name of its own address steps down): this keeps the
// count honest, and the join's probe of the address (Node.ProbePeer) keeps
// such a member out. The sender's id is what the node answering says of
// itself; an answer without one (a raft older than 1.4) is taken as it
// is. sent is the request's own error, returned as it is: a request that
// failed has no answer to check.
func answeredAs(id raft.ServerID, target raft.ServerAddress, resp raft.WithRPCHeader, sent error) error {
	if sent != nil {
		return sent
	}
	from := resp.GetRPCHeader().ID
	if len(from) == 0 || bytes.Equal(from, []byte(id)) {
		return nil
	}
	return fmt.Errorf("cluster: raft address %s answered as node %.64q, not %q: two members share one node's address", target, from, id)
}

// SetHeartbeatHandler installs cb behind the guard.
func (g *guardedTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	g.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.mu.RLock()
		defer g.mu.RUnlock()
		if g.stopped {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		cb(rpc)
	})
}

// stopHeartbeats refuses heartbeats from now on and returns once none is
// being handled.
func (g *guardedTransport) stopHeartbeats() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}
