package deploy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestScale100kKeys puts 100,000 keys into a 3-node cluster of processes
// and measures what grows with them: creation rate, Raft log and snapshot
// size, memory per key, restart-to-serving time, and Encrypt and Sign
// latency for a random key with a cold and a warm handle cache, against
// the same with 10 keys. It only measures and logs (docs/BENCHMARKS.md
// holds the figures and the targets); it fails only when something does
// not work. A long run: HSMBROKER_SCALE=1 or `make soak`;
// HSMBROKER_SCALE_KEYS changes the count.
func TestScale100kKeys(t *testing.T) {
	if os.Getenv("HSMBROKER_SCALE") == "" && os.Getenv("HSMBROKER_SOAK") == "" {
		t.Skip("100,000-key scale run; set HSMBROKER_SCALE=1 (or run make soak)")
	}
	total := 100000
	if v := os.Getenv("HSMBROKER_SCALE_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			t.Fatalf("HSMBROKER_SCALE_KEYS=%q: want a number of at least 1000", v)
		}
		total = n
	}
	// 5% P-256 signing keys: more than the handle cache holds at 100,000.
	signing := total / 20
	aes := total - signing
	requireSoftHSM(t)
	c := startLocalCluster(t)
	st := c.waitStatus("3 healthy nodes", func(st clusterStatus) error { return st.allHealthy(3) })
	nodes := []string{"node1", "node2", "node3"}
	base := c.memoryAfterGC(time.Now(), nodes...)
	t.Logf("memory of a node holding no keys, after a GC: %s", describeMem(base))

	// Creation through the SDK with every endpoint, 64 clients at once.
	sdk := c.sdkClient()
	ctx := context.Background()
	created := time.Now()
	aesIDs := c.createKeys(sdk, "aes", aes, pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	signIDs := c.createKeys(sdk, "p256", signing, pb.KeySpec_KEY_SPEC_ECC_NIST_P256)
	took := time.Since(created)
	t.Logf("created %d keys (%d AES-256, %d ECC P-256) in %v: %.0f keys/s with 64 clients",
		total, aes, signing, took.Round(time.Millisecond), float64(total)/took.Seconds())
	loaded := time.Now()

	// Memory: the nodes' live Go heap and resident size after a GC.
	after := c.memoryAfterGC(loaded, nodes...)
	t.Logf("memory with %d keys, after a GC: %s", total, describeMem(after))
	for _, n := range nodes {
		t.Logf("%s: %.0f bytes of Go heap and %.0f bytes resident per key", n,
			float64(after[n].heap-base[n].heap)/float64(total), float64(after[n].rss-base[n].rss)/float64(total))
	}

	// Sizes: the state as a snapshot (a backup is one), the Raft log on disk.
	// The backup streams in messages of at most 1 MiB: the SDK's default
	// receive limit holds at any size.
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	started := time.Now()
	bk, err := sdk.Backup(bctx, io.Discard)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of the state (a backup, streamed and checked in %v): %s, %.0f bytes per key",
		time.Since(started).Round(time.Millisecond), mib(bk.Bytes), float64(bk.Bytes)/float64(total))
	logRaftFiles := func() {
		for _, n := range nodes {
			raftDir := filepath.Join(c.dir, n, "data", "raft")
			snap, snapName := latestSnapshot(t, raftDir)
			t.Logf("%s: raft.db %s; latest Raft snapshot %s (%s)", n, mib(fileSize(t, filepath.Join(raftDir, "raft.db"))), mib(snap), snapName)
		}
	}
	logRaftFiles()

	// Latency on one node, one client, one call at a time.
	probe := c.nodeClient("node1")
	c.latencies("Encrypt 4 KiB", aesIDs, func(ctx context.Context, id string) error {
		_, err := probe.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: make([]byte, 4096)})
		return err
	})
	c.logCache("node1")
	c.latencies("Sign P-256", signIDs, func(ctx context.Context, id string) error {
		_, err := probe.Crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: make([]byte, 32), MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
			SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
		return err
	})
	c.logCache("node1")

	// Raft snapshots once the log passes snapshot_threshold (8192), at the
	// next snapshot_interval check (2m): restarts then read a snapshot and
	// the log after it, as they would in a cluster that has run a while.
	waited := time.Now()
	for _, n := range nodes {
		for deadline := time.Now().Add(6 * time.Minute); ; time.Sleep(time.Second) {
			if _, name := latestSnapshot(t, filepath.Join(c.dir, n, "data", "raft")); name != "none yet" && name != "none" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s took no Raft snapshot in 6 minutes", n)
			}
		}
	}
	t.Logf("every node has a Raft snapshot (waited %v)", time.Since(waited).Round(time.Second))
	logRaftFiles()

	// Restarts: a follower, the leader, then the whole cluster at once.
	st = c.waitStatus("3 healthy nodes", func(st clusterStatus) error { return st.allHealthy(3) })
	follower := "node1"
	if st.Leader == follower {
		follower = "node2"
	}
	for _, n := range []string{follower, st.Leader} {
		c.script("stop", c.dir, strings.TrimPrefix(n, "node"))
		t0 := time.Now()
		c.script("start", c.dir, strings.TrimPrefix(n, "node"))
		t.Logf("restart of %s (%s) with %d keys: serving (/readyz 200) %v after its start", n,
			map[bool]string{true: "the leader", false: "a follower"}[n == st.Leader], total, time.Since(t0).Round(time.Millisecond))
		c.waitStatus("3 healthy nodes", func(st clusterStatus) error { return st.allHealthy(3) })
	}
	c.script("down", c.dir)
	t0 := time.Now()
	var wg sync.WaitGroup
	ready := make([]time.Duration, len(nodes))
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.script("start", c.dir, strconv.Itoa(i+1))
			ready[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	t.Logf("restart of the whole cluster with %d keys: nodes serving %v, %v, %v after their start", total,
		ready[0].Round(time.Millisecond), ready[1].Round(time.Millisecond), ready[2].Round(time.Millisecond))
	c.waitStatus("3 healthy nodes", func(st clusterStatus) error { return st.allHealthy(3) })
	restarted := time.Now()
	fresh := c.memoryAfterGC(restarted, nodes...)
	t.Logf("memory of freshly restarted nodes with %d keys, after a GC: %s", total, describeMem(fresh))
	for _, n := range nodes {
		t.Logf("%s restarted: %.0f bytes of Go heap and %.0f bytes resident per key (against the empty node)", n,
			float64(fresh[n].heap-base[n].heap)/float64(total), float64(fresh[n].rss-base[n].rss)/float64(total))
	}
	// A restarted node's handle cache is empty: every key is cold again.
	probe = c.nodeClient("node1")
	c.latencies("Encrypt 4 KiB after the restart", aesIDs, func(ctx context.Context, id string) error {
		_, err := probe.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: make([]byte, 4096)})
		return err
	})

	// node1 again with a handle cache that holds every key, preloaded.
	c.sizeHandleCache("node1", 131072)
	c.script("stop", c.dir, "1")
	t0 = time.Now()
	c.script("start", c.dir, "1")
	servingAfter := time.Since(t0)
	addr := c.envFile("node1")["HSMBROKER_METRICS_ADDR"]
	for deadline := time.Now().Add(15 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		m, err := scrapeMetrics(addr)
		if err == nil && m["hsmbroker_hsm_handle_cache_entries"] >= float64(total) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node1 did not preload its %d keys in 15 minutes: %v entries", total, m["hsmbroker_hsm_handle_cache_entries"])
		}
	}
	t.Logf("restart of node1 with hsm.cache_size 131072 and hsm.preload: serving %v after its start, every key loaded %v after its start",
		servingAfter.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	warm := c.memoryAfterGC(time.Now(), "node1")
	t.Logf("node1 with %d keys loaded in its HSM, after a GC: heap %s RSS %s; %.0f bytes of Go heap and %.0f bytes resident per key (against the empty node)",
		total, mib(warm["node1"].heap), mib(warm["node1"].rss), float64(warm["node1"].heap-base["node1"].heap)/float64(total),
		float64(warm["node1"].rss-base["node1"].rss)/float64(total))
	probe = c.nodeClient("node1")
	c.latencies("Encrypt 4 KiB, every key preloaded", aesIDs, func(ctx context.Context, id string) error {
		_, err := probe.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: make([]byte, 4096)})
		return err
	})
	c.latencies("Sign P-256, every key preloaded", signIDs, func(ctx context.Context, id string) error {
		_, err := probe.Crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: make([]byte, 32), MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
			SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
		return err
	})
	c.logCache("node1")
}

