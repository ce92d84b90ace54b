package broker_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestNewLeaderNeverSaysNotFoundForAnAcknowledgedKey: a node elected
// leader a moment ago never answers NotFound for a key the previous leader
// acknowledged.
//
// Why it could: a Raft follower applies an entry only once it learns that
// the entry is committed, and it learns that from the leader's next
// AppendEntries. A follower that holds the key's entry in its log but was
// not told yet that it is committed, and then wins an election, applies
// the key only once the no-op of its own term commits, which takes an
// answer from another voter. Until then its state machine has no such key,
// and a leader that answers a lookup from it without first taking its read
// index (which waits for that no-op and confirms leadership with a quorum)
// says NotFound.
//
// How the test holds that window open: the leader that takes the write
// (the writer) has a CommitTimeout of a minute, so nothing tells the
// followers that the key's entry is committed, and the node records are
// not rewritten during the test (HeartbeatRefresh). Leadership is handed
// to the writer once the others have joined, so that their joins do not
// wait on its CommitTimeout. The writer is then cut off from both
// followers, which elect one of them. The moment that new leader first
// speaks to the other follower as leader (the Raft link filter sees it),
// the link between the two is cut as well: the new leader leads for its
// lease (LeaderLeaseTimeout) with the key in its log but not applied and
// no way to commit its no-op, and steps down. Both followers are asked for
// the key every millisecond from the partition on; while no leader can
// confirm the state, Unavailable is right, NotFound never is. Once the new
// leader steps down the link comes back, a leader is elected that can
// commit, and both followers must then serve the key.
func TestNewLeaderNeverSaysNotFoundForAnAcknowledgedKey(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const writerID = "node2"
	cut := &electionCut{}
	c := hsmtest.NewEmptyCluster(t, func(cfg *cluster.Config) {
		if cfg.NodeID == writerID {
			// Only the writer's: the leader elected after it must tell its
			// follower of commits at once, for both to serve the key in
			// the end.
			cfg.CommitTimeout = time.Minute
		}
		self, partition := cfg.NodeID, cfg.LinkFilter
		cfg.LinkFilter = func(peer string) bool { return cut.allow(self, peer) && partition(peer) }
	})
	c.HeartbeatRefresh = time.Hour
	for range 3 {
		c.AddNode()
	}
	ctx := ctxT(t)
	writer := c.Nodes[1]
	if lead := c.Leader(t); lead != writer {
		if err := lead.Raft.TransferLeadership(ctx, writer.ID); err != nil {
			t.Fatalf("hand leadership to %s: %v", writer.ID, err)
		}
	}
	followers := slices.DeleteFunc(slices.Clone(c.Nodes), func(nd *hsmtest.Node) bool { return nd == writer })
	hsmtest.WaitUntil(t, "every node to follow "+writer.ID, 10*time.Second, func() bool {
		for _, nd := range followers {
			if id, _ := nd.Raft.Leader(); id != writer.ID {
				return false
			}
		}
		return writer.Raft.IsLeader()
	})

	wk, _ := nodeClients(t, c, writer.Index)
	created, err := wk.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/acknowledged"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetKeyMetadata().GetKeyId()
	at, _ := writer.Raft.State().LastApplied()
	holders := 0
	for _, f := range followers {
		if _, ok := f.Raft.State().Key(id); ok {
			t.Fatalf("setup: %s applied key %s before the partition, so it learned that the entry is committed: "+
				"the test needs the followers not to know it (is the writer's CommitTimeout long, and does nothing else write?)", f.ID, id)
		}
		if f.Raft.Stats().LastLogIndex >= at {
			holders++
		}
	}
	if holders == 0 {
		t.Fatalf("setup: no follower has the key's entry %d in its log, yet the writer acknowledged it", at)
	}

	clients := make([]pb.KeyServiceClient, len(followers))
	for i, f := range followers {
		clients[i], _ = nodeClients(t, c, f.Index)
	}
	cut.arm(followers, id)
	c.Partition([]*hsmtest.Node{writer}, followers)
	defer c.Heal()
	partitioned := time.Now()

	type answers struct {
		ok, unavailable, askedWhileCut int
		notFound                       int
		firstNotFound                  string
		firstNotFoundAt                time.Duration
		other                          []string
	}
	var mu sync.Mutex
	got := make([]answers, len(followers))
	served := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range got {
			if a.ok == 0 {
				return false
			}
		}
		return true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, f := range followers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				whileCut := cut.leads(f)
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := clients[i].DescribeKey(cctx, &pb.DescribeKeyRequest{KeyId: id})
				cancel()
				mu.Lock()
				a := &got[i]
				if whileCut {
					a.askedWhileCut++
				}
				switch code := status.Code(err); code {
				case codes.OK:
					a.ok++
				case codes.NotFound:
					if a.notFound == 0 {
						a.firstNotFound, a.firstNotFoundAt = err.Error(), time.Since(partitioned)
					}
					a.notFound++
				case codes.Unavailable, codes.DeadlineExceeded:
					a.unavailable++
				default:
					if len(a.other) < 5 {
						a.other = append(a.other, err.Error())
					}
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for !served() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	leader, had, from, to := cut.outcome()
	if leader == nil {
		t.Fatal("neither follower was seen leading: the test never opened the window it is about")
	}
	if had {
		t.Fatalf("setup: %s had applied key %s when it was elected: the window the test is about was not open", leader.ID, id)
	}
	if to.IsZero() {
		to = time.Now() // still cut off: no leader could commit
	}
	t.Logf("%s was elected %v after the partition and led cut off for %v", leader.ID, from.Sub(partitioned).Round(time.Millisecond), to.Sub(from).Round(time.Millisecond))
	for i, f := range followers {
		a := got[i]
		t.Logf("%s: %d OK, %d Unavailable, %d NotFound, %d asked while it led cut off", f.ID, a.ok, a.unavailable, a.notFound, a.askedWhileCut)
		if a.notFound > 0 {
			t.Errorf("%s answered NotFound %d times for key %s, which the previous leader %s acknowledged; first %v after the partition: %s",
				f.ID, a.notFound, id, writer.ID, a.firstNotFoundAt.Round(time.Millisecond), a.firstNotFound)
		}
		if len(a.other) > 0 {
			t.Errorf("%s answered neither the key, NotFound nor Unavailable: %q", f.ID, a.other)
		}
		if a.ok == 0 {
			t.Errorf("%s never served key %s after the election", f.ID, id)
		}
	}
	if got[slices.Index(followers, leader)].askedWhileCut == 0 {
		t.Errorf("%s was never asked while it led cut off: the test did not look into the window it is about", leader.ID)
	}
}

// electionCut cuts the Raft link between two nodes from the moment either
// is seen leading until it no longer leads, once: it is consulted, as the
// nodes' link filter, on every Raft read and write, so the new leader's
// first message as leader (its no-op, or a heartbeat) never leaves.
type electionCut struct {
	mu     sync.Mutex
	pair   []*hsmtest.Node
	key    string
	leader *hsmtest.Node // the one of pair seen leading first
	had    bool          // leader had applied key when it was seen leading
	from   time.Time     // when leader was seen leading
	to     time.Time     // when it was seen no longer leading: the link is back
}

// arm watches pair from now on; key is the key the leader must not have
// applied when it is elected.
func (w *electionCut) arm(pair []*hsmtest.Node, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pair, w.key = pair, key
}

func (w *electionCut) allow(self, peer string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	a, b := w.member(self), w.member(peer)
	if a == nil || b == nil || !w.to.IsZero() {
		return true
	}
	if w.leader == nil {
		for _, nd := range []*hsmtest.Node{a, b} {
			if nd.Raft.IsLeader() {
				w.leader, w.from = nd, time.Now()
				_, w.had = nd.Raft.State().Key(w.key)
				break
			}
		}
		if w.leader == nil {
			return true
		}
	}
	if w.leader.Raft.IsLeader() {
		return false
	}
	w.to = time.Now()
	return true
}

func (w *electionCut) member(id string) *hsmtest.Node {
	for _, nd := range w.pair {
		if nd.ID == id {
			return nd
		}
	}
	return nil
}

// leads reports whether nd leads, cut off from the other node of the pair.
func (w *electionCut) leads(nd *hsmtest.Node) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader == nd && w.to.IsZero() && nd.Raft.IsLeader()
}

func (w *electionCut) outcome() (leader *hsmtest.Node, had bool, from, to time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader, w.had, w.from, w.to
}
