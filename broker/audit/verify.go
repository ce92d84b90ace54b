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
)

// Report describes a verified log.
type Report struct {
	// Lines is the number of lines checked.
	Lines int
	// FirstSeq and LastSeq are the seq of the first and last lines.
	FirstSeq, LastSeq uint64
	// LastHash is the hash of the last line: compare it with a copy kept
	// elsewhere to see that no line was removed from the end.
	LastHash string
	// Continues is set when the first line continues a chain from an
	// earlier file (a rotated log) rather than starting one; its prev is
	// then StartPrev and cannot be checked from this file alone.
	Continues bool
	StartPrev string
}

// BrokenError names the first line (1-based) where the chain breaks.
type BrokenError struct {
	Line   int
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// maxLine bounds one line when verifying.
const maxLine = 16 << 20

// Verify reads a whole audit log and checks every line's own hash, that
// each line's prev is the hash of the line before it, and that seq counts
// up by one. It returns a *BrokenError for the first line that fails, or
// another error if r cannot be read.
func Verify(r io.Reader) (Report, error) {
	var rep Report
	br := bufio.NewReaderSize(r, 64<<10)
	prev := ""
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(full) <= maxLine {
				line, err = br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
			if len(full) > maxLine {
				return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("longer than %d bytes", maxLine)}
			}
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return rep, &BrokenError{Line: n, Reason: "the last line is incomplete (no newline)"}
			}
			return rep, nil
		}
		if err != nil {
			return rep, err
		}
		rec, h, perr := parseLine(line[:len(line)-1])
		if perr != nil {
			return rep, &BrokenError{Line: n, Reason: perr.Error()}
		}
		if n == 1 {
			rep.FirstSeq = rec.Seq
			if rec.Prev != Genesis {
				rep.Continues, rep.StartPrev = true, rec.Prev
			}
		} else {
			if rec.Prev != prev {
				return rep, &BrokenError{Line: n, Reason: "its prev is not the hash of the line before it: a line was changed, removed or inserted"}
			}
			if rec.Seq != rep.LastSeq+1 {
				return rep, &BrokenError{Line: n, Reason: fmt.Sprintf("seq %d follows seq %d", rec.Seq, rep.LastSeq)}
			}
		}
		rep.Lines, rep.LastSeq, rep.LastHash = n, rec.Seq, h
		prev = h
	}
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
	if err != nil || len(want) != sha256.Size {
		return rec, "", errors.New("not an audit record: its hash is not 64 hexadecimal digits")
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
