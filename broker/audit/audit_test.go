package audit

import (
	"bytes"
	"errors"
	"fmt"
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
	r.Seq, r.Prev, r.Time = 3, lines2prev(t, lines[2]), time.Now().UTC()
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
