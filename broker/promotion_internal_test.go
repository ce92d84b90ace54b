package broker

import (
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
)

// TestSettleTimeFollowsTheAddress: a non-voter's settle time counts at the
// Raft address it was found ready at. The same id at another address (the
// node removed and joined again from elsewhere between two checks) starts
// the time again; back at a settled address it is again a new start.
func TestSettleTimeFollowsTheAddress(t *testing.T) {
	const settle = 10 * time.Second
	p := promotions{settle: settle, ready: map[string]readySince{}}
	t0 := time.Unix(1_700_000_000, 0)
	at := func(addr string) cluster.Server { return cluster.Server{ID: "node4", Address: addr} }
	steps := []struct {
		addr  string
		after time.Duration
		want  bool
	}{
		{"10.0.0.4:7001", 0, false},
		{"10.0.0.4:7001", settle - time.Millisecond, false},
		{"10.0.0.4:7001", settle, true},
		{"10.0.0.9:7001", settle + time.Second, false}, // moved: starts again
		{"10.0.0.9:7001", 2 * settle, false},
		{"10.0.0.9:7001", 2*settle + time.Second, true},
		{"10.0.0.4:7001", 3 * settle, false}, // back: a new start too
	}
	for _, st := range steps {
		if got := p.settled(at(st.addr), t0.Add(st.after)); got != st.want {
			t.Fatalf("at %v, address %s: settled %v, want %v", st.after, st.addr, got, st.want)
		}
	}
	// Another id's time is its own.
	if p.settled(cluster.Server{ID: "node5", Address: "10.0.0.4:7001"}, t0.Add(4*settle)) {
		t.Fatal("node5, first seen now, is settled")
	}
}
