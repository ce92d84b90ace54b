package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkSnapshotEncode compares the streaming snapshot writer with
// encoding/json's Encoder, which builds the whole encoding in memory
// before it writes. Each iteration encodes the same 20,000-key state once
// with each, the order swapping every iteration, and reports per side the
// bytes allocated per encoding (B/<side>, from runtime.MemStats) and the
// median time (ns/<side>), and the ratios streaming/encoding-json.
//
//	go test -run '^$' -bench SnapshotEncode -benchtime 5x ./cluster
func BenchmarkSnapshotEncode(b *testing.B) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for i := range 20000 {
		id := fmt.Sprintf("key-%05d", i)
		a.must(b, &CreateKey{Key: symKey(id), Alias: "alias/" + id})
	}
	sf := a.f.capture()
	sides := []struct {
		name   string
		encode func() error
	}{
		{"encoding-json", func() error { return json.NewEncoder(io.Discard).Encode(&sf) }},
		{"streaming", func() error { return writeSnapshot(io.Discard, &sf) }},
	}
	for _, side := range sides { // warm up: encoding/json's type cache, the heap
		if err := side.encode(); err != nil {
			b.Fatal(err)
		}
	}
	var times [2][]time.Duration
	var alloc [2]uint64
	var ms runtime.MemStats
	b.ResetTimer()
	for i := range b.N {
		for j := range sides {
			k := (i + j) % 2
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			t0 := time.Now()
			if err := sides[k].encode(); err != nil {
				b.Fatal(err)
			}
			times[k] = append(times[k], time.Since(t0))
			runtime.ReadMemStats(&ms)
			alloc[k] += ms.TotalAlloc - before
		}
	}
	b.StopTimer()
	var med [2]time.Duration
	for k := range sides {
		slices.Sort(times[k])
		med[k] = times[k][len(times[k])/2]
		b.ReportMetric(float64(alloc[k])/float64(b.N), "B/"+sides[k].name)
		b.ReportMetric(float64(med[k].Nanoseconds()), "ns/"+sides[k].name)
	}
	b.ReportMetric(float64(alloc[1])/float64(alloc[0]), "B-streaming/encoding-json")
	b.ReportMetric(float64(med[1])/float64(med[0]), "ns-streaming/encoding-json")
}
