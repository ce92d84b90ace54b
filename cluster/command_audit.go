package cluster

import (
	"bytes"
	"cmp"
	"slices"
	"strings"
	"time"
)

// Audit checkpoints. Each node's audit log is a hash chain in a file on
// that node's host, which the host can cut or rewrite. Every so often the
// node records its chain's head here (AuditCheckpoint), with a MAC from
// its HSM: replicated to every member, where the host alone cannot change
// it. hsmctl audit verify checks a log against them; see docs/SECURITY.md.

// AuditMark is one checkpoint of a chain: the seq and hash of a line, the
// node's HSM MAC over them (audit.CheckpointMessage), and when it was made.
type AuditMark struct {
	Seq  uint64    `json:"seq"`
	Head string    `json:"head"`
	MAC  []byte    `json:"mac"`
	At   time.Time `json:"at"`
}

// AuditHead is what the cluster keeps of one chain (one segment of one
// node's log): its first checkpoint, which shows where the chain began,
// and its last, which shows how far it reached. Each checkpoint covers
// every line before it, since each line carries the hash of the one
// before.
type AuditHead struct {
	Node    string    `json:"node"`
	Segment string    `json:"segment"`
	First   AuditMark `json:"first"`
	Last    AuditMark `json:"last"`
}

// AuditCheckpoint records the head of a node's audit chain. Checkpoints of
// one chain only move forward: one whose seq is not past the last is
// refused, so that a chain's recorded reach cannot be wound back.
type AuditCheckpoint struct {
	Node    string    `json:"node"`
	Segment string    `json:"segment"`
	Seq     uint64    `json:"seq"`
	Head    string    `json:"head"`
	MAC     []byte    `json:"mac"`
	At      time.Time `json:"at"`
}

// Bounds on audit checkpoints: segments are hex ids of at most
// maxSegmentLen characters (as audit.Log makes them), heads SHA-256 hex,
// MACs at most maxAuditMACLen bytes; the cluster keeps at most
// maxAuditSegmentsPerNode chains per node (the oldest goes) and
// maxAuditHeads in all.
const (
	maxSegmentLen           = 64
	maxAuditMACLen          = 64
	maxAuditSegmentsPerNode = 64
	maxAuditHeads           = 4096
)

func (*AuditCheckpoint) Type() CommandType { return TypeAuditCheckpoint }

func (c *AuditCheckpoint) validate() error {
	if err := checkID("node", c.Node); err != nil {
		return err
	}
	if len(c.Segment) > maxSegmentLen || strings.Trim(c.Segment, "0123456789abcdef") != "" {
		return invalidCommand("segment must be at most %d lower-case hex digits", maxSegmentLen)
	}
	if len(c.Head) != 64 || strings.Trim(c.Head, "0123456789abcdef") != "" {
		return invalidCommand("head must be a SHA-256 hash in lower-case hex")
	}
	if c.Seq == 0 {
		return invalidCommand("seq is 0")
	}
	if len(c.MAC) == 0 || len(c.MAC) > maxAuditMACLen {
		return invalidCommand("mac must be 1 to %d bytes", maxAuditMACLen)
	}
	return checkTime("at", c.At, true)
}

// auditHeadKey is the AuditHeads key of a chain: segments hold no '/'.
func auditHeadKey(node, segment string) string { return node + "/" + segment }

func (c *AuditCheckpoint) apply(d *Data) (any, Event, error) {
	m := AuditMark{Seq: c.Seq, Head: c.Head, MAC: bytes.Clone(c.MAC), At: utc(c.At)}
	key := auditHeadKey(c.Node, c.Segment)
	h, ok := d.AuditHeads[key]
	if ok {
		if c.Seq <= h.Last.Seq {
			return nil, Event{}, invalidState("audit checkpoint of node %q segment %q at seq %d does not follow the last one, at seq %d", c.Node, c.Segment, c.Seq, h.Last.Seq)
		}
		h.Last = m
		return h.Clone(), Event{Type: TypeAuditCheckpoint}, nil
	}
	var mine []string
	for k, o := range d.AuditHeads {
		if o.Node == c.Node {
			mine = append(mine, k)
		}
	}
	if len(mine) >= maxAuditSegmentsPerNode {
		oldest := slices.MinFunc(mine, func(a, b string) int {
			return cmp.Or(d.AuditHeads[a].Last.At.Compare(d.AuditHeads[b].Last.At), strings.Compare(a, b))
		})
		delete(d.AuditHeads, oldest)
	} else if len(d.AuditHeads) >= maxAuditHeads {
		return nil, Event{}, invalidState("the cluster already keeps %d audit chains, the most it may", len(d.AuditHeads))
	}
	h = &AuditHead{Node: c.Node, Segment: c.Segment, First: m, Last: m}
	h.First.MAC = bytes.Clone(m.MAC)
	d.AuditHeads[key] = h
	return h.Clone(), Event{Type: TypeAuditCheckpoint}, nil
}

// Clone returns a deep copy of h.
func (h AuditHead) Clone() AuditHead {
	h.First.MAC, h.Last.MAC = bytes.Clone(h.First.MAC), bytes.Clone(h.Last.MAC)
	return h
}

// checkAuditHeads verifies and normalises the audit heads of a snapshot.
func checkAuditHeads(d *Data) error {
	if d.AuditHeads == nil {
		d.AuditHeads = map[string]*AuditHead{}
	}
	for k, h := range d.AuditHeads {
		if h == nil || auditHeadKey(h.Node, h.Segment) != k {
			return invalidCommand("audit head entry %q does not hold its chain", k)
		}
		for _, m := range []*AuditMark{&h.First, &h.Last} {
			c := AuditCheckpoint{Node: h.Node, Segment: h.Segment, Seq: m.Seq, Head: m.Head, MAC: m.MAC, At: m.At}
			if err := c.validate(); err != nil {
				return err
			}
			m.At = utc(m.At)
		}
		if h.First.Seq > h.Last.Seq {
			return invalidCommand("audit head %q: first checkpoint after the last", k)
		}
	}
	return nil
}

// digestAuditHeads adds the audit heads to a state digest; none add
// nothing, so that states without any digest as before.
func (e *digestEncoder) auditHeads(heads map[string]*AuditHead) {
	if len(heads) == 0 {
		return
	}
	e.uint(uint64(len(heads)))
	for _, k := range sortedKeys(heads) {
		h := heads[k]
		e.str(k)
		e.str(h.Node)
		e.str(h.Segment)
		for _, m := range []AuditMark{h.First, h.Last} {
			e.uint(m.Seq)
			e.str(m.Head)
			e.bytes(m.MAC)
			e.time(m.At)
		}
	}
}

// AuditHeads returns the audit chains the cluster keeps of node (of every
// node when node is ""), by node and then first checkpoint.
func (s *State) AuditHeads(node string) []AuditHead {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []AuditHead
	for _, h := range s.data.AuditHeads {
		if node == "" || h.Node == node {
			out = append(out, h.Clone())
		}
	}
	slices.SortFunc(out, func(a, b AuditHead) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), a.First.At.Compare(b.First.At), strings.Compare(a.Segment, b.Segment))
	})
	return out
}
