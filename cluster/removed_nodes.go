package cluster

// A node removed from the cluster keeps a valid node certificate until it
// expires: removal must withdraw what that certificate may do. The ids of
// removed nodes are kept in the replicated state (Data.RemovedNodes), and
//   - a removed node's record is never written again but by the leader
//     admitting it through a new join (UpsertNode.Admit), which clears the
//     mark first, before the node is added back to Raft;
//   - every node refuses Raft connections from a removed node's
//     certificate (Node.admitsRaftPeer), live ones included;
//   - the broker gives a certificate of a node outside the Raft
//     configuration no member's calls (broker.certIdentity).

// MaxRemovedNodes bounds the removed node ids a cluster keeps; past it,
// the lowest id is forgotten.
const MaxRemovedNodes = 1024

// NodeRemoved reports whether id names a node removed from the cluster
// and not admitted again since.
func (s *State) NodeRemoved(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.RemovedNodes[id]
}

// markRemoved records id as removed, within MaxRemovedNodes.
func (d *Data) markRemoved(id string) {
	if d.RemovedNodes == nil {
		d.RemovedNodes = map[string]bool{}
	}
	if !d.RemovedNodes[id] && len(d.RemovedNodes) >= MaxRemovedNodes {
		delete(d.RemovedNodes, sortedKeys(d.RemovedNodes)[0]) // the lowest id
	}
	d.RemovedNodes[id] = true
}

func cloneRemoved(m map[string]bool) map[string]bool {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]bool, len(m))
	for id := range m {
		c[id] = true
	}
	return c
}

// checkRemovedNodes validates a snapshot's removed node ids.
func checkRemovedNodes(d *Data) error {
	if len(d.RemovedNodes) > MaxRemovedNodes {
		return invalidCommand("snapshot holds %d removed node ids, more than %d", len(d.RemovedNodes), MaxRemovedNodes)
	}
	for id, removed := range d.RemovedNodes {
		if !removed {
			return invalidCommand("removed node entry %q is false", id)
		}
		if err := checkID("removed node id", id); err != nil {
			return err
		}
	}
	return nil
}

// removedNodes adds the removed node ids to the state digest; nothing
// when there are none, so the digest of a cluster that never removed a
// node is what it was before they were kept.
func (e *digestEncoder) removedNodes(d *Data) {
	if len(d.RemovedNodes) == 0 {
		return
	}
	e.str("removed_nodes")
	e.uint(uint64(len(d.RemovedNodes)))
	for _, id := range sortedKeys(d.RemovedNodes) {
		e.str(id)
	}
}
