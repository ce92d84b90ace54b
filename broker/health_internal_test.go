package broker

import (
	"log/slog"
	"sync"
	"testing"
)

// TestHealthyReadsOneVerdict: a verdict and its reason come from the same
// check, however often the node's readiness flips, and a node not checked
// yet says so: a refusal never reads "not ready ()".
func TestHealthyReadsOneVerdict(t *testing.T) {
	s := &Service{log: slog.New(slog.DiscardHandler)}
	if ok, why := s.Healthy(); ok || why == "" {
		t.Fatalf("before the first check: %v %q", ok, why)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20000 {
			if i%2 == 0 {
				s.recordHealth(true, "")
			} else {
				s.recordHealth(false, "catching up with the cluster")
			}
		}
	}()
	for range 20000 {
		if ok, why := s.Healthy(); ok != (why == "") {
			t.Fatalf("verdict %v with reason %q", ok, why)
		}
	}
	wg.Wait()
}
