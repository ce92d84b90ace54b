package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest/gate"
)

func rec(i int) *Record {
	return &Record{Node: "n1", Front: "grpc", RequestID: fmt.Sprintf("r%d", i), Principal: "alice", Role: "user",
		Operation: "kms:Encrypt", KeyID: "k", Decision: "allow", Result: "OK", Code: "OK"}
}

func writeN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(rec(i), i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAppendVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != FileMode {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	// Reopening continues the chain.
	l, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 3)
	last, seq := l.LastHash()
	_ = l.Close()
	b, _ := os.ReadFile(path)
	rep, err := Verify(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 8 || rep.FirstSeq != 1 || rep.LastSeq != 8 || seq != 8 || rep.LastHash != last || rep.Continues {
		t.Fatalf("report %+v, last %s/%d", rep, last, seq)
	}
}

// TestVerifyNamesTamperedLine: any change to any line is found at that line
// (its own hash), or, when the hash was recomputed, at the next line.
func TestVerifyNamesTamperedLine(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	writeN(t, l, 6)
	lines := strings.SplitAfter(buf.String(), "\n")[:6]
	join := func(ls []string) *strings.Reader { return strings.NewReader(strings.Join(ls, "")) }
	for i := range lines {
		for _, edit := range []struct{ from, to string }{{`"alice"`, `"mallory"`}, {`"allow"`, `"deny!"`}, {`"seq":`, `"seq": `}} {
			ls := append([]string(nil), lines...)
			ls[i] = strings.Replace(ls[i], edit.from, edit.to, 1)
			_, err := Verify(join(ls))
			var be *BrokenError
			if !errors.As(err, &be) || be.Line != i+1 {
				t.Errorf("line %d edited %q: %v", i+1, edit.to, err)
			}
		}
	}
	// A removed line breaks the next one's prev; so does swapping two.
	ls := append(append([]string(nil), lines[:2]...), lines[3:]...)
	if _, err := Verify(join(ls)); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("removed line: %v", err)
	}
	ls = append([]string(nil), lines...)
	ls[3], ls[4] = ls[4], ls[3]
	if _, err := Verify(join(ls)); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("swapped lines: %v", err)
	}
	// A line rewritten with a fresh hash is caught by its successor.
	r := rec(99)
	r.Seq, r.Prev, r.Time, r.Segment = 3, lines2prev(t, lines[2]), time.Now().UTC(), segOf(t, lines[0])
	forged, _, _ := encode(r)
	ls = append([]string(nil), lines...)
	ls[2] = string(forged)
	if _, err := Verify(join(ls)); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("rehashed line: %v", err)
	}
	// A log that starts mid-chain (rotated) verifies, and says so.
	rep, err := Verify(join(lines[2:]))
	if err != nil || !rep.Continues || rep.FirstSeq != 3 {
		t.Errorf("rotated log: %+v %v", rep, err)
	}
	if _, err := Verify(strings.NewReader(strings.TrimSuffix(buf.String(), "\n"))); err == nil {
		t.Error("a log without its last newline verified")
	}
}

func lines2prev(t *testing.T, line string) string {
	t.Helper()
	r, _, err := parseLine([]byte(strings.TrimSuffix(line, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return r.Prev
}

// TestOpenCutsTornLine: a crash mid-write leaves part of a line, which
// answered nothing; the next start cuts it and continues the chain.
func TestOpenCutsTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := Open(path, Options{})
	writeN(t, l, 2)
	_ = l.Close()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"seq":3,"time":"2026`)
	_ = f.Close()
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 1)
	_ = l.Close()
	b, _ := os.ReadFile(path)
	if rep, err := Verify(bytes.NewReader(b)); err != nil || rep.Lines != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	// A last line that is no record cannot be continued.
	_ = os.WriteFile(path, []byte("not an audit line\n"), 0o600)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("open of a foreign file: %v", err)
	}
}

type flakyWriter struct {
	bytes.Buffer
	fail bool
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.fail {
		return 0, errors.New("disk full")
	}
	return w.Buffer.Write(p)
}

