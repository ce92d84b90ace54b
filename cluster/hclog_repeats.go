package cluster

import (
	"log/slog"
	"sync"
	"time"
)

// Raft repeats itself when it cannot reach its peers: a node cut off from
// the majority, or removed while it was down, campaigns every second or two
// and logs each failed election and each peer it could not ask, about 240
// lines a minute for as long as it lasts. A repeatLimiter lets the first
// repeatBurst lines of one kind (level and message; raft's messages are
// constant and its details are attributes) through in each repeatWindow,
// counts the rest, and when the window ends logs one line of that kind with
// the count. Lines of every other kind, and debug and trace lines, pass as
// before.
const (
	repeatBurst  = 5
	repeatWindow = time.Minute
	// maxRepeatKinds bounds the kinds tracked at once. Raft's messages are
	// a fixed set, but lines written through its standard logger are free
	// text; a kind beyond the bound is not limited.
	maxRepeatKinds = 256
)

type repeatKind struct {
	level     slog.Level
	component string
	msg       string
}

type repeatCount struct {
	start  time.Time
	passed int
	held   int
	// The first held line's attributes and logger, for the summary.
	args []any
	emit func(args []any)
}

type repeatLimiter struct {
	window time.Duration

	mu    sync.Mutex
	kinds map[repeatKind]*repeatCount
}

func newRepeatLimiter(window time.Duration) *repeatLimiter {
	return &repeatLimiter{window: window, kinds: make(map[repeatKind]*repeatCount)}
}

// allow reports whether a line of kind k may be logged now. A line held
// back is counted; the first one held in a window keeps its attributes and
// emit, which logs the summary line when the window ends.
func (r *repeatLimiter) allow(k repeatKind, args []any, emit func(args []any)) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.kinds[k]
	if c == nil || now.Sub(c.start) >= r.window && c.held == 0 {
		if c == nil && len(r.kinds) >= maxRepeatKinds {
			r.dropQuietLocked(now)
			if len(r.kinds) >= maxRepeatKinds {
				return true
			}
		}
		r.kinds[k] = &repeatCount{start: now, passed: 1}
		return true
	}
	if c.passed < repeatBurst {
		c.passed++
		return true
	}
	if c.held == 0 {
		c.args, c.emit = args, emit
		time.AfterFunc(c.start.Add(r.window).Sub(now), func() { r.summarize(k) })
	}
	c.held++
	return false
}

// summarize logs how many lines of kind k its window held back, and starts
// the next window from now, so a line that follows is limited with the
// summary's.
func (r *repeatLimiter) summarize(k repeatKind) {
	r.mu.Lock()
	c := r.kinds[k]
	if c == nil || c.held == 0 {
		r.mu.Unlock()
		return
	}
	held, args, emit := c.held, c.args, c.emit
	r.kinds[k] = &repeatCount{start: time.Now(), passed: 1}
	r.mu.Unlock()
	emit(append([]any{"left_out", held, "within", r.window.String()}, args...))
}

// dropQuietLocked forgets the kinds whose window has ended with nothing
// held back.
func (r *repeatLimiter) dropQuietLocked(now time.Time) {
	for k, c := range r.kinds {
		if c.held == 0 && now.Sub(c.start) >= r.window {
			delete(r.kinds, k)
		}
	}
}
