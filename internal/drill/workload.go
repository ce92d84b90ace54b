package drill

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Operations of the workload, as they appear in samples and reports.
const (
	OpCreate  = "create"
	OpEncrypt = "encrypt"
	OpDecrypt = "decrypt"
	OpSign    = "sign"
	OpDataKey = "datakey"
)

// opTimeout bounds one operation of the load, retries included: longer
// than any failover should take, so that a slow failover shows as latency
// rather than as an error.
const opTimeout = 15 * time.Second

// cycle is the cryptographic mix each client repeats, as fast as the
// cluster answers: three encryptions each followed by its decryption, two
// signatures and a data key. Encryptions use a key the client created
// itself when it has one, so new keys are used at once, through whatever
// node answers.
var cycle = []string{OpEncrypt, OpDecrypt, OpSign, OpDataKey, OpEncrypt, OpDecrypt, OpSign, OpEncrypt, OpDecrypt}

// createEvery paces each client's key creation, which runs beside its
// cryptography: a write that waits out an election holds up the next
// write, not the client's cryptography, as with an application whose
// requests are independent.
const createEvery = 50 * time.Millisecond

// Sample is one operation as a client saw it.
type Sample struct {
	// At is when the client got its answer, since the drill started.
	At time.Duration
	// Latency is the whole operation, the SDK's retries included.
	Latency time.Duration
	Op      string
	// Code is the gRPC code the client finally got ("OK" on success).
	Code string
	// Exception is the AWS exception name of a failure, when it carried one.
	Exception string
}

// OK reports whether the operation succeeded.
func (s Sample) OK() bool { return s.Code == "OK" }

// ackedKey is a key whose creation the cluster acknowledged.
type ackedKey struct {
	id, alias string
}

// ackedCiphertext is a ciphertext the cluster produced (Encrypt or
// GenerateDataKey) with the plaintext it must decrypt to.
type ackedCiphertext struct {
	blob, plaintext []byte
	encCtx          map[string]string
	op              string
}

// ledger records every operation and everything acknowledged.
type ledger struct {
	start time.Time

	mu          sync.Mutex
	samples     []Sample
	keys        []ackedKey
	ciphertexts []ackedCiphertext
}

func (l *ledger) record(op string, began time.Time, err error) {
	now := time.Now()
	s := Sample{At: now.Sub(l.start), Latency: now.Sub(began), Op: op, Code: client.Code(err).String(), Exception: client.AWSException(err)}
	l.mu.Lock()
	l.samples = append(l.samples, s)
	l.mu.Unlock()
}

// since returns the samples recorded from index i on, and the next index.
func (l *ledger) since(i int) ([]Sample, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]Sample(nil), l.samples[i:]...)
	return out, len(l.samples)
}

// workload is the steady mixed load of several clients.
type workload struct {
	l       *ledger
	clients []*client.Client
	symKey  string // shared AES key
	signKey string // shared P-256 key
	run     string // distinguishes this drill's aliases from others'
	stop    atomic.Bool
	wg      sync.WaitGroup
}

// start runs two goroutines per client, its cryptography and its key
// creation, until halt.
func (w *workload) start() {
	for i, c := range w.clients {
		own := &ownKeys{}
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			w.crypto(i, c, own)
		}()
		go func() {
			defer w.wg.Done()
			w.creator(i, c, own)
		}()
	}
}

// halt stops the clients after their operations in flight and waits.
func (w *workload) halt() {
	w.stop.Store(true)
	w.wg.Wait()
}

// ownKeys are the keys one client created.
type ownKeys struct {
	mu  sync.Mutex
	ids []string
}

func (o *ownKeys) add(id string) {
	o.mu.Lock()
	o.ids = append(o.ids, id)
	o.mu.Unlock()
}

// pick returns one of the keys at random, or "" when there is none.
func (o *ownKeys) pick(rng *mrand.Rand) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.ids) == 0 {
		return ""
	}
	return o.ids[rng.IntN(len(o.ids))]
}

// creator creates a key every createEvery (or as soon as the previous
// creation returns, when that took longer).
func (w *workload) creator(n int, c *client.Client, own *ownKeys) {
	next := time.Now()
	for i := 0; !w.stop.Load(); i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(createEvery)
		if w.stop.Load() {
			return
		}
		alias := fmt.Sprintf("alias/drill-%s-c%d-%d", w.run, n, i)
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		began := time.Now()
		resp, err := c.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: alias, Description: "hsmctl drill " + w.run})
		cancel()
		if err == nil {
			id := resp.GetKeyMetadata().GetKeyId()
			own.add(id)
			w.l.mu.Lock()
			w.l.keys = append(w.l.keys, ackedKey{id: id, alias: alias})
			w.l.mu.Unlock()
		}
		w.l.record(OpCreate, began, err)
		if time.Since(next) > 0 {
			next = time.Now() // no burst to catch up after a stall
		}
	}
}

// crypto runs the cryptographic cycle.
func (w *workload) crypto(n int, c *client.Client, own *ownKeys) {
	rng := mrand.New(mrand.NewPCG(uint64(n), uint64(time.Now().UnixNano())))
	var last *ackedCiphertext
	encCtx := map[string]string{"drill": w.run, "client": fmt.Sprint(n)}
	for i := 0; !w.stop.Load(); i++ {
		op := cycle[i%len(cycle)]
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		began := time.Now()
		var err error
		switch op {
		case OpEncrypt:
			key := w.symKey
			if k := own.pick(rng); k != "" && rng.IntN(2) == 0 {
				key = k
			}
			pt := make([]byte, 64)
			_, _ = rand.Read(pt)
			var resp *pb.EncryptResponse
			resp, err = c.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: pt, EncryptionContext: encCtx})
			last = nil
			if err == nil {
				last = &ackedCiphertext{blob: resp.GetCiphertextBlob(), plaintext: pt, encCtx: encCtx, op: OpEncrypt}
				w.l.mu.Lock()
				w.l.ciphertexts = append(w.l.ciphertexts, *last)
				w.l.mu.Unlock()
			}
		case OpDecrypt:
			if last == nil {
				cancel()
				continue // its encryption failed: nothing to decrypt
			}
			var resp *pb.DecryptResponse
			resp, err = c.Crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: last.blob, EncryptionContext: last.encCtx})
			if err == nil && string(resp.GetPlaintext()) != string(last.plaintext) {
				err = errWrongPlaintext
			}
		case OpSign:
			msg := fmt.Appendf(nil, "drill %s %d/%d", w.run, n, i)
			_, err = c.Crypto.Sign(ctx, &pb.SignRequest{KeyId: w.signKey, Message: msg,
				SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
		case OpDataKey:
			var resp *pb.GenerateDataKeyResponse
			resp, err = c.Crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: w.symKey,
				KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, EncryptionContext: encCtx})
			if err == nil {
				w.l.mu.Lock()
				w.l.ciphertexts = append(w.l.ciphertexts, ackedCiphertext{blob: resp.GetCiphertextBlob(),
					plaintext: resp.GetPlaintext(), encCtx: encCtx, op: OpDataKey})
				w.l.mu.Unlock()
			}
		}
		cancel()
		w.l.record(op, began, err)
	}
}

// errWrongPlaintext is a decryption that answered another plaintext: as
// bad as a loss, so it reads as DataLoss.
var errWrongPlaintext = status.Error(codes.DataLoss, "decryption returned another plaintext")
