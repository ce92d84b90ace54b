package broker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// soak reports whether the long variants run (make soak).
func soak() bool { return os.Getenv("HSMBROKER_SOAK") != "" }

// The failover targets of docs/BENCHMARKS.md. The success ratio and "none
// lost" are asserted on every run; the timing targets only under
// HSMBROKER_SOAK=1, with timingSlack for a machine shared with other work.
const (
	targetCryptoSuccess = 0.999           // crypto calls through the SDK during the failovers
	targetWriteP50      = 2 * time.Second // kill -> first acknowledged write
	targetWriteP99      = 3 * time.Second
	timingSlack         = 1.5
	// minThroughputKept is how much of the crypto throughput measured
	// before the first kill the cluster must deliver once every node is
	// back: a loose bound, there to catch a collapse, not a slowdown.
	minThroughputKept = 0.25
	throughputWindow  = 2 * time.Second
)

// cryptoRate counts the crypto calls l acknowledges during one window.
func cryptoRate(l *ledger) int64 {
	before := l.cryptoOK.Load()
	time.Sleep(throughputWindow)
	return l.cryptoOK.Load() - before
}

// ledger records what the cluster acknowledged, to check afterwards that
// none of it was lost.
type ledger struct {
	mu          sync.Mutex
	keys        []string
	ciphertexts []ackedCiphertext
	cryptoOK    atomic.Int64
	cryptoFail  atomic.Int64
	writeOK     atomic.Int64
	writeFail   atomic.Int64
	errs        map[string]int // failure kinds, for the report
	// notRetryable counts failures whose code does not say "the node or
	// leader is away, retry" (an Internal "internal error" for a write
	// the dying leader may have applied, say).
	notRetryable int
}

func (l *ledger) fail(kind string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = map[string]int{}
	}
	switch client.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
	default:
		l.notRetryable++
	}
	msg := client.Message(err)
	if len(msg) > 60 {
		msg = msg[:60]
	}
	l.errs[fmt.Sprintf("%s %s %s (at %s)", kind, client.Code(err), msg, client.Endpoint(err))]++
}

type ackedCiphertext struct {
	blob, plaintext []byte
	ctx             map[string]string
}

