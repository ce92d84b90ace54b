package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
)

// BenchmarkSnapshotEncode compares the streaming snapshot writer with
// encoding/json's Encoder, which builds the whole encoding in memory
// before it writes: run with -benchmem and compare B/op.
//
//	go test -run '^$' -bench SnapshotEncode -benchmem ./cluster
func BenchmarkSnapshotEncode(b *testing.B) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for i := range 20000 {
		id := fmt.Sprintf("key-%05d", i)
		a.must(b, &CreateKey{Key: symKey(id), Alias: "alias/" + id})
	}
	sf := a.f.capture()
	b.Run("encoding-json", func(b *testing.B) {
		for range b.N {
			if err := json.NewEncoder(io.Discard).Encode(&sf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("streaming", func(b *testing.B) {
		for range b.N {
			if err := writeSnapshot(io.Discard, &sf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
