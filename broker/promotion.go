package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
)

// A node joins as a non-voter (JoinCluster): it receives the log, and
// serves once ready, but counts toward no quorum, so a joiner that never
// catches up (a slow disk, a large snapshot, an HSM that cannot take the
// domain key, a process that died) cannot cost the cluster its quorum.
// Whichever node leads makes a non-voter a voter once both hold:
//
//   - its own record says its HSM answers and holds the domain key, and
//     was rewritten recently (recordHealthy). The node writes it itself,
//     once it has imported and checked the domain key, through the
//     leader; the leader's own record of a joiner says "joining".
//   - the leader's latest AppendEntries to it, in this term and within a
//     heartbeat timeout, found its log holding every entry committed when
//     the request was sent (cluster.Node.CaughtUp).
//
// Both must have held in every check for the settle time (PromoteSettle):
// a node that catches up for a moment and falls behind again, or whose HSM
// answers only now and then, does not become a voter, whose absence would
// then count against the quorum. A check that finds either untrue starts
// the wait again.
//
// The loop runs on every node and acts only on the leader, so a non-voter
// whose admitting leader was lost is promoted by the next one, after the
// settle time of its own. One that never catches up stays a non-voter
// until it does or is removed.

// DefaultPromoteCheck is how often the leader looks for non-voters to
// promote.
const DefaultPromoteCheck = time.Second

// DefaultPromoteSettle is how long a non-voter stays ready before its
// promotion: Consul's autopilot waits as long for a new server to be
// stable.
const DefaultPromoteSettle = 10 * time.Second

// PromoteNonvoters makes caught-up non-voters voters, checking every
// PromoteCheck while this node leads, until ctx ends. Each promotion is
// audited as internal:promote, naming the node. It logs, once each time
// it changes, what a non-voter still waits for.
func (d *Daemon) PromoteNonvoters(ctx context.Context) {
	s := d.svc
	p := promotions{settle: d.cfg.PromoteSettle, waiting: map[string]string{}, ready: map[string]readySince{}}
	t := time.NewTicker(d.cfg.PromoteCheck)
	defer t.Stop()
	for {
		s.promoteNonvoters(ctx, &p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// promotions is what PromoteNonvoters keeps from one check to the next.
type promotions struct {
	settle time.Duration
	// waiting: what each non-voter waited for when last logged.
	waiting map[string]string
	// ready: since when each non-voter has been found ready in every
	// check, in term, at the Raft address it has now.
	ready map[string]readySince
	term  uint64
}

// readySince is when a non-voter was first found ready, at which address.
type readySince struct {
	at      time.Time
	address string
}

// promoteNonvoters is one round of PromoteNonvoters.
func (s *Service) promoteNonvoters(ctx context.Context, p *promotions) {
	waiting := p.waiting
	if !s.node.IsLeader() {
		clear(waiting)
		clear(p.ready)
		return
	}
	stats := s.node.Stats()
	if stats.Term != p.term {
		// Leadership lost and won again between two checks: what was
		// seen in the earlier term does not count.
		clear(p.ready)
		p.term = stats.Term
	}
	seen := map[string]bool{}
	for _, srv := range stats.Servers {
		if srv.Voter {
			continue
		}
		seen[srv.ID] = true
		why, err := s.promote(ctx, srv, p)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			why = "a promotion that succeeds; the last one failed: " + err.Error()
		case why == "":
			s.log.Info("non-voter caught up; it is a voter now", "node", srv.ID)
			delete(waiting, srv.ID)
			continue
		}
		if waiting[srv.ID] != why {
			s.log.Info("non-voter not made a voter yet", "node", srv.ID, "waiting_for", why)
			waiting[srv.ID] = why
		}
	}
	maps.DeleteFunc(waiting, func(id, _ string) bool { return !seen[id] })
	maps.DeleteFunc(p.ready, func(id string, _ readySince) bool { return !seen[id] })
}

// settled records that the non-voter srv was found ready at now, and
// reports whether it has been ready for the settle time: in every check
// since, at the Raft address it has now. A new address (the id removed and
// joined again from elsewhere) starts the time again.
func (p *promotions) settled(srv cluster.Server, now time.Time) bool {
	since, ok := p.ready[srv.ID]
	if !ok || since.address != srv.Address {
		since = readySince{at: now, address: srv.Address}
		p.ready[srv.ID] = since
	}
	return now.Sub(since.at) >= p.settle
}

// promote makes the non-voter srv a voter if nothing is left to wait for,
// and otherwise says what is.
func (s *Service) promote(ctx context.Context, srv cluster.Server, p *promotions) (waitingFor string, err error) {
	// The record is read only once this node's state holds every entry it
	// knows to be committed, those of earlier terms included: a removal
	// the previous leader committed, and lost its leadership before taking
	// out of Raft, is in that state, and a node marked removed is not
	// made a voter. Until this leader commits an entry of its own term it
	// cannot know what is committed, and promotes nobody. (Not under the
	// suffrage lock, which a removal would wait for meanwhile: a removal
	// on this leader applies here before it lets the lock go.)
	rctx, rcancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	err = s.readIndexHere(rctx, false)
	rcancel()
	if err != nil {
		delete(p.ready, srv.ID)
		return "this leader to apply every committed entry (" + err.Error() + ")", nil
	}
	s.suffrage.Lock()
	defer s.suffrage.Unlock()
	rec, ok := s.node.State().Node(srv.ID)
	switch {
	case !ok:
		waitingFor = "its record, which it does not have (an earlier join stopped before it was recorded, or it is being removed)"
	case !s.recordHealthy(rec):
		waitingFor = "its own record to show its HSM answering and holding the domain key (it has not completed its join, or it is down)"
	case !s.node.CaughtUp(srv.ID):
		waitingFor = "its Raft log to catch up with the leader's"
	}
	if waitingFor != "" {
		delete(p.ready, srv.ID)
		return waitingFor, nil
	}
	if !p.settled(srv, time.Now()) {
		return fmt.Sprintf("it to stay caught up and healthy for %s, the settle time, in every check", p.settle), nil
	}
	if s.node.Term() != p.term {
		// Leadership lost and won again since this round began, before
		// its read index: another leader may have committed a removal
		// meanwhile.
		return "a leader that has applied every committed entry of its term", nil
	}
	ctx = Internal(ctx, "promote")
	nameObject(ctx, "node:"+srv.ID)
	rq := requestOf(ctx)
	if err := s.auditAhead(rq); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	err = s.node.PromoteNonvoter(ctx, srv.ID, srv.Address)
	_ = s.endGRPC(rq, err) // the intent is written: a failed outcome line is logged
	if errors.Is(err, cluster.ErrNotLeader) {
		return "a leader", nil // the next one promotes it
	}
	return "", err
}
