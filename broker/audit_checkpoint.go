package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// When a node checkpoints its audit chain: every AuditCheckpointInterval
// while lines were written since the last checkpoint, and as soon as
// AuditCheckpointLines lines were (audit.Options.CheckpointEvery).
const (
	AuditCheckpointInterval = 10 * time.Second
	AuditCheckpointLines    = 1000
)

// CheckpointAudit anchors this node's audit log in the cluster until ctx
// ends. First, once this node's state is as new as the leader's, it checks
// its log against the checkpoints the cluster holds of it: a log that is
// shorter than its last checkpoint, or whose lines differ from what a
// checkpoint recorded, or whose checkpoint does not carry this node's
// HSM MAC, is broken: the log then refuses every line (so the node answers
// every request Unavailable) and the reason is logged as an error. Then it
// records the chain's head (AuditCheckpoint, with a MAC from the HSM) every
// interval in which lines were written, and whenever the log signals that
// AuditCheckpointLines more were. See docs/SECURITY.md.
func (s *Service) CheckpointAudit(ctx context.Context, interval time.Duration) {
	log := s.cfg.AuditLog
	if log == nil {
		return
	}
	if interval <= 0 {
		interval = AuditCheckpointInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	anchored := false
	s.auditAnchoring.Store(true)
	defer s.auditAnchoring.Store(false)
	var done uint64
	for {
		if !anchored {
			if anchored = s.anchorAudit(ctx); anchored {
				s.auditAnchoring.Store(false)
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
				if err := s.checkpointAudit(ctx, seg, seq, head); err != nil {
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

// checkpointAudit records one chain head.
func (s *Service) checkpointAudit(ctx context.Context, segment string, seq uint64, head string) error {
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
func (s *Service) anchorAudit(ctx context.Context) bool {
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

// checkpointsOf lists the checkpoints of heads, each with the verdict of
// this node's HSM on its MAC when this node made it.
func (s *Service) checkpointsOf(ctx context.Context, heads []cluster.AuditHead) ([]audit.Checkpoint, error) {
	var out []audit.Checkpoint
	for _, h := range heads {
		marks := []cluster.AuditMark{h.First}
		if h.Last.Seq != h.First.Seq {
			marks = append(marks, h.Last)
		}
		for _, m := range marks {
			c := audit.Checkpoint{Node: h.Node, Segment: h.Segment, Seq: m.Seq, Head: m.Head, At: m.At, MAC: audit.MACUnchecked}
			if h.Node == s.cfg.NodeID {
				ok, err := s.hsm.VerifyAuditMAC(ctx, audit.CheckpointMessage(h.Node, h.Segment, m.Seq, m.Head, m.At), m.MAC)
				if err != nil {
					return nil, err
				}
				c.MAC = audit.MACInvalid
				if ok {
					c.MAC = audit.MACValid
				}
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// ListAuditCheckpoints returns the checkpoints the cluster keeps of one
// node's audit chains, or of every node's; this node's HSM checks the MACs
// of its own.
func (s *Service) ListAuditCheckpoints(ctx context.Context, req *pb.ListAuditCheckpointsRequest) (*pb.ListAuditCheckpointsResponse, error) {
	if len(req.GetNodeId()) > 256 {
		return nil, errInvalidArg(ExcValidation, "invalid NodeId: must be at most 256 bytes")
	}
	heads := s.node.State().AuditHeads(req.GetNodeId())
	cps, err := s.checkpointsOf(ctx, heads)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, newError(codes.Unavailable, ExcDependencyTimeout, "node %s cannot check checkpoint MACs in its HSM: %v", s.cfg.NodeID, err)
	}
	resp := &pb.ListAuditCheckpointsResponse{NodeId: s.cfg.NodeID}
	i := 0
	for _, h := range heads {
		for j, m := range []cluster.AuditMark{h.First, h.Last} {
			if j == 1 && h.Last.Seq == h.First.Seq {
				continue
			}
			c := cps[i]
			i++
			resp.Checkpoints = append(resp.Checkpoints, &pb.AuditCheckpoint{NodeId: h.Node, Segment: h.Segment, Seq: m.Seq, Head: m.Head,
				Mac: m.MAC, Time: timestamppb.New(m.At), First: j == 0, MacVerdict: macVerdicts[c.MAC]})
		}
	}
	return resp, nil
}

var macVerdicts = map[string]pb.AuditMacVerdict{
	audit.MACValid:     pb.AuditMacVerdict_AUDIT_MAC_VERDICT_VALID,
	audit.MACInvalid:   pb.AuditMacVerdict_AUDIT_MAC_VERDICT_INVALID,
	audit.MACUnchecked: pb.AuditMacVerdict_AUDIT_MAC_VERDICT_UNCHECKED,
}

// AuditLogHead is this node's audit chain head (see audit.Log.Head); zeros
// without an audit log.
func (s *Service) AuditLogHead() (segment string, seq uint64, hash string) {
	if s.cfg.AuditLog == nil {
		return "", 0, ""
	}
	return s.cfg.AuditLog.Head()
}

// AuditLogErr is why this node's audit log refuses lines, nil while it
// accepts them (or without an audit log).
func (s *Service) AuditLogErr() error {
	if s.cfg.AuditLog == nil {
		return nil
	}
	return s.cfg.AuditLog.Err()
}
