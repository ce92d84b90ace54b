package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// gatedWriter records each write's lines. A write that starts while the
// writer is held waits for release; one that starts while it is set to
// fail fails.
type gatedWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []int // lines per write, successful or not
	hold   chan struct{}
	fail   bool
}

func (w *gatedWriter) holdNext() {
	w.mu.Lock()
	w.hold = make(chan struct{})
	w.mu.Unlock()
}

func (w *gatedWriter) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hold != nil {
		close(w.hold)
		w.hold = nil
	}
}

func (w *gatedWriter) setFail(fail bool) {
	w.mu.Lock()
	w.fail = fail
	w.mu.Unlock()
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	hold, fail := w.hold, w.fail
	w.mu.Unlock()
	if hold != nil {
		<-hold
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Count(p, []byte{'\n'}))
	if fail {
		return 0, errors.New("disk full")
	}
	return w.buf.Write(p)
}

func (w *gatedWriter) snapshot() ([]byte, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes()), append([]int(nil), w.writes...)
}

// waitQueued waits until n lines wait in l's open batch, behind a write
// under way.
func waitQueued(t *testing.T, l *Log, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		queued := 0
		if l.open != nil {
			queued = bytes.Count(l.open.buf, []byte{'\n'})
		}
		writing := l.writing
		l.mu.Unlock()
		if writing && queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lines queued (write under way: %v), want %d", queued, writing, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type appendResult struct {
	seq uint64
	err error
}

// appendAsync starts one Append per record and returns their results, in
// the order of recs.
func appendAsync(l *Log, recs []*Record, sync func(i int) bool) []chan appendResult {
	out := make([]chan appendResult, len(recs))
	for i, r := range recs {
		out[i] = make(chan appendResult, 1)
		go func() {
			seq, err := l.Append(r, sync(i))
			out[i] <- appendResult{seq, err}
		}()
	}
	return out
}

func recs(from, n int) []*Record {
	var rs []*Record
	for i := range n {
		rs = append(rs, rec(from+i))
	}
	return rs
}

// TestGroupCommitConcurrent: many concurrent appenders, some asking for a
// sync, on a real file: every Append gets its own seq, the line with that
// seq is its record, and the file verifies as one chain.
func TestGroupCommitConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 40
	seqs := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := rec(g*1000 + i)
				seq, err := l.Append(r, i%5 == 0)
				if err != nil {
					t.Error(err)
					return
				}
				seqs[g] = append(seqs[g], seq)
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	rep, err := Verify(bytes.NewReader(b))
	if err != nil || rep.Lines != goroutines*each || rep.LastSeq != goroutines*each {
		t.Fatalf("%+v %v", rep, err)
	}
	bySeq := map[uint64]string{}
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		r, _, err := parseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		bySeq[r.Seq] = r.RequestID
	}
	for g := range goroutines {
		for i, seq := range seqs[g] {
			if want := fmt.Sprintf("r%d", g*1000+i); bySeq[seq] != want {
				t.Fatalf("Append of %s returned seq %d, whose line is %s", want, seq, bySeq[seq])
			}
		}
	}
}

