package cluster

import (
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
// say of their logs (catch_up.go).
type guardedTransport struct {
	*raft.NetworkTransport
	mu        sync.RWMutex
	stopped   bool
	followers followerLogs
}

// AppendEntries sends the request and notes what a successful answer says
// of the follower's log.
func (g *guardedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := g.NetworkTransport.AppendEntries(id, target, args, resp); err != nil {
		return err
	}
	g.followers.appended(id, args, resp)
	return nil
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