// sizeHandleCache sets a node's hsm.cache_size and turns hsm.preload on,
// for its next start.
func (c *localCluster) sizeHandleCache(node string, size int) {
	c.t.Helper()
	path := filepath.Join(c.dir, node, "hsmbrokerd.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	const anchor = "  pin_file: softhsm/user.pin\n"
	if !strings.Contains(string(b), anchor) {
		c.t.Fatalf("%s: no %q line to add the cache settings after", path, strings.TrimSpace(anchor))
	}
	b = []byte(strings.Replace(string(b), anchor, anchor+fmt.Sprintf("  cache_size: %d\n  preload: true\n", size), 1))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// createKeys creates n keys of spec with 64 concurrent clients and returns
// their ids.
func (c *localCluster) createKeys(sdk *client.Client, kind string, n int, spec pb.KeySpec) []string {
	c.t.Helper()
	ids := make([]string, n)
	var next, done, retries atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				alias := fmt.Sprintf("alias/scale-%s-%d", kind, i)
				var md *pb.KeyMetadata
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					var resp *pb.CreateKeyResponse
					resp, err = sdk.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: alias, KeySpec: spec})
					md = resp.GetKeyMetadata()
					if attempt > 0 && client.AWSException(err) == "AlreadyExistsException" {
						// An earlier attempt whose answer was lost made it.
						var d *pb.DescribeKeyResponse
						d, err = sdk.Keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: alias})
						md = d.GetKeyMetadata()
					}
					cancel()
					if err == nil {
						break
					}
					if retries.Add(1) <= 5 {
						c.t.Logf("  create %s: %v (retrying)", alias, err)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("create %s: %w", alias, err)
					return
				}
				ids[i] = md.GetKeyId()
				if d := done.Add(1); d%20000 == 0 {
					c.t.Logf("  %d %s keys created, %.0f/s", d, kind, float64(d)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
	return ids
}

// nodeClient is an SDK client of one node only.
func (c *localCluster) nodeClient(node string) *client.Client {
	c.t.Helper()
	env := c.envFile(node)
	cl, err := client.Dial(context.Background(), client.Config{Endpoints: []string{env["HSMBROKER_ADDR"]},
		CAFile: env["HSMBROKER_CA"], CertFile: env["HSMBROKER_CERT"], KeyFile: env["HSMBROKER_KEY"]})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// latencies times call, one at a time, on keys picked at random among
// all of ids (the steady state of a large key set: mostly handle cache
// misses once it exceeds the cache), on keys never used on this node
// (cold), and on the same keys again (warm). Every call is paired with
// one on ten keys used over and over, so that both see the same moment of
// a shared machine; each figure is compared with its own pairs'.
func (c *localCluster) latencies(what string, ids []string, call func(context.Context, string) error) {
	c.t.Helper()
	const samples = 2000
	ctx := context.Background()
	ten := ids[:10]
	do := func(id string) time.Duration {
		t0 := time.Now()
		if err := call(ctx, id); err != nil {
			c.t.Fatalf("%s: %v", what, err)
		}
		return time.Since(t0)
	}
	for i := range 100 {
		do(ten[i%10])
	}
	pairs := func(keys []string) (tens, set []time.Duration) {
		for i, id := range keys {
			tens = append(tens, do(ten[i%10]))
			set = append(set, do(id))
		}
		slices.Sort(tens)
		slices.Sort(set)
		return tens, set
	}
	// Cold keys are set aside first (at most half of the keys), so that
	// the random draws, from the rest, never touch them.
	perm := rand.Perm(len(ids) - 10)
	nFresh := min(samples/2, len(perm)/2)
	fresh := make([]string, nFresh)
	for i := range fresh {
		fresh[i] = ids[10+perm[i]]
	}
	rest := perm[nFresh:]
	randomAll := make([]string, samples)
	for i := range randomAll {
		randomAll[i] = ids[10+rest[rand.IntN(len(rest))]]
	}
	p := func(d []time.Duration, q float64) time.Duration {
		return d[min(len(d)-1, int(float64(len(d))*q))].Round(time.Microsecond)
	}
	line := func(name string, tens, set []time.Duration) string {
		return fmt.Sprintf("%s p50 %v p99 %v against 10 keys p50 %v p99 %v: %.2fx", name, p(set, .5), p(set, .99),
			p(tens, .5), p(tens, .99), float64(p(set, .5))/float64(p(tens, .5)))
	}
	tA, rAll := pairs(randomAll)
	tB, cold := pairs(fresh)
	tC, warm := pairs(fresh)
	c.t.Logf("%s, one client, one call at a time: %s | %s | %s", what,
		line(fmt.Sprintf("random key of %d", len(ids)), tA, rAll), line("cold key", tB, cold), line("warm key", tC, warm))
}

// logCache logs a node's handle cache figures.
func (c *localCluster) logCache(node string) {
	c.t.Helper()
	m, err := scrapeMetrics(c.envFile(node)["HSMBROKER_METRICS_ADDR"])
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("%s handle cache: %.0f entries of %.0f, %.0f hits, %.0f misses so far", node, m["hsmbroker_hsm_handle_cache_entries"],
		m["hsmbroker_hsm_handle_cache_capacity"], m["hsmbroker_hsm_handle_cache_hits_total"], m["hsmbroker_hsm_handle_cache_misses_total"])
}

// memSample is a node's memory as its /metrics reports it.
type memSample struct{ heap, rss int64 }

func describeMem(m map[string]memSample) string {
	var parts []string
	for _, n := range []string{"node1", "node2", "node3"} {
		parts = append(parts, fmt.Sprintf("%s heap %s RSS %s", n, mib(m[n].heap), mib(m[n].rss)))
	}
	return strings.Join(parts, "; ")
}

// memoryAfterGC waits for a garbage collection that began after since
// (an idle node's runtime forces one at least every two minutes) and
// reads the heap within a moment of it: about the live heap of an idle
// node. The nodes are measured in parallel.
func (c *localCluster) memoryAfterGC(since time.Time, nodes ...string) map[string]memSample {
	c.t.Helper()
	out := map[string]memSample{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range nodes {
		addr := c.envFile(node)["HSMBROKER_METRICS_ADDR"]
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(5 * time.Minute)
			for time.Now().Before(deadline) {
				m, err := scrapeMetrics(addr)
				now := float64(time.Now().UnixNano()) / 1e9
				last := m["go_memstats_last_gc_time_seconds"]
				if err == nil && last > float64(since.UnixNano())/1e9 && now-last < 0.3 {
					mu.Lock()
					out[node] = memSample{heap: int64(m["go_memstats_heap_alloc_bytes"]), rss: int64(m["process_resident_memory_bytes"])}
					mu.Unlock()
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		if _, ok := out[n]; !ok {
			c.t.Fatalf("%s: no garbage collection seen for 5 minutes", n)
		}
	}
	return out
}

// scrapeMetrics reads the series of a node's /metrics, labels included in
// the names as the exposition format writes them.
func scrapeMetrics(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val, ok := line[:i], line[i+1:], true
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// latestSnapshot returns the size of the newest Raft snapshot's state and
// its directory name.
func latestSnapshot(t *testing.T, raftDir string) (int64, string) {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(raftDir, "snapshots"))
	if err != nil {
		return 0, "none"
	}
	last, newest := "", time.Time{}
	for _, e := range es {
		fi, err := e.Info()
		if err == nil && e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") && fi.ModTime().After(newest) {
			last, newest = e.Name(), fi.ModTime()
		}
	}
	if last == "" {
		return 0, "none yet"
	}
	return fileSize(t, filepath.Join(raftDir, "snapshots", last, "state.bin")), last
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
