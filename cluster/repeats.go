package cluster

import (
	"log/slog"
	"sync"
	"time"
)

// Raft repeats itself when it cannot reach its peers: a node cut off from
// the majority, or removed while it was down, campaigns every second or two
// and logs each failed election and each peer it could not ask, about 240
// lines a minute for as long as it lasts. The hclog adapter lets the first
// raftRepeatBurst lines of one kind (level, component and message; raft's
// messages are constant and its details are attributes) through in each
// repeatWindow, counts the rest, and when the window ends logs one line of
// that kind with the count. Lines of every other kind, and debug and trace
// lines, pass as before.
const (
	raftRepeatBurst = 5
	repeatWindow    = time.Minute
	// maxRaftRepeatKinds bounds the kinds tracked at once. Raft's messages
	// are a fixed set, but lines written through its standard logger are
	// free text; a kind beyond the bound is not limited.
	maxRaftRepeatKinds = 256
)

type raftLineKind struct {
	level     slog.Level
	component string
	msg       string
}

// repeatLimiter lets the first burst lines of each kind through in a
// window and counts the rest. When a window ends with lines held back, the
// summary given with the first of them is called with their count, and a
// new window starts, with the summary as its first line: while a kind
// keeps coming, that is burst lines, then a summary a window.
type repeatLimiter[K comparable] struct {
	window   time.Duration
	burst    int
	maxKinds int // beyond it, a new kind is not limited

	mu    sync.Mutex
	kinds map[K]*repeatCount
}

type repeatCount struct {
	start   time.Time
	passed  int
	held    int
	summary func(held int)
}

func newRepeatLimiter[K comparable](window time.Duration, burst, maxKinds int) *repeatLimiter[K] {
	return &repeatLimiter[K]{window: window, burst: burst, maxKinds: maxKinds, kinds: make(map[K]*repeatCount)}
}

// allow reports whether a line of kind k may be written now. When it may
// not, the line is counted; summary is kept if it is the first held back
// in its window.
func (r *repeatLimiter[K]) allow(k K, summary func(held int)) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.kinds[k]
	if c == nil || c.held == 0 && now.Sub(c.start) >= r.window {
		if c == nil && len(r.kinds) >= r.maxKinds {
			r.dropQuietLocked(now)
			if len(r.kinds) >= r.maxKinds {
				return true
			}
		}
		r.kinds[k] = &repeatCount{start: now, passed: 1}
		return true
	}
	if c.passed < r.burst {
		c.passed++
		return true
	}
	if c.held == 0 {
		c.summary = summary
		time.AfterFunc(c.start.Add(r.window).Sub(now), func() { r.summarize(k) })
	}
	c.held++
	return false
}

func (r *repeatLimiter[K]) summarize(k K) {
	r.mu.Lock()
	c := r.kinds[k]
	if c == nil || c.held == 0 {
		r.mu.Unlock()
		return
	}
	held, summary := c.held, c.summary
	r.kinds[k] = &repeatCount{start: time.Now(), passed: 1}
	r.mu.Unlock()
	summary(held)
}

// dropQuietLocked forgets the kinds whose window has ended with nothing
// held back.
func (r *repeatLimiter[K]) dropQuietLocked(now time.Time) {
	for k, c := range r.kinds {
		if c.held == 0 && now.Sub(c.start) >= r.window {
			delete(r.kinds, k)
		}
	}
}