// TestFailedWriteLeavesChainIntact: a line that could not be written is
// not part of the chain; the next one continues from the last written.
func TestFailedWriteLeavesChainIntact(t *testing.T) {
	w := &flakyWriter{}
	l := New(w, Options{})
	writeN(t, l, 2)
	w.fail = true
	if _, err := l.Append(rec(9), false); err == nil {
		t.Fatal("append succeeded on a failing writer")
	}
	w.fail = false
	writeN(t, l, 2)
	if rep, err := Verify(bytes.NewReader(w.Bytes())); err != nil || rep.Lines != 4 || rep.LastSeq != 4 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestFullDisk writes to /dev/full, where every write fails with ENOSPC.
func TestFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		gate.Missing(t, "no /dev/full: %v", err)
	}
	l, err := Open("/dev/full", Options{})
	if err != nil {
		gate.Missing(t, "cannot open /dev/full: %v", err)
	}
	defer l.Close()
	if _, err := l.Append(rec(1), true); err == nil {
		t.Fatal("append to /dev/full succeeded")
	}
}

func TestConcurrentAppends(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := l.Append(rec(g*100+i), false); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if rep, err := Verify(bytes.NewReader(buf.Bytes())); err != nil || rep.Lines != 400 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// FuzzVerify: Verify never panics on arbitrary bytes.
func FuzzVerify(f *testing.F) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	for i := range 3 {
		_, _ = l.Append(rec(i), false)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Verify(bytes.NewReader(b))
	})
}

