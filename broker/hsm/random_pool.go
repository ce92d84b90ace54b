package hsm

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"io"
	"sync"
	"time"
)

// A data key's bytes come from the token's generator. Drawn one key at a
// time, that was a C_GenerateRandom of its own on every GenerateDataKey:
// about a sixth of SoftHSM's work for a data key (docs/BENCHMARKS.md). The
// partition instead draws a block at once and hands each byte of it out
// once, clearing it as it goes, and every draw is XORed with as many fresh
// bytes from the operating system's generator (crypto/rand). The XOR of
// the token's bytes with independent bytes is as strong as the token's
// bytes (the combination NIST SP 800-133 Rev. 2, section 6.3, allows).
// The mask also means that the block held in memory alone tells nothing
// about the keys it will make, and that a broker process restored from a
// memory image does not hand out the same keys again (docs/SECURITY.md,
// "Where a data key's bytes come from", says what a virtual machine's
// restore needs). A block is kept at most randomBlockLife.
const (
	// pooledRandomMax is the largest draw served from the block: a data
	// key of 16 or 32 bytes, with room to spare. Larger draws are a token
	// call of their own.
	pooledRandomMax = 64
	// randomBlock is what one refill draws from the token: 32 keys of 32
	// bytes.
	randomBlock = MaxRandom
	// randomBlockLife is the longest a block's bytes wait to be handed
	// out; older ones are cleared and a new block drawn. Under load a
	// block lasts milliseconds.
	randomBlockLife = 5 * time.Second
)

// randomPool holds the token's bytes not yet handed out. One refill draws
// at a time; callers that find the pool short meanwhile wait for it.
type randomPool struct {
	mu     sync.Mutex
	buf    []byte
	drawn  time.Time   // when buf was drawn
	refill *randomWait // the draw under way; nil if none
	closed bool        // the partition closed: nothing is kept
	// mask is where the XOR mask comes from; nil is crypto/rand. life,
	// if set, replaces randomBlockLife. Tests set them (export_test.go).
	mask io.Reader
	life time.Duration
}

// randomWait is one refill, for the callers waiting on it.
type randomWait struct {
	done chan struct{}
	err  error
}

// take fills out from the pool and clears what it used. If the pool holds
// too little, it returns the refill to wait for, which it starts (with
// draw) if none is under way.
func (r *randomPool) take(out []byte, draw func(*randomWait)) (io.Reader, *randomWait) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) > 0 && time.Since(r.drawn) > cmp.Or(r.life, randomBlockLife) {
		r.clearLocked()
	}
	if len(r.buf) >= len(out) {
		copy(out, r.buf)
		clear(r.buf[:len(out)])
		r.buf = r.buf[len(out):]
		return r.mask, nil
	}
	if r.refill == nil {
		r.refill = &randomWait{done: make(chan struct{})}
		go draw(r.refill)
	}
	return nil, r.refill
}

// filled ends refill w: block, drawn from the token, becomes the pool
// (what is left of the old one is too little for someone and is cleared),
// unless the draw failed or the partition closed meanwhile.
func (r *randomPool) filled(w *randomWait, block []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil:
	case r.closed:
		clear(block)
	default:
		r.clearLocked()
		r.buf, r.drawn = block, time.Now()
	}
	r.refill = nil
	w.err = err
	close(w.done)
}

func (r *randomPool) clearLocked() {
	clear(r.buf)
	r.buf = nil
}

// drop clears the pool for good: the partition is closing.
func (r *randomPool) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.clearLocked()
}

// pooledRandom returns n random bytes (1 to pooledRandomMax): n bytes the
// token made, taken from the pool, XORed with n bytes from the operating
// system's generator. When the pool is short it waits for one refill (a
// token call under the call deadline, made whoever waits for it) and fails
// with that refill's error.
func (p *Partition) pooledRandom(ctx context.Context, n int) ([]byte, error) {
	out := make([]byte, n)
	var mask io.Reader
	for {
		var w *randomWait
		if mask, w = p.rnd.take(out, p.drawRandomBlock); w == nil {
			break
		}
		select {
		case <-w.done:
			if w.err != nil {
				return nil, w.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var m [pooledRandomMax]byte
	var err error
	if mask != nil {
		_, err = io.ReadFull(mask, m[:n])
	} else {
		_, err = rand.Read(m[:n])
	}
	if err != nil {
		clear(out)
		return nil, err
	}
	subtle.XORBytes(out, out, m[:n])
	clear(m[:n])
	return out, nil
}

// drawRandomBlock is one refill of the pool. It runs on its own, so that
// no caller's cancellation cuts short a draw others wait for; the call
// deadline bounds it.
func (p *Partition) drawRandomBlock(w *randomWait) {
	block, err := p.Random(context.Background(), randomBlock)
	p.rnd.filled(w, block, err)
}
