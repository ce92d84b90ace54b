package drill

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// settleTimeout is how long the check waits for a node that answers
// Unavailable (still catching up after the last round) before it counts
// an item as lost there.
const settleTimeout = 30 * time.Second

// checkWorkers is how many checks run at once on each node.
const checkWorkers = 4

// verify checks, on every node by itself, that every acknowledged key
// still encrypts and every acknowledged ciphertext still decrypts to its
// plaintext. An item that fails on any node counts as lost once.
func (r *run) verify(ctx context.Context) error {
	r.l.mu.Lock()
	keys := append([]ackedKey(nil), r.l.keys...)
	cts := append([]ackedCiphertext(nil), r.l.ciphertexts...)
	r.l.mu.Unlock()
	r.progressf("checking %d acknowledged keys and %d acknowledged ciphertexts on every node", len(keys), len(cts))
	lostKeys := make([]atomic.Bool, len(keys))
	lostCts := make([]atomic.Bool, len(cts))
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	var dialErr error
	var dialOnce sync.Once
	for _, n := range r.nodes {
		cfg := r.cfg.Client
		cfg.Endpoints = []string{n.Addr}
		cfg.Retries = -1
		cfg.Timeout = 5 * time.Second
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			dialOnce.Do(func() { dialErr = err })
			continue
		}
		defer c.Close()
		jobs := make(chan int)
		for range checkWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					if j < len(keys) {
						k := keys[j]
						err := settle(ctx, func(ctx context.Context) error {
							_, err := c.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.id, Plaintext: []byte("drill check")})
							return err
						})
						if err != nil {
							lostKeys[j].Store(true)
							fail("%s: key %s (%s) does not encrypt: %s", n.ID, k.id, k.alias, client.Message(err))
						}
						continue
					}
					ct := cts[j-len(keys)]
					var got []byte
					err := settle(ctx, func(ctx context.Context) error {
						resp, err := c.Crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: ct.blob, EncryptionContext: ct.encCtx})
						got = resp.GetPlaintext()
						return err
					})
					if err == nil && !bytes.Equal(got, ct.plaintext) {
						err = errWrongPlaintext
					}
					if err != nil {
						lostCts[j-len(keys)].Store(true)
						fail("%s: a ciphertext from %s does not decrypt: %s", n.ID, ct.op, client.Message(err))
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(jobs)
			for j := 0; j < len(keys)+len(cts); j++ {
				select {
				case jobs <- j:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	if dialErr != nil {
		return fmt.Errorf("check: %w", dialErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	lost := 0
	for i := range lostKeys {
		if lostKeys[i].Load() {
			lost++
		}
	}
	for i := range lostCts {
		if lostCts[i].Load() {
			lost++
		}
	}
	r.rep.Check = Check{Keys: len(keys), Ciphertexts: len(cts), Nodes: nodeIDs(r.nodes), Failures: failures}
	r.rep.Lost = lost
	r.progressf("check done: %d lost", lost)
	return nil
}

// settle runs call until it succeeds, fails for a reason other than the
// node being unavailable, or settleTimeout passes: a node that has just
// come back may still be catching up, which is not a loss.
func settle(ctx context.Context, call func(context.Context) error) error {
	deadline := time.Now().Add(settleTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := call(cctx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		switch client.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			sleepCtx(ctx, 200*time.Millisecond)
		default:
			return err
		}
	}
}
