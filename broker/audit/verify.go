package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Report describes a verified log.
type Report struct {
	// Lines is the number of lines checked.
	Lines int
	// FirstSeq and LastSeq are the seq of the first and last lines.
	FirstSeq, LastSeq uint64
	// LastHash is the hash of the last line: compare it with a copy kept
	// elsewhere (a checkpoint) to see that no line was removed from the
	// end.
	LastHash string
	// Node and Segment are the node that wrote the log (that of its last
	// line) and the chain's segment id ("" for lines written before
	// segments existed).
	Node, Segment string
	// Continues is set when the first line continues a chain from an
	// earlier file (a rotated log) rather than starting one; its prev is
	// then StartPrev and cannot be checked from this file alone.
	Continues bool
	StartPrev string
	// Problems are what is wrong with a log whose chain is intact: intents
	// without an outcome, and, with VerifyAgainst, what the checkpoints
	// show is missing or rewritten. A log is OK only without problems.
	Problems []Problem
	// CheckpointedSeq is the last line a checkpoint covers (VerifyAgainst),
	// made at CheckpointedAt; lines after it are not covered yet.
	CheckpointedSeq uint64
	CheckpointedAt  time.Time
}

// OK reports whether the log verified without problems.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Problem kinds.
const (
	// ProblemIntent: an intent line that no later line of the file gives
	// the outcome of (the node stopped between the two, or the outcome is
	// in a later file).
	ProblemIntent = "intent without outcome"
	// ProblemCutEnd: a checkpoint covers lines past the end of the file.
	ProblemCutEnd = "lines cut from the end"
	// ProblemHeadRemoved: a checkpoint covers lines before the start of
	// the file, or the file of a checkpointed chain does not start at seq 1.
	ProblemHeadRemoved = "head removed"
	// ProblemRewritten: a line's hash differs from the one a checkpoint
	// recorded for its seq, or the cluster has checkpoints for the node
	// but none for this file's segment.
	ProblemRewritten = "rewritten chain"
	// ProblemForged: a checkpoint's MAC does not verify in the node's HSM.
	ProblemForged = "forged checkpoint"
	// ProblemUnanchored: checkpoints were given, none of them of the log's
	// node.
	ProblemUnanchored = "no checkpoint"
)