// workload runs a mixed load through the SDK until ctx ends: key creation,
// encrypt then decrypt, and signing.
func workload(ctx context.Context, cli *client.Client, l *ledger, symKey, signKey string, worker int) {
	rng := rand.New(rand.NewPCG(uint64(worker), uint64(time.Now().UnixNano())))
	for i := 0; ctx.Err() == nil; i++ {
		opCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		switch {
		case i%10 == 0:
			resp, err := cli.Keys.CreateKey(opCtx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/load-%d-%d-%d", worker, i, rng.Uint32())})
			if err != nil {
				l.writeFail.Add(1)
				l.fail("create", err)
			} else {
				l.writeOK.Add(1)
				l.mu.Lock()
				l.keys = append(l.keys, resp.GetKeyMetadata().GetKeyId())
				l.mu.Unlock()
			}
		case i%2 == 0:
			pt := []byte(fmt.Sprintf("payload %d/%d", worker, i))
			ec := map[string]string{"worker": fmt.Sprint(worker)}
			enc, err := cli.Crypto.Encrypt(opCtx, &pb.EncryptRequest{KeyId: symKey, Plaintext: pt, EncryptionContext: ec})
			if err == nil {
				_, err = cli.Crypto.Decrypt(opCtx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: ec})
			}
			if err != nil {
				l.cryptoFail.Add(1)
				l.fail("encrypt/decrypt", err)
			} else {
				l.cryptoOK.Add(1)
				l.mu.Lock()
				l.ciphertexts = append(l.ciphertexts, ackedCiphertext{enc.GetCiphertextBlob(), pt, ec})
				l.mu.Unlock()
			}
		default:
			_, err := cli.Crypto.Sign(opCtx, &pb.SignRequest{KeyId: signKey, Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
			if err != nil {
				l.cryptoFail.Add(1)
				l.fail("sign", err)
			} else {
				l.cryptoOK.Add(1)
			}
		}
		cancel()
	}
}

// sdk is a client of every node of c. Its per-attempt timeout allows for
// RSA key generation in SoftHSM on a loaded machine (seconds under the
// race detector): a non-idempotent call that times out is not retried.
func sdk(t *testing.T, c *hsmtest.Cluster, principal string) *client.Client {
	t.Helper()
	var eps []string
	for _, nd := range c.Nodes {
		eps = append(eps, nd.GRPCAddr)
	}
	cli, err := client.Dial(context.Background(), client.Config{Endpoints: eps, TLS: c.ClientTLS(principal, authz.RoleAdmin),
		Timeout: 15 * time.Second, Retries: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// The leader is killed again and again under a mixed load: every
// acknowledged key still works on every node, every acknowledged
// ciphertext decrypts on every node, and all nodes end with identical
// state.
func TestLeaderKilledRepeatedlyUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test")
	}
	rounds := 20
	if soak() {
		rounds = 60
	}
	c := hsmtest.NewCluster(t, 3)
	cli := sdk(t, c, "load")
	ctx := ctxT(t)
	sym, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/failover-sym"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/failover-sig", KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256})
	if err != nil {
		t.Fatal(err)
	}
	l := &ledger{}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			workload(loadCtx, cli, l, sym.GetKeyMetadata().GetKeyId(), sig.GetKeyMetadata().GetKeyId(), w)
		}()
	}
	probe := sym.GetKeyMetadata().GetKeyId()
	// Steady-state throughput, to compare with the same after the rounds.
	time.Sleep(throughputWindow / 2)
	opsBefore := cryptoRate(l)
	var toLeader, toWrite []time.Duration
	for r := 0; r < rounds; r++ {
		old := c.Leader(t)
		killed := time.Now()
		old.Stop()
		// Time to a new leader, then to the first acknowledged write.
		var newLeader *hsmtest.Node
		for newLeader == nil {
			for _, nd := range c.Nodes {
				if nd.Running() && nd.Raft.IsLeader() {
					newLeader = nd
				}
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("round %d: no new leader", r)
			}
			time.Sleep(2 * time.Millisecond)
		}
		toLeader = append(toLeader, time.Since(killed))
		for {
			wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := cli.Keys.TagKey(wctx, &pb.TagKeyRequest{KeyId: probe, Tags: map[string]string{"round": fmt.Sprint(r)}})
			cancel()
			if err == nil {
				break
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("round %d: no write acknowledged: %v", r, err)
			}
		}
		toWrite = append(toWrite, time.Since(killed))
		t.Logf("round %d: failures so far %d crypto, %d writes", r, l.cryptoFail.Load(), l.writeFail.Load())
		old.Start()
		t.Logf("round %d: killed %s; new leader %s after %v; first write after %v", r, old.ID, newLeader.ID, toLeader[r], toWrite[r])
	}
	for _, nd := range c.Nodes {
		nd.WaitServing(t)
	}
	opsAfter := cryptoRate(l)
	stopLoad()
	wg.Wait()
	c.WaitConverged(t)

	// Nothing acknowledged was lost, on any node. The check gets its own
	// deadline: the rounds may have used up the setup's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range c.Nodes {
		conn := c.Dial(i, "checker")
		kc, cc := pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn)
		for _, id := range l.keys {
			if _, err := cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("still here")}); err != nil {
				t.Fatalf("node %d: acknowledged key %s lost: %v", i+1, id, err)
			}
		}
		for _, a := range l.ciphertexts {
			dec, err := cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: a.blob, EncryptionContext: a.ctx})
			if err != nil || string(dec.GetPlaintext()) != string(a.plaintext) {
				t.Fatalf("node %d: acknowledged ciphertext does not decrypt: %v", i+1, err)
			}
		}
		// The last acknowledged probe write is there too.
		tags, err := kc.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: probe})
		if err != nil || tags.GetTags()["round"] != fmt.Sprint(rounds-1) {
			t.Fatalf("node %d: acknowledged tag round=%d lost: tags %v, err %v", i+1, rounds-1, tags.GetTags(), err)
		}
		listed, tok := 0, ""
		for {
			lk, err := kc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1000, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			listed += len(lk.GetKeys())
			if tok = lk.GetNextPageToken(); tok == "" {
				break
			}
		}
		if listed < len(l.keys)+2 {
			t.Errorf("node %d lists %d keys, %d acknowledged", i+1, listed, len(l.keys)+2)
		}
	}
	total := l.cryptoOK.Load() + l.cryptoFail.Load()
	t.Logf("%d rounds: kill->new leader p50 %v p99 %v; kill->first acknowledged write p50 %v p99 %v",
		rounds, percentile(toLeader, .5), percentile(toLeader, .99), percentile(toWrite, .5), percentile(toWrite, .99))
	t.Logf("crypto calls through the SDK: %d ok, %d failed (success %.3f%%); writes: %d ok, %d failed; %d keys and %d ciphertexts checked on %d nodes",
		l.cryptoOK.Load(), l.cryptoFail.Load(), 100*float64(l.cryptoOK.Load())/float64(max(total, 1)),
		l.writeOK.Load(), l.writeFail.Load(), len(l.keys), len(l.ciphertexts), len(c.Nodes))
	for kind, n := range l.errs {
		t.Logf("  %6d x %s", n, kind)
	}
	if len(l.keys) == 0 || len(l.ciphertexts) == 0 {
		t.Fatal("the workload acknowledged nothing; the test proved nothing")
	}
	if l.notRetryable > 0 {
		t.Errorf("%d calls failed with a code other than Unavailable or DeadlineExceeded while nodes were killed (listed above)", l.notRetryable)
	}
	if ratio := float64(l.cryptoOK.Load()) / float64(max(total, 1)); ratio < targetCryptoSuccess {
		t.Errorf("crypto success %.3f%% (%d of %d failed), target >= %.1f%%", 100*ratio, l.cryptoFail.Load(), total, 100*targetCryptoSuccess)
	}
	t.Logf("crypto throughput: %d calls in %v before the first kill, %d in %v once every node was back (%.2fx)",
		opsBefore, throughputWindow, opsAfter, throughputWindow, float64(opsAfter)/float64(max(opsBefore, 1)))
	if opsBefore == 0 || float64(opsAfter) < minThroughputKept*float64(opsBefore) {
		t.Errorf("crypto throughput collapsed: %d calls per %v before the failovers, %d after (want >= %.0f%%)",
			opsBefore, throughputWindow, opsAfter, 100*minThroughputKept)
	}
	if soak() {
		p50, p99 := percentile(toWrite, .5), percentile(toWrite, .99)
		if limit := time.Duration(timingSlack * float64(targetWriteP50)); p50 > limit {
			t.Errorf("kill -> first acknowledged write p50 %v; target %v, %v with slack", p50, targetWriteP50, limit)
		}
		if limit := time.Duration(timingSlack * float64(targetWriteP99)); p99 > limit {
			t.Errorf("kill -> first acknowledged write p99 %v; target %v, %v with slack", p99, targetWriteP99, limit)
		}
	}
}