// TestLineBound: whatever a request puts into a record (an 8 MB encryption
// context of characters JSON escapes six-fold, megabytes of principal,
// request id, key reference and reason), the line stays within MaxLine,
// says what was cut, and the log reopens and verifies.
func TestLineBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("<", 8<<20)
	r := rec(1)
	r.EncryptionContext = map[string]string{"k": huge}
	r.Principal, r.RequestID, r.KeyRef, r.Reason = huge[:1<<20], huge[:2<<20], huge[:1<<20], huge[:1<<20]
	r.KeyIDs = []string{huge[:1000], "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	if _, err := l.Append(r, true); err != nil {
		t.Fatal(err)
	}
	// The largest valid context, escaped six-fold, with every field at its
	// bound, fits.
	big := map[string]string{}
	for i := range 60 {
		big[fmt.Sprintf("k%02d", i)] = strings.Repeat("\x01", 120)
	}
	r = rec(2)
	r.EncryptionContext = big
	r.Reason, r.RequestID, r.Principal, r.KeyRef, r.Peer, r.Node = huge, huge, huge, huge, huge, huge
	if _, err := l.Append(r, false); err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 1)
	_ = l.Close()
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")[:3]
	for i, line := range lines {
		if len(line) > MaxLine {
			t.Fatalf("line %d has %d bytes, more than %d", i+1, len(line), MaxLine)
		}
	}
	for _, want := range []string{`"encryption_context_omitted":"invalid EncryptionContext: must be at most 8192 bytes encoded`, "truncated: 2097152 bytes, sha256", "[2 more key ids]"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line 1 lacks %q", want)
		}
	}
	if !strings.Contains(lines[1], `"k59":"`) || strings.Contains(lines[1], "encryption_context_omitted") {
		t.Errorf("line 2 lost its valid context")
	}
	l, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after huge requests: %v", err)
	}
	writeN(t, l, 1)
	_ = l.Close()
	b, _ = os.ReadFile(path)
	if rep, err := Verify(bytes.NewReader(b)); err != nil || rep.Lines != 4 || !rep.OK() {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestLineShowsNoTerminalControls: a field holding a character that acts
// on a terminal, other than C0 which JSON escapes, is written with it as
// its \uXXXX text: DEL, C1 (U+009B) and bidirectional formatting
// characters (U+202E); other text, right-to-left scripts included, is
// written as it is, and the chain verifies.
func TestLineShowsNoTerminalControls(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	r := rec(1)
	r.KeyRef = "tde://v1/x\x1b[31mRED\u009b2J\u202eexe.txt\x7f"
	r.Operation = "/hsmbroker.v1.KeyService/N\u2066ope"
	r.Principal = "מפתח"
	if _, err := l.Append(r, false); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if strings.ContainsAny(line, "\u009b\u202e\u2066\x7f\x1b") {
		t.Fatalf("the line holds a raw terminal control: %q", line)
	}
	var got Record
	if err := json.Unmarshal([]byte(line[:strings.LastIndex(line, `,"hash":`)]+"}"), &got); err != nil {
		t.Fatal(err)
	}
	if got.KeyRef != `tde://v1/x`+"\x1b"+`[31mRED\u009b2J\u202eexe.txt\u007f` || got.Operation != `/hsmbroker.v1.KeyService/N\u2066ope` || got.Principal != "מפתח" {
		t.Fatalf("fields as written: %q %q %q", got.KeyRef, got.Operation, got.Principal)
	}
	if rep, err := Verify(bytes.NewReader(buf.Bytes())); err != nil || !rep.OK() {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestOverlongLineIsBroken: a line longer than MaxLine was not written by
// a Log: Verify and Open both call the chain broken.
func TestOverlongLineIsBroken(t *testing.T) {
	r := rec(1)
	r.Seq, r.Prev, r.Time = 1, Genesis, time.Now().UTC()
	body, _ := json.Marshal(r)
	body = append(body[:len(body)-1], `,"pad":"`+strings.Repeat("x", MaxLine)+`"}`...)
	sum := sha256.Sum256(body)
	line := string(body[:len(body)-1]) + hashPrefix + hex.EncodeToString(sum[:]) + "\"}\n"
	_, err := Verify(strings.NewReader(line))
	var be *BrokenError
	if !errors.As(err, &be) || be.Line != 1 || !strings.Contains(be.Reason, "longer than") {
		t.Fatalf("overlong line: %v", err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	_ = os.WriteFile(path, []byte(line), 0o600)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("open: %v", err)
	}
}

// TestOpenRefusesBrokenChain: a log altered anywhere, not only at its last
// line, is not continued.
func TestOpenRefusesBrokenChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := Open(path, Options{})
	writeN(t, l, 5)
	_ = l.Close()
	b, _ := os.ReadFile(path)
	_ = os.WriteFile(path, bytes.Replace(b, []byte(`"r1"`), []byte(`"r9"`), 1), 0o600)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("open of an altered log: %v", err)
	}
}

// TestIntentWithoutOutcome: an intent line whose outcome never came (the
// node stopped in between; here, the log is cut after the intent) is a
// problem Verify names; with its outcome it is none.
func TestIntentWithoutOutcome(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	writeN(t, l, 2)
	in := rec(7)
	in.Operation, in.Result, in.Code, in.KeyID = "kms:CreateKey", ResultIntent, "", "k-new"
	seq, err := l.Append(in, true)
	if err != nil {
		t.Fatal(err)
	}
	cut := buf.Len()
	out := rec(7)
	out.Operation, out.Intent = "kms:CreateKey", seq
	if _, err := l.Append(out, false); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil || !rep.OK() {
		t.Fatalf("intent with outcome: %+v %v", rep, err)
	}
	rep, err = Verify(bytes.NewReader(buf.Bytes()[:cut]))
	if err != nil || rep.OK() || len(rep.Problems) != 1 {
		t.Fatalf("intent without outcome: %+v %v", rep, err)
	}
	if p := rep.Problems[0]; p.Kind != ProblemIntent || p.Line != 3 || p.Seq != seq || !strings.Contains(p.Detail, "k-new") ||
		!strings.Contains(p.String(), "intent without outcome") {
		t.Fatalf("problem %+v", p)
	}
}

// TestVerifyAgainstCheckpoints: cutting lines from the end, removing the
// head, and rewriting the whole chain with fresh hashes all pass the plain
// chain check, and are each named against the checkpoints.
func TestVerifyAgainstCheckpoints(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	writeN(t, l, 10)
	seg, _, _ := l.Head()
	lines := strings.SplitAfter(buf.String(), "\n")[:10]
	hashOf := func(i int) string { // of line i, 1-based
		r, h, err := parseLine([]byte(strings.TrimSuffix(lines[i-1], "\n")))
		if err != nil || r.Seq != uint64(i) {
			t.Fatal(err)
		}
		return h
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cps := []Checkpoint{
		{Node: "n1", Segment: seg, Seq: 2, Head: hashOf(2), At: at, MAC: MACValid},
		{Node: "n1", Segment: seg, Seq: 8, Head: hashOf(8), At: at, MAC: MACValid},
		{Node: "n2", Segment: "other", Seq: 99, Head: Genesis, At: at, MAC: MACUnchecked},
	}
	check := func(name string, log string, cps []Checkpoint, kinds ...string) {
		t.Helper()
		rep, err := VerifyAgainst(strings.NewReader(log), cps)
		if err != nil {
			t.Fatalf("%s: chain check failed: %v", name, err)
		}
		var got []string
		for _, p := range rep.Problems {
			got = append(got, p.Kind)
		}
		if strings.Join(got, ",") != strings.Join(kinds, ",") {
			t.Fatalf("%s: problems %v, want %v", name, rep.Problems, kinds)
		}
	}
	check("intact", strings.Join(lines, ""), cps)
	check("cut after the last checkpoint", strings.Join(lines[:9], ""), cps)
	check("cut from the end", strings.Join(lines[:6], ""), cps, ProblemCutEnd)
	check("head removed", strings.Join(lines[4:], ""), cps, ProblemHeadRemoved)
	check("first line removed, before the first checkpoint", strings.Join(lines[1:], ""), cps, ProblemHeadRemoved)
	// A hash in uppercase is not the line's hash as written, even on the
	// last line, which no later prev checks.
	last := lines[len(lines)-1]
	i := strings.LastIndex(last, `"hash":"`) + len(`"hash":"`)
	if _, err := VerifyAgainst(strings.NewReader(strings.Join(lines[:len(lines)-1], "")+last[:i]+strings.ToUpper(last[i:i+64])+last[i+64:]), cps); err == nil {
		t.Fatal("a last line with its hash in uppercase verified")
	}
	// The whole chain rewritten with fresh hashes: a changed line 1 and
	// every later line rehashed verifies as a chain, but not against the
	// checkpoints.
	var forged bytes.Buffer
	fl := New(&forged, Options{})
	for i := range 10 {
		r := rec(i)
		if i == 0 {
			r.Principal = "mallory"
		}
		r.Segment = seg
		if _, err := fl.Append(r, false); err != nil {
			t.Fatal(err)
		}
	}
	// Same segment (a forger copies it): hash mismatch at each checkpoint.
	rewritten := strings.ReplaceAll(forged.String(), `"segment":"`+segOf(t, forged.String())+`"`, `"segment":"`+seg+`"`)
	rewritten = rehash(t, rewritten)
	check("rewritten, same segment", rewritten, cps, ProblemRewritten, ProblemRewritten)
	// A fresh segment: the node's checkpoints name another chain.
	check("rewritten, new segment", forged.String(), cps, ProblemRewritten)
	// A checkpoint whose MAC the node refuses.
	bad := append([]Checkpoint(nil), cps...)
	bad[1].MAC = MACInvalid
	check("forged checkpoint", strings.Join(lines, ""), bad, ProblemForged)
}

func segOf(t *testing.T, log string) string {
	t.Helper()
	r, _, err := parseLine([]byte(log[:strings.IndexByte(log, '\n')]))
	if err != nil {
		t.Fatal(err)
	}
	return r.Segment
}

// rehash recomputes every line's prev and hash, as a forger who holds no
// key can.
func rehash(t *testing.T, log string) string {
	t.Helper()
	var out strings.Builder
	prev := Genesis
	for _, line := range strings.SplitAfter(log, "\n") {
		if line == "" {
			continue
		}
		var r Record
		body := line[:len(line)-suffixLen-1] + "}"
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		r.Prev = prev
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		prev = hex.EncodeToString(sum[:])
		out.WriteString(string(b[:len(b)-1]) + hashPrefix + prev + "\"}\n")
	}
	return out.String()
}

// TestCheckpointSignal: the log signals every CheckpointEvery lines,
// without blocking when nobody listens.
func TestCheckpointSignal(t *testing.T) {
	l := New(&bytes.Buffer{}, Options{CheckpointEvery: 3})
	writeN(t, l, 2)
	select {
	case <-l.Checkpoints():
		t.Fatal("signalled after 2 lines")
	default:
	}
	writeN(t, l, 7) // signals at 3, 6 and 9: one pending at most
	select {
	case <-l.Checkpoints():
	default:
		t.Fatal("no signal after 9 lines")
	}
	select {
	case <-l.Checkpoints():
		t.Fatal("more than one signal pending")
	default:
	}
}

// TestAtOpen: what a node checks against the cluster's checkpoints is the
// log as it was opened, not the lines it has written since.
func TestAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if seg, seq, r := l.AtOpen(); seg != "" || seq != 0 || r != nil {
		t.Fatalf("an empty log at open: %q %d %v", seg, seq, r)
	}
	writeN(t, l, 3)
	_ = l.Close()
	before, _ := os.ReadFile(path)
	if l, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeN(t, l, 2)
	seg, seq, r := l.AtOpen()
	headSeg, headSeq, _ := l.Head()
	if seg != headSeg || seq != 3 || headSeq != 5 || r == nil {
		t.Fatalf("AtOpen = %q %d, head %q %d", seg, seq, headSeg, headSeq)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, before) {
		t.Fatalf("AtOpen's contents are not the file as opened (%d bytes, want %d): %v", len(got), len(before), err)
	}
}