// Problem is one finding of Verify or VerifyAgainst.
type Problem struct {
	Kind   string `json:"kind"`
	Line   int    `json:"line,omitempty"` // 1-based line of the file, 0 when none
	Seq    uint64 `json:"seq,omitempty"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s at line %d (seq %d): %s", p.Kind, p.Line, p.Seq, p.Detail)
	}
	return fmt.Sprintf("%s: %s", p.Kind, p.Detail)
}

// BrokenError names the first line (1-based) where the chain breaks.
type BrokenError struct {
	Line   int
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// maxOpenIntents bounds the intents Verify tracks at once, and
// maxProblems the problems it lists, whatever the file holds.
const (
	maxOpenIntents = 1 << 16
	maxProblems    = 1000
)

// Verify reads a whole audit log and checks every line's own hash, that
// each line's prev is the hash of the line before it, that seq counts up
// by one, that the segment does not change and that no line is longer
// than MaxLine. It returns a *BrokenError for the first line that fails,
// or another error if r cannot be read. A log whose chain holds may still
// have problems (Report.Problems): intent lines without an outcome.
func Verify(r io.Reader) (Report, error) {
	return VerifyAgainst(r, nil)
}

// VerifyAgainst is Verify, and also checks the log against checkpoints of
// its chain's head (those of other nodes and segments are ignored, except
// to notice that the log's own segment has none): each checkpoint's seq
// must be in the file with the hash it recorded, and the file must reach
// the last checkpoint. Lines written after the last checkpoint are not
// covered: nothing can tell whether some of them were cut.
func VerifyAgainst(r io.Reader, cps []Checkpoint) (Report, error) {
	var rep Report
	br := bufio.NewReaderSize(r, 64<<10)
	prev := ""
	// The hashes the checkpoints name, by seq.
	want := map[uint64]string{}
	open := map[uint64]Problem{}
	var openOrder []uint64
	intentsDropped := 0
	addProblem := func(p Problem) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, p)
		}
	}
	found := map[uint64]bool{}
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(full) <= MaxLine {
				line, err = br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
			if len(full) > MaxLine {
				return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("longer than %d bytes, which no writer writes", MaxLine)}
			}
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return rep, &BrokenError{Line: n, Reason: "the last line is incomplete (no newline)"}
			}
			break
		}
		if err != nil {
			return rep, err
		}
		if len(line) > MaxLine {
			return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("longer than %d bytes, which no writer writes", MaxLine)}
		}
		rec, h, perr := parseLine(line[:len(line)-1])
		if perr != nil {
			return rep, &BrokenError{Line: n, Reason: perr.Error()}
		}
		if n == 1 {
			rep.FirstSeq, rep.Segment = rec.Seq, rec.Segment
			if rec.Prev != Genesis {
				rep.Continues, rep.StartPrev = true, rec.Prev
			}
			for _, c := range cps {
				if c.Node == rec.Node && c.Segment == rec.Segment {
					want[c.Seq] = c.Head
				}
			}
		} else {
			if rec.Prev != prev {
				return rep, &BrokenError{Line: n, Reason: "its prev is not the hash of the line before it: a line was changed, removed or inserted"}
			}
			if rec.Seq != rep.LastSeq+1 {
				return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("seq %d follows seq %d", rec.Seq, rep.LastSeq)}
			}
			if rec.Segment != rep.Segment {
				return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("segment %q follows segment %q in one chain", rec.Segment, rep.Segment)}
			}
		}
		if head, ok := want[rec.Seq]; ok {
			found[rec.Seq] = true
			if head != h {
				addProblem(Problem{Kind: ProblemRewritten, Line: n, Seq: rec.Seq,
					Detail: fmt.Sprintf("the line's hash is %s, but the cluster's checkpoint recorded %s for this seq: the chain was rewritten up to here", h, head)})
			}
		}
		if rec.Result == ResultIntent {
			if len(open) < maxOpenIntents {
				open[rec.Seq] = Problem{Kind: ProblemIntent, Line: n, Seq: rec.Seq,
					Detail: fmt.Sprintf("%s by %q on key %q (request %q) at %s: check in the cluster's state whether it took effect (docs/OPERATIONS.md)",
						rec.Operation, rec.Principal, firstNonEmpty(rec.KeyID, rec.KeyRef), rec.RequestID, rec.Time.Format(time.RFC3339))}
				openOrder = append(openOrder, rec.Seq)
			} else {
				intentsDropped++
			}
		}
		if rec.Intent != 0 {
			delete(open, rec.Intent)
		}
		rep.Lines, rep.LastSeq, rep.LastHash, rep.Node = n, rec.Seq, h, rec.Node
		prev = h
	}
	for _, seq := range openOrder {
		if p, ok := open[seq]; ok {
			addProblem(p)
		}
	}
	if intentsDropped > 0 {
		addProblem(Problem{Kind: ProblemIntent, Detail: fmt.Sprintf("%d more intents were not tracked", intentsDropped)})
	}
	if cps != nil && rep.Lines > 0 {
		checkCheckpoints(&rep, cps, found, addProblem)
	}
	return rep, nil
}

// checkCheckpoints reports what the checkpoints of the log's node show is
// missing from it.
func checkCheckpoints(rep *Report, cps []Checkpoint, found map[uint64]bool, add func(Problem)) {
	var mine []Checkpoint
	others := 0
	for _, c := range cps {
		switch {
		case c.Node != rep.Node:
		case c.Segment == rep.Segment:
			mine = append(mine, c)
		default:
			others++
		}
	}
	if len(mine) == 0 {
		if others > 0 {
			add(Problem{Kind: ProblemRewritten, Detail: fmt.Sprintf("the cluster holds %d checkpoints of node %s, none of them of this log's segment %q: this chain is not the one the node checkpointed", others, rep.Node, rep.Segment)})
		} else {
			add(Problem{Kind: ProblemUnanchored, Detail: fmt.Sprintf("the cluster holds no checkpoint of node %s: nothing anchors this log (a node checkpoints within seconds of writing; a log whose node name was rewritten has none)", rep.Node)})
		}
		return
	}
	for _, c := range mine {
		if c.Seq <= rep.LastSeq && c.Seq >= rep.FirstSeq && found[c.Seq] && c.Seq > rep.CheckpointedSeq {
			rep.CheckpointedSeq, rep.CheckpointedAt = c.Seq, c.At
		}
	}
	var cut, head *Checkpoint
	for i, c := range mine {
		if c.MAC == MACInvalid {
			add(Problem{Kind: ProblemForged, Seq: c.Seq, Detail: fmt.Sprintf("the checkpoint of seq %d (%s) does not carry node %s's MAC: it was not made by that node", c.Seq, c.At.Format(time.RFC3339), c.Node)})
		}
		switch {
		case c.Seq > rep.LastSeq:
			if cut == nil || c.Seq > cut.Seq {
				cut = &mine[i]
			}
		case c.Seq < rep.FirstSeq:
			if head == nil || c.Seq < head.Seq {
				head = &mine[i]
			}
		case !found[c.Seq]:
			add(Problem{Kind: ProblemRewritten, Seq: c.Seq, Detail: fmt.Sprintf("no line with the checkpointed seq %d", c.Seq)})
		}
	}
	if head == nil && rep.FirstSeq > 1 {
		// No checkpoint comes before the file's first line, but a chain
		// starts at seq 1 (Genesis), and the cluster checkpointed this one.
		add(Problem{Kind: ProblemHeadRemoved, Seq: rep.FirstSeq, Detail: fmt.Sprintf("the log starts at seq %d, but its chain starts at seq 1: the lines before seq %d are missing (removed, or in an earlier rotated file: verify the files joined in order)", rep.FirstSeq, rep.FirstSeq)})
	}
	if head != nil {
		add(Problem{Kind: ProblemHeadRemoved, Seq: head.Seq, Detail: fmt.Sprintf("the log starts at seq %d, but the checkpoint of %s covers seq %d: the lines before seq %d are missing (removed, or in an earlier rotated file: verify the files joined in order)", rep.FirstSeq, head.At.Format(time.RFC3339), head.Seq, rep.FirstSeq)})
	}
	if cut != nil {
		add(Problem{Kind: ProblemCutEnd, Seq: cut.Seq, Detail: fmt.Sprintf("the log ends at seq %d, but the checkpoint of %s covers seq %d: at least %d lines are missing from the end", rep.LastSeq, cut.At.Format(time.RFC3339), cut.Seq, cut.Seq-rep.LastSeq)})
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parseLine checks a line's own hash and returns its record and hash.
func parseLine(line []byte) (Record, string, error) {
	var rec Record
	if len(line) <= suffixLen || !bytes.HasPrefix(line[len(line)-suffixLen:], []byte(hashPrefix)) ||
		!bytes.HasSuffix(line, []byte(`"}`)) {
		return rec, "", errors.New("not an audit record: it does not end with its hash")
	}
	h := string(line[len(line)-suffixLen+len(hashPrefix) : len(line)-2])
	want, err := hex.DecodeString(h)
	if err != nil || len(want) != sha256.Size || hex.EncodeToString(want) != h {
		// Lowercase only, as written: the next line's prev is compared as
		// text, so an uppercase last hash would otherwise pass unnoticed.
		return rec, "", errors.New("not an audit record: its hash is not 64 lowercase hexadecimal digits")
	}
	body := make([]byte, 0, len(line)-suffixLen+1)
	body = append(body, line[:len(line)-suffixLen]...)
	body = append(body, '}')
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], want) {
		return rec, "", errors.New("its hash does not match its content: the line was altered")
	}
	if err := json.Unmarshal(body, &rec); err != nil {
		return rec, "", fmt.Errorf("not an audit record: %v", err)
	}
	if len(rec.Prev) != 64 {
		return rec, "", errors.New("not an audit record: prev is not a hash")
	}
	if rec.Seq == 0 {
		return rec, "", errors.New("not an audit record: seq is 0")
	}
	return rec, h, nil
}