// TestGroupCommitOneWrite: the lines that arrive while a write is under
// way go out together in the next write, each Append returning only once
// that write is done.
func TestGroupCommitOneWrite(t *testing.T) {
	w := &gatedWriter{}
	l := New(w, Options{})
	w.holdNext()
	first := appendAsync(l, recs(0, 1), func(int) bool { return false })
	waitQueued(t, l, 0)
	rest := appendAsync(l, recs(1, 6), func(int) bool { return false })
	waitQueued(t, l, 6)
	for _, c := range rest {
		select {
		case r := <-c:
			t.Fatalf("an Append returned (%+v) before its line was written", r)
		default:
		}
	}
	w.release()
	seen := map[uint64]bool{}
	for _, c := range append(first, rest...) {
		r := <-c
		if r.err != nil || seen[r.seq] {
			t.Fatalf("%+v", r)
		}
		seen[r.seq] = true
	}
	b, writes := w.snapshot()
	if len(writes) != 2 || writes[0] != 1 || writes[1] != 6 {
		t.Fatalf("lines per write %v, want [1 6]", writes)
	}
	if rep, err := Verify(bytes.NewReader(b)); err != nil || rep.Lines != 7 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestGroupCommitFailedBatch: a write that fails fails every Append whose
// line it carried, and nothing of it stays in the chain; so do the lines
// chained behind a failed write, waiting for the next; the lines appended
// afterwards continue the chain from the last line written.
func TestGroupCommitFailedBatch(t *testing.T) {
	w := &gatedWriter{}
	l := New(w, Options{})
	writeN(t, l, 2)
	never := func(int) bool { return false }

	// A batch of 5 lines fails as a whole.
	w.holdNext()
	first := appendAsync(l, recs(10, 1), never)
	waitQueued(t, l, 0)
	batch := appendAsync(l, recs(11, 5), never)
	waitQueued(t, l, 5)
	w.setFail(true) // for the batch's write, which starts once first's ends
	w.release()
	if r := <-first[0]; r.err != nil || r.seq != 3 {
		t.Fatalf("first: %+v", r)
	}
	for i, c := range batch {
		if r := <-c; r.err == nil {
			t.Fatalf("line %d of a failed batch was acknowledged with seq %d", i, r.seq)
		}
	}

	// A failing write fails the lines waiting behind it too: they were
	// chained onto its line, so they are never written.
	w.holdNext()
	head := appendAsync(l, recs(20, 1), func(int) bool { return true })
	waitQueued(t, l, 0)
	behind := appendAsync(l, recs(21, 3), never)
	waitQueued(t, l, 3)
	w.release()
	for _, c := range append(head, behind...) {
		if r := <-c; r.err == nil {
			t.Fatalf("a line written or chained behind a failed write was acknowledged: %+v", r)
		}
	}
	if _, seq := l.LastHash(); seq != 3 {
		t.Fatalf("head seq %d after failed writes, want 3", seq)
	}

	w.setFail(false)
	writeN(t, l, 2)
	b, writes := w.snapshot()
	if fmt.Sprint(writes) != "[1 1 1 5 1 1 1]" {
		t.Errorf("lines per write %v, want [1 1 1 5 1 1 1]", writes)
	}
	rep, err := Verify(bytes.NewReader(b))
	if err != nil || rep.Lines != 5 || rep.LastSeq != 5 {
		t.Fatalf("%+v %v (writes %v)", rep, err, writes)
	}
}

// TestGroupCommitSync: a batch is synced once when any of its lines asked
// for it, after the write and before any of its Appends returns; a batch
// that none asked for is not synced.
func TestGroupCommitSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var (
		mu     sync.Mutex
		synced []int64 // the file's size at each sync
		hold   = make(chan struct{})
	)
	fileSync := l.syncFile
	l.syncFile = func() error {
		mu.Lock()
		h := hold
		mu.Unlock()
		if h != nil {
			<-h
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		mu.Lock()
		synced = append(synced, st.Size())
		mu.Unlock()
		return fileSync()
	}
	first := appendAsync(l, recs(0, 1), func(int) bool { return true })
	waitQueued(t, l, 0)
	// Five lines wait behind the sync; only the fourth asks for one.
	batch := appendAsync(l, recs(1, 5), func(i int) bool { return i == 3 })
	waitQueued(t, l, 5)
	for _, c := range append(first, batch...) {
		select {
		case r := <-c:
			t.Fatalf("an Append returned (%+v) before its line was synced", r)
		default:
		}
	}
	mu.Lock()
	close(hold)
	hold = nil
	mu.Unlock()
	for _, c := range append(first, batch...) {
		if r := <-c; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if _, err := l.Append(rec(9), false); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	mu.Lock()
	defer mu.Unlock()
	if len(synced) != 2 {
		t.Fatalf("synced %d times (%v), want 2: one per batch that asked", len(synced), synced)
	}
	b, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines[0]) != int(synced[0]) || synced[1] != st.Size()-int64(len(lines[6])) {
		t.Fatalf("syncs at sizes %v; lines of %d bytes", synced, len(lines[0]))
	}
	if rep, err := Verify(bytes.NewReader(b)); err != nil || rep.Lines != 7 {
		t.Fatalf("%+v %v", rep, err)
	}
}
