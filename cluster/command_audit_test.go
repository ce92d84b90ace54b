package cluster

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func checkpoint(node, seg string, seq uint64) *AuditCheckpoint {
	return &AuditCheckpoint{Node: node, Segment: seg, Seq: seq, Head: fmt.Sprintf("%064x", seq), MAC: []byte{byte(seq), 1}, At: t0.Add(time.Duration(seq) * time.Second)}
}

// TestAuditCheckpoints: a chain's checkpoints keep its first and move its
// last forward only; each node keeps a bounded number of chains; the
// heads survive a snapshot and count in the digest.
func TestAuditCheckpoints(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	before := a.f.State().Digest()
	a.must(t, checkpoint("n1", "aa", 3))
	if a.f.State().Digest() == before {
		t.Fatal("a checkpoint does not change the digest")
	}
	res := a.must(t, checkpoint("n1", "aa", 9)).(AuditHead)
	if res.First.Seq != 3 || res.Last.Seq != 9 || res.Last.Head != fmt.Sprintf("%064x", 9) {
		t.Fatalf("head %+v", res)
	}
	for _, seq := range []uint64{9, 4} {
		_, err := a.apply(t, checkpoint("n1", "aa", seq))
		wantErrIs(t, err, ErrInvalidState)
	}
	a.must(t, checkpoint("n2", "bb", 1))
	if hs := a.f.State().AuditHeads("n1"); len(hs) != 1 || hs[0].Last.Seq != 9 {
		t.Fatalf("n1's heads %+v", hs)
	}
	if hs := a.f.State().AuditHeads(""); len(hs) != 2 {
		t.Fatalf("all heads %+v", hs)
	}
	// Bounded per node: the chain checkpointed longest ago goes.
	for i := range maxAuditSegmentsPerNode {
		a.must(t, checkpoint("n3", fmt.Sprintf("%02x", i), uint64(10+i)))
	}
	a.must(t, checkpoint("n3", "ff", 500))
	hs := a.f.State().AuditHeads("n3")
	if len(hs) != maxAuditSegmentsPerNode || hs[0].Segment != "01" || hs[len(hs)-1].Segment != "ff" {
		t.Fatalf("%d heads of n3, first %s last %s", len(hs), hs[0].Segment, hs[len(hs)-1].Segment)
	}
	// A snapshot holds them.
	b := snapshotBytes(t, a.f)
	dst := NewFSM(nil, nil)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if dst.State().Digest() != a.f.State().Digest() || len(dst.State().AuditHeads("")) != 2+maxAuditSegmentsPerNode {
		t.Fatal("audit heads lost in a snapshot")
	}
	// A copy is the caller's own.
	hs[0].Last.MAC[0] ^= 1
	if bytes.Equal(a.f.State().AuditHeads("n3")[0].Last.MAC, hs[0].Last.MAC) {
		t.Fatal("AuditHeads shares its MACs with the state")
	}
}

func TestAuditCheckpointValidation(t *testing.T) {
	for name, c := range map[string]*AuditCheckpoint{
		"no node":         {Segment: "aa", Seq: 1, Head: strings.Repeat("0", 64), MAC: []byte{1}, At: t0},
		"segment not hex": {Node: "n1", Segment: "a/b", Seq: 1, Head: strings.Repeat("0", 64), MAC: []byte{1}, At: t0},
		"long segment":    {Node: "n1", Segment: strings.Repeat("a", 65), Seq: 1, Head: strings.Repeat("0", 64), MAC: []byte{1}, At: t0},
		"short head":      {Node: "n1", Segment: "aa", Seq: 1, Head: "00", MAC: []byte{1}, At: t0},
		"seq 0":           {Node: "n1", Segment: "aa", Head: strings.Repeat("0", 64), MAC: []byte{1}, At: t0},
		"no mac":          {Node: "n1", Segment: "aa", Seq: 1, Head: strings.Repeat("0", 64), At: t0},
		"long mac":        {Node: "n1", Segment: "aa", Seq: 1, Head: strings.Repeat("0", 64), MAC: make([]byte, 65), At: t0},
		"no time":         {Node: "n1", Segment: "aa", Seq: 1, Head: strings.Repeat("0", 64), MAC: []byte{1}},
	} {
		if _, err := EncodeCommand(c); !errorsIs(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	b, err := EncodeCommand(checkpoint("n1", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := DecodeCommand(b); err != nil || c.Type() != TypeAuditCheckpoint || c.Type().String() != "AuditCheckpoint" {
		t.Fatalf("decode: %v %v", c, err)
	}
}
