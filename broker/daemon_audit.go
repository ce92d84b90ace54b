package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/cluster"
)

// CheckpointAudit anchors this node's audit log in the cluster until ctx
// ends. First, once this node's state is as new as the leader's, it checks
// its log against the checkpoints the cluster holds of it: a log that is
// shorter than its last checkpoint, or whose lines differ from what a
// checkpoint recorded, or whose checkpoint does not carry this node's
// HSM MAC, is broken: the log then refuses every line (so the node answers
// every request Unavailable) and the reason is logged as an error. Then it
// records the chain's head (AuditCheckpoint, with a MAC from the HSM) every
// AuditCheckpointInterval in which lines were written, and whenever the
// log signals that AuditCheckpointLines more were. See docs/SECURITY.md.
// Without an audit log it returns at once.
func (d *Daemon) CheckpointAudit(ctx context.Context) {
	s := d.svc
	log := s.cfg.AuditLog
	if log == nil {
		return
	}
	interval := d.cfg.AuditCheckpointInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	anchored := false
	s.auditAnchoring.Store(true)
	defer s.auditAnchoring.Store(false)
	var done uint64
	for {
		if !anchored {
			if anchored = d.anchorAudit(ctx); anchored {
				s.auditAnchoring.Store(false)
				// A restart finds its head checkpointed already (the last
				// run's final checkpoint): start from there, rather than
				// propose it again and have the cluster refuse it.
				done = d.recordedSeq()
			} else {
				// Not anchored yet (no leader to read the checkpoints
				// from): the node does not serve meanwhile, so retry soon.
				select {
				case <-ctx.Done():
					return
				case <-time.After(min(interval, 100*time.Millisecond)):
				}
				continue
			}
		}
		if anchored && log.Err() == nil {
			if seg, seq, head := log.Head(); seq > done {
				if err := d.checkpointAudit(ctx, seg, seq, head); err != nil {
					if ctx.Err() == nil {
						s.log.Warn("audit checkpoint not recorded; retrying", "seq", seq, "err", err)
					}
				} else {
					done = seq
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-log.Checkpoints():
		}
	}
}

// recordedSeq is the last seq the cluster holds a checkpoint of for this
// node's current audit chain, 0 if none.
func (d *Daemon) recordedSeq() uint64 {
	s := d.svc
	seg, _, _ := s.cfg.AuditLog.Head()
	for _, h := range s.node.State().AuditHeads(s.cfg.NodeID) {
		if h.Segment == seg {
			return h.Last.Seq
		}
	}
	return 0
}

// checkpointAudit records one chain head.
func (d *Daemon) checkpointAudit(ctx context.Context, segment string, seq uint64, head string) error {
	s := d.svc
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	// Lines other than intents are not synced one by one: a checkpoint
	// must not cover lines a power loss could still take.
	if err := s.cfg.AuditLog.Sync(); err != nil {
		return err
	}
	at := s.cfg.Now().UTC()
	mac, err := s.hsm.AuditMAC(ctx, audit.CheckpointMessage(s.cfg.NodeID, segment, seq, head, at))
	if err != nil {
		return err
	}
	_, err = s.apply(Internal(ctx, "audit-checkpoint"), &cluster.AuditCheckpoint{Node: s.cfg.NodeID, Segment: segment, Seq: seq, Head: head, MAC: mac, At: at})
	return err
}

// anchorAudit checks the log against this node's checkpoints, as described
// at CheckpointAudit. It reports whether the check ran (false: the state
// could not be brought up to date; try again).
func (d *Daemon) anchorAudit(ctx context.Context) bool {
	s := d.svc
	log := s.cfg.AuditLog
	cctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if err := s.linearize(cctx); err != nil {
		return false
	}
	seg, seq, contents := log.AtOpen()
	heads := s.node.State().AuditHeads(s.cfg.NodeID)
	cps, err := s.checkpointsOf(cctx, heads)
	if err != nil {
		return false
	}
	var mine []audit.Checkpoint
	for _, c := range cps {
		if c.Segment == seg {
			mine = append(mine, c)
		}
	}
	if len(mine) == 0 {
		if len(heads) > 0 {
			s.log.Error("AUDIT: this node's audit log starts a new chain while the cluster holds checkpoints of earlier ones; "+
				"unless an operator moved the earlier log aside, it was removed or replaced (hsmctl audit verify the earlier file)",
				"segment", seg, "earlier_chains", len(heads))
		}
		return true
	}
	var problems []string
	for _, c := range mine {
		if c.MAC == audit.MACInvalid {
			problems = append(problems, fmt.Sprintf("the checkpoint of seq %d does not carry this node's HSM MAC", c.Seq))
		}
	}
	switch {
	case contents == nil: // not a file (tests): only its length can be compared
		for _, c := range mine {
			if c.Seq > seq {
				problems = append(problems, fmt.Sprintf("the log ends at seq %d, before its checkpoint at seq %d", seq, c.Seq))
			}
		}
	default:
		rep, err := audit.VerifyAgainst(contents, mine)
		if err != nil {
			problems = append(problems, err.Error())
		}
		for _, p := range rep.Problems {
			if p.Kind != audit.ProblemIntent {
				problems = append(problems, p.String())
			}
		}
	}
	if len(problems) > 0 {
		err := fmt.Errorf("audit: the audit log does not match the cluster's checkpoints of it (%s); this node refuses every request: see docs/OPERATIONS.md", strings.Join(problems, "; "))
		s.log.Error("AUDIT CHAIN BROKEN: "+err.Error(), "path", log.Path(), "segment", seg)
		log.Fail(err)
	}
	return true
}
