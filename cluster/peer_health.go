package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// peerHealth is what this node, while it leads, learns of the other
// servers from its heartbeats: raft reports each failed heartbeat
// (FailedHeartbeatObservation) and the first one that succeeds after
// failures (ResumedHeartbeatObservation). A change of leader starts over.
type peerHealth struct {
	mu      sync.Mutex
	failing map[string]bool
}

// watchHeartbeats follows the leader's heartbeat observations until the
// node shuts down.
func (n *Node) watchHeartbeats() {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	go func() {
		defer n.raft.DeregisterObserver(obs)
		for {
			select {
			case <-n.ctx.Done():
				return
			case o := <-ch:
				h := &n.peers
				h.mu.Lock()
				switch d := o.Data.(type) {
				case raft.FailedHeartbeatObservation:
					if h.failing == nil {
						h.failing = map[string]bool{}
					}
					h.failing[string(d.PeerID)] = true
				case raft.ResumedHeartbeatObservation:
					delete(h.failing, string(d.PeerID))
				case raft.LeaderObservation:
					h.failing = nil
				}
				h.mu.Unlock()
			}
		}
	}()
}

// UnreachablePeers returns the servers this node's heartbeats, as leader,
// failed to reach last time they were tried (empty on a follower, and
// for a while after this node became leader).
func (n *Node) UnreachablePeers() map[string]bool {
	h := &n.peers
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]bool, len(h.failing))
	for id := range h.failing {
		out[id] = true
	}
	return out
}
