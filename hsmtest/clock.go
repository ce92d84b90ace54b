package hsmtest

import (
	"sync"
	"time"
)

// Clock is a settable clock for a service and its cluster node (their
// Config.Now): the zero Clock, or one set to the zero time, reads the real
// time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}

// Set stops the clock at t (the zero time: back to the real time).
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
