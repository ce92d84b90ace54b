package awskms

import (
	"net/http"
	"net/netip"
	"sync"
)

// bodyFirstChunk is the most a request body holds of the budget before more
// of it has arrived: a body is read into a buffer that starts at this size
// (or the body's length, if smaller) and doubles as it fills, each growth
// taken from the budget before it is made.
const bodyFirstChunk = 16 << 10

// bodyBudget bounds the request bodies held at once, in all and by one
// source address. A body is read only after its headers named a known
// access key (the signature covers the body, so it is checked once the body
// is read), and a client that knows an access key id, not its secret, can
// send such headers. So a body holds what has arrived (rounded up to its
// buffer), not the length it announces, and the bodies of one source may
// hold at most perSource: a client that trickles or stalls bodies on many
// connections holds a little per connection, and can take no more than its
// share from the others.
type bodyBudget struct {
	max       int64
	perSource int64

	mu      sync.Mutex
	held    int64
	sources map[netip.Addr]int64 // only sources now holding bytes
}

// newBodyBudget: a source may hold a quarter of the whole, and at least
// one body of the largest size.
func newBodyBudget(whole, maxBody int64) *bodyBudget {
	return &bodyBudget{max: whole, perSource: min(whole, max(whole/4, maxBody)), sources: make(map[netip.Addr]int64)}
}

// take holds n more bytes for src, if both bounds allow it.
func (b *bodyBudget) take(src netip.Addr, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sources[src]
	if b.held+n > b.max || s+n > b.perSource {
		return false
	}
	b.held += n
	b.sources[src] = s + n
	return true
}

// give returns n bytes held for src.
func (b *bodyBudget) give(src netip.Addr, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if s := b.sources[src] - n; s > 0 {
		b.sources[src] = s
	} else {
		delete(b.sources, src)
	}
}

// source is the address r came from; requests whose address cannot be
// read share the zero address.
func source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
