package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// roundNo is the error a test round returns: its number, so that a
// caller learns which round it got.
type roundNo int64

func (r roundNo) Error() string { return fmt.Sprint(int64(r)) }

// TestLeaderSyncShares: callers share rounds, one runs at a time, every
// caller gets a round that started after it joined, and rounds start at
// least the spacing apart.
func TestLeaderSyncShares(t *testing.T) {
	const spacing = 20 * time.Millisecond
	l := &leaderSync{spacing: spacing}
	var started atomic.Int64
	var inFlight, maxInFlight atomic.Int64
	var mu sync.Mutex
	var starts []time.Time
	run := func() error {
		n := started.Add(1)
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		if k := inFlight.Add(1); k > maxInFlight.Load() {
			maxInFlight.Store(k)
		}
		time.Sleep(5 * time.Millisecond)
		inFlight.Add(-1)
		return roundNo(n)
	}
	const callers = 400
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			time.Sleep(time.Duration(i%40) * time.Millisecond)
			before := started.Load()
			w := l.join(run)
			<-w.done
			var r roundNo
			if !errors.As(w.err, &r) {
				t.Errorf("round error %v", w.err)
				return
			}
			if int64(r) <= before {
				t.Errorf("caller joined after round %d had started and got round %d", before, r)
			}
		})
	}
	wg.Wait()
	if n := started.Load(); n >= callers/4 {
		t.Errorf("%d rounds for %d callers, want them shared", n, callers)
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("%d rounds at once, want 1", m)
	}
	for i := 1; i < len(starts); i++ {
		if d := starts[i].Sub(starts[i-1]); d < spacing-time.Millisecond {
			t.Errorf("rounds %d and %d started %v apart, want at least %v", i, i+1, d, spacing)
		}
	}
}
