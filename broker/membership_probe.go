package broker

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
)

// A node learns that it was removed from the configuration entry that
// removes it, which the leader sends it once, as best it can, and never
// again. A node that missed it (down at the time, or the send failed)
// keeps a configuration with itself in it, finds no leader, and would
// say only that, or that it is catching up, for ever. While it hears
// from no leader, it asks the members it knows of whether it is still
// one: a member that follows a leader and does not list it answers that.

// membershipProbeEvery spaces the probes; membershipProbeTimeout bounds
// each call, and membershipProbeMaxAnswer a member's status answer (a
// NodeStatus entry is a few hundred bytes).
const (
	membershipProbeEvery     = 5 * time.Second
	membershipProbeTimeout   = 2 * time.Second
	membershipProbeMaxAnswer = 1 << 20
)

// removedNote is what a member said: this node is not in the
// configuration of member peer, which follows leader.
type removedNote struct{ peer, leader string }

func (n *removedNote) String() string {
	if n.peer == n.leader {
		return fmt.Sprintf("the leader %s does not list it", n.leader)
	}
	return fmt.Sprintf("member %s, which follows the leader %s, does not list it", n.peer, n.leader)
}

// membershipProbe holds the last probe's finding.
type membershipProbe struct {
	running atomic.Bool
	last    atomic.Int64 // unix nanoseconds of the last start
	note    atomic.Pointer[removedNote]
}

// removedByMembers is the note of the last probe, nil unless a member
// said this node is not one. It starts a probe (in the background, one
// at a time, at most every membershipProbeEvery) while inDoubt; when not,
// the note is dropped.
func (s *Service) removedByMembers(inDoubt bool) *removedNote {
	p := &s.membership
	if !inDoubt {
		p.note.Store(nil)
		return nil
	}
	now := time.Now()
	if now.UnixNano()-p.last.Load() >= int64(membershipProbeEvery) && p.running.CompareAndSwap(false, true) {
		p.last.Store(now.UnixNano())
		go func() {
			defer p.running.Store(false)
			s.probeMembership()
		}()
	}
	return p.note.Load()
}

// knownRemoved says why this node knows it was removed, "" if it does
// not: a member said so, or the configuration it applied no longer names
// it although it was a member (caught up) since it started. A node
// catching up after its join may apply configurations without itself
// first, so that alone does not settle it.
func (s *Service) knownRemoved() string {
	if n := s.membership.note.Load(); n != nil {
		return n.String()
	}
	if s.caughtUp.Load() && s.node.Unlisted() {
		return "the cluster configuration it applied no longer names it"
	}
	return ""
}

// probeMembership asks each member this node has a record of, then each
// of Config.Peers, for the cluster's status, and records the first answer
// that settles it: a member with a leader that lists this node clears the
// note, one that does not list it sets it. Members without a leader
// settle nothing.
func (s *Service) probeMembership() {
	self := s.node.ID()
	var addrs []string
	for _, n := range s.node.State().Nodes() {
		if n.ID != self && n.GRPCAddr != "" {
			addrs = append(addrs, n.GRPCAddr)
		}
	}
	for _, a := range s.cfg.Peers {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	for _, addr := range addrs {
		conn, err := s.peerConn(addr)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), membershipProbeTimeout)
		st, err := pb.NewClusterServiceClient(conn).GetClusterStatus(ctx, &pb.GetClusterStatusRequest{},
			grpc.MaxCallRecvMsgSize(membershipProbeMaxAnswer))
		cancel()
		if err != nil {
			continue
		}
		note, settled := settleMembership(self, st)
		if !settled {
			continue
		}
		s.membership.note.Store(note)
		if note != nil {
			s.log.Warn("a member says this node is not in the cluster; it was removed", "member", note.peer, "leader", note.leader)
		}
		return
	}
}

// settleMembership reads one member's status answer for node self:
// settled when the member follows a leader, with a note when it does not
// list self. The ids go into readiness and the log, so an answer whose
// ids are not well-formed settles nothing; nor does one from self.
func settleMembership(self string, st *pb.GetClusterStatusResponse) (*removedNote, bool) {
	if !nodeIDPattern.MatchString(st.GetLeaderId()) || !nodeIDPattern.MatchString(st.GetNodeId()) || st.GetNodeId() == self {
		return nil, false
	}
	if slices.ContainsFunc(st.GetNodes(), func(ns *pb.NodeStatus) bool { return ns.GetId() == self }) {
		return nil, true
	}
	return &removedNote{peer: st.GetNodeId(), leader: st.GetLeaderId()}, true
}
