package hsm

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"io"
	"sync"
)

// A data key's bytes come from the token's generator. Drawn one key at a
// time, that was a C_GenerateRandom of its own on every GenerateDataKey:
// about a sixth of SoftHSM's work for a data key (docs/BENCHMARKS.md). The
// partition instead draws a block at once and hands each byte of it out
// once, clearing it as it goes, and every draw is XORed with as many fresh
// bytes from the operating system's generator (crypto/rand). The XOR of
// the token's bytes with independent bytes is as strong as the token's
// bytes (the combination NIST SP 800-133 Rev. 2, section 6.3, allows), and
// it means that the block held in memory tells nothing about the keys it
// will make, and that a process or virtual machine restored from a memory
// image does not hand out the same keys again.
const (
	// pooledRandomMax is the largest draw served from the block: a data
	// key of 16 or 32 bytes, with room to spare. Larger draws are a token
	// call of their own.
	pooledRandomMax = 64
	// randomBlock is what one refill draws from the token: 32 keys of 32
	// bytes.
	randomBlock = MaxRandom
)

// randomPool holds the token's bytes not yet handed out.
type randomPool struct {
	mu  sync.Mutex
	buf []byte
	// mask is where the XOR mask comes from; nil is crypto/rand. Tests
	// set it (export_test.go).
	mask io.Reader
}

// take fills out from the pool and clears what it used, or reports that
// the pool holds too little.
func (r *randomPool) take(out []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < len(out) {
		return false
	}
	copy(out, r.buf)
	clear(r.buf[:len(out)])
	r.buf = r.buf[len(out):]
	return true
}

// keep makes rest the pool if it holds more than the pool does, and
// clears whichever of the two it does not keep. Two callers that found the
// pool short at once both draw a block; the larger remainder is kept.
func (r *randomPool) keep(rest []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(rest) > len(r.buf) {
		rest, r.buf = r.buf, rest
	}
	clear(rest)
}

// drop clears the pool.
func (r *randomPool) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.buf)
	r.buf = nil
}

// pooledRandom returns n random bytes (1 to pooledRandomMax): n bytes the
// token made, taken from the pool or from a block drawn now, XORed with n
// bytes from the operating system's generator. The token is called (under
// ctx and the call deadline) only when the pool is short.
func (p *Partition) pooledRandom(ctx context.Context, n int) ([]byte, error) {
	out := make([]byte, n)
	if !p.rnd.take(out) {
		block, err := p.Random(ctx, randomBlock)
		if err != nil {
			return nil, err
		}
		copy(out, block)
		clear(block[:n])
		p.rnd.keep(block[n:])
	}
	var mask [pooledRandomMax]byte
	m := mask[:n]
	var err error
	if p.rnd.mask != nil {
		_, err = io.ReadFull(p.rnd.mask, m)
	} else {
		_, err = rand.Read(m)
	}
	if err != nil {
		clear(out)
		return nil, err
	}
	subtle.XORBytes(out, out, m)
	clear(m)
	return out, nil
}
