package broker

import (
	"bytes"
	"log/slog"
	"strings"
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

// TestReadinessLoggedOncePerKind: a reason that differs from the last
// only in its figures (a growing "no contact with a leader for ...") is
// not logged again at every check; a different reason, or serving again,
// is.
func TestReadinessLoggedOncePerKind(t *testing.T) {
	var buf bytes.Buffer
	s := &Service{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for _, r := range []struct {
		ok     bool
		reason string
	}{
		{false, "no contact with a leader for 25.408s: ..."},
		{false, "no contact with a leader for 27.411s: ..."},
		{false, "no contact with a leader for 129.5s: ..."},
		{false, "catching up with the cluster"},
		{true, ""},
		{true, ""},
		{false, "no contact with a leader for 3.1s: ..."},
	} {
		s.recordHealth(r.ok, r.reason)
	}
	got := strings.Count(buf.String(), "node is not serving")
	if got != 3 || strings.Count(buf.String(), "node is serving") != 1 {
		t.Fatalf("log lines:\n%s\nwant 3 \"not serving\" (the first of each kind) and 1 \"serving\"", buf.String())
	}
	if !strings.Contains(buf.String(), "25.408s") || strings.Contains(buf.String(), "27.411s") {
		t.Errorf("the first reason of a kind should be logged, not the later ones:\n%s", buf.String())
	}
}
