package broker

import (
	"context"
	"errors"
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
