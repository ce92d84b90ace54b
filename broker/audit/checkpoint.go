package audit

import (
	"encoding/binary"
	"time"
)

// Checkpoint is a chain head a node recorded outside its own host: through
// Raft, in the replicated state of every member (see docs/SECURITY.md). A
// log must contain the line with the checkpoint's seq, with that hash; so
// a log cut back before it, started after it, or rewritten up to it, is
// found by VerifyAgainst.
type Checkpoint struct {
	Node    string
	Segment string
	Seq     uint64
	Head    string // the hash of the line with seq Seq
	At      time.Time
	// MAC is what the node that made the checkpoint said of its MAC when
	// the checkpoint was fetched: MACValid, MACInvalid or MACUnchecked.
	MAC string
}

// MAC verdicts of a fetched checkpoint.
const (
	MACValid     = "valid"
	MACInvalid   = "invalid"
	MACUnchecked = "unchecked"
)

// CheckpointMessage is the byte string a node MACs with its HSM audit key
// for a checkpoint: a fixed label, then node, segment, seq, head and time,
// each length-prefixed, so that no two checkpoints share a message.
func CheckpointMessage(node, segment string, seq uint64, head string, at time.Time) []byte {
	var b []byte
	for _, s := range []string{"hsmbroker/audit-checkpoint/v1", node, segment, head} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	return b
}
