package audit

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend: 16 goroutines appending to one file log, as the
// broker's concurrent requests do, with group commit (Append called
// concurrently) against one line per write (each Append made under a
// lock the appenders share, which is what the log did before group
// commit: a write, and a sync when asked, per line). The two alternate in
// 200 ms windows on the same file; b.N scales the number of windows. It
// reports lines per second of each and their ratio, for lines that ask to
// be synced (a change's intent) and lines that do not (a cryptographic
// call's outcome).
func BenchmarkAppend(b *testing.B) {
	for _, synced := range []bool{true, false} {
		name := "nosync"
		if synced {
			name = "sync"
		}
		b.Run(name, func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "audit.log"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var serial sync.Mutex
			grouped := func() error {
				_, err := l.Append(rec(1), synced)
				return err
			}
			oneByOne := func() error {
				serial.Lock()
				defer serial.Unlock()
				_, err := l.Append(rec(1), synced)
				return err
			}
			var nGrouped, nSerial int64
			for range 2 * b.N {
				nGrouped += appendWindow(b, 16, 200*time.Millisecond, grouped)
				nSerial += appendWindow(b, 16, 200*time.Millisecond, oneByOne)
			}
			secs := float64(2*b.N) * 0.2
			b.ReportMetric(float64(nGrouped)/secs, "lines/s-grouped")
			b.ReportMetric(float64(nSerial)/secs, "lines/s-one-by-one")
			b.ReportMetric(float64(nGrouped)/float64(nSerial), "ratio")
		})
	}
}

// appendWindow runs op from n goroutines for d and counts the calls.
func appendWindow(b *testing.B, n int, d time.Duration, op func() error) int64 {
	var count atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	return count.Load()
}

// BenchmarkEncode: the line encoder (appendRecord) against encoding/json's
// Marshal, which it replaced, on the line of a typical Encrypt, the two
// alternating in blocks of 2000 lines; b.N scales the number of blocks. It
// reports the median nanoseconds per line of each block and their ratio.
func BenchmarkEncode(b *testing.B) {
	r := &Record{Seq: 12345, Time: time.Now().UTC(), Node: "node1", Front: "grpc", RequestID: "0123456789abcdef",
		Peer: "127.0.0.1:54321", Principal: "hsmbroker:user/bench", Role: "user", Operation: "kms:Encrypt",
		KeyID: "1234abcd-12ab-34cd-56ef-1234567890ab", KeyRef: "alias/bench", Decision: "allow", Result: "OK", Code: "OK",
		EncryptionContext: map[string]string{"tenant": "acme", "purpose": "bench"},
		Segment:           "0123456789abcdef0123456789abcdef", Prev: Genesis}
	var sink int
	block := func(f func()) float64 {
		t0 := time.Now()
		for range 2000 {
			f()
		}
		return float64(time.Since(t0).Nanoseconds()) / 2000
	}
	var ours, marshal []float64
	for range 10 * b.N {
		ours = append(ours, block(func() {
			line, _ := appendRecord(make([]byte, 0, 768), r)
			sink += len(line)
		}))
		marshal = append(marshal, block(func() {
			line, _ := json.Marshal(r)
			sink += len(line)
		}))
	}
	if sink == 0 {
		b.Fatal("nothing encoded")
	}
	slices.Sort(ours)
	slices.Sort(marshal)
	o, m := ours[len(ours)/2], marshal[len(marshal)/2]
	b.ReportMetric(o, "ns/line-appendRecord")
	b.ReportMetric(m, "ns/line-json.Marshal")
	b.ReportMetric(m/o, "speedup")
}
