package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReadIndexSkipsEntriesTheStateNeverSees: after a configuration change
// and after an election, the last entries of the log are ones raft does not
// hand to the FSM (a configuration entry, the new leader's no-op), so no
// member's State ever reaches the commit index until the next command.
// ReadIndex answers the last command's index instead, which every member
// reaches, and after a command exactly that command's index.
func TestReadIndexSkipsEntriesTheStateNeverSees(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	n1 := openNode(t, testConfig(t, "n1", true))
	n2 := openNode(t, testConfig(t, "n2", false))
	waitLeader(t, n1)
	ctx := testContext(t, 30*time.Second)
	mustApply(t, n1, &CreateKey{Key: symKey("k1"), Alias: "alias/k1"})
	addVoters(t, ctx, n1, n2)
	reached := func(leader *Node, what string) {
		t.Helper()
		index, err := leader.ReadIndex(ctx)
		if err != nil {
			t.Fatalf("%s: ReadIndex: %v", what, err)
		}
		if commit := leader.Stats().CommitIndex; index >= commit {
			t.Fatalf("%s: ReadIndex %d, commit index %d: the last entries change no state and should be skipped", what, index, commit)
		}
		for _, n := range []*Node{n1, n2} {
			waitFor(t, 10*time.Second, what+": "+n.ID()+"'s state reaches the read index", func() bool {
				applied, _ := n.State().LastApplied()
				return applied >= index
			})
		}
	}
	reached(n1, "after a configuration change")

	if err := n1.TransferLeadership(ctx, n2.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 leads", n2.IsLeader)
	reached(n2, "after an election")

	mustApply(t, n2, &CreateKey{Key: symKey("k2"), Alias: "alias/k2"})
	index, err := n2.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if applied, _ := n2.State().LastApplied(); index != applied || index != n2.Stats().CommitIndex {
		t.Fatalf("after a command: ReadIndex %d, leader's state at %d, commit index %d; want all three equal", index, applied, n2.Stats().CommitIndex)
	}
	if _, err := n1.ReadIndex(ctx); err == nil {
		t.Fatal("ReadIndex answered on a follower")
	}
}

// TestReadIndexAfterARestart: raft starts every node at commit index 0,
// whatever its log holds, and a node elected after a restart stays there
// until its election's no-op commits, which here waits for the returning
// member to receive 4,000 entries. A read index taken meanwhile must not
// be 0: that would let a member answer "not found" for writes acknowledged
// before the restart.
func TestReadIndexAfterARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	c1, c2, c3 := testConfig(t, "n1", true), testConfig(t, "n2", false), testConfig(t, "n3", false)
	n1, n2, n3 := openNode(t, c1), openNode(t, c2), openNode(t, c3)
	waitLeader(t, n1)
	ctx := testContext(t, 120*time.Second)
	addVoters(t, ctx, n1, n2, n3)
	mustApply(t, n1, &CreateKey{Key: symKey("k0"), Alias: "alias/k0"})
	waitSameDigest(t, n1, n2, n3)
	c1.RaftAddr, c2.RaftAddr, c3.RaftAddr = n1.Addr(), n2.Addr(), n3.Addr()
	_ = n3.Shutdown()
	// Acknowledged by n1 and n2 while n3 is away.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range 4000 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := n1.Apply(ctx, &CreateKey{Key: symKey(fmt.Sprintf("k%d", i+1))}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	acked, _ := n1.State().LastApplied()
	_ = n1.Shutdown()
	_ = n2.Shutdown()
	// n1 and n3 return, n2 stays down: n1 leads, and its no-op commits only
	// once n3 holds the log.
	n1 = openNode(t, c1)
	openNode(t, c3) // closed by the test's cleanup
	waitFor(t, 20*time.Second, "n1 to lead", n1.IsLeader)
	for i := 0; i < 200 && n1.raft.CommitIndex() == 0; i++ {
		if index, err := n1.ReadIndex(ctx); err == nil && index < acked {
			t.Fatalf("writes up to index %d were acknowledged before the restart; the new leader's read index was %d (commit index %d)",
				acked, index, n1.raft.CommitIndex())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadIndexAfterASnapshotInstall: a follower that caught up by
// installing a snapshot holds no entry at or below the snapshot's index,
// and it learns the commit index only from the next append, which carries
// the leader's commit index from before that append's own entry. Elected
// then, with that append's entry committed by the previous leader and
// acknowledged, its commit index points at an entry it never had. Taking
// that index as current would let a read miss the acknowledged write: the
// new leader must wait, as after any election, until an entry of its own
// term commits.
//
// How the test holds the moment: the writer (a) has a CommitTimeout of a
// minute, so after the last write nothing more reaches the followers; c,
// handed the leadership, is cut off from everyone the moment it leads, so
// its election's no-op cannot commit.
//
// The moment depends on how replication to c resumes (a retry after the
// cut can carry the commit index, or the entry, to c), so the set-up is
// checked, and made again on a new cluster when it did not come about.
func TestReadIndexAfterASnapshotInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	ca := newTestCA(t, "hsmbroker test cluster CA")
	var missed []string
	for range 5 {
		why := readIndexAfterASnapshotInstall(t, ca)
		if why == "" {
			return
		}
		missed = append(missed, why)
	}
	t.Fatalf("the set-up never came about: %q", missed)
}

// readIndexAfterASnapshotInstall is one attempt of
// TestReadIndexAfterASnapshotInstall on a new cluster. It says why the
// set-up did not come about, or "" once the read index was checked.
func readIndexAfterASnapshotInstall(t *testing.T, ca *testCA) (setupMissed string) {
	var (
		mu        sync.Mutex
		isolated  = map[string]bool{}
		cutLeader *Node // cut off from every peer while it leads
	)
	off := func(id string) bool {
		if isolated[id] {
			return true
		}
		return cutLeader != nil && cutLeader.ID() == id && cutLeader.IsLeader()
	}
	open := func(id string, bootstrap bool) *Node {
		cfg := testConfig(t, id, bootstrap)
		cfg.TLS = ca.nodeTLS(t, id)
		cfg.TrailingLogs = 1
		if bootstrap {
			cfg.CommitTimeout = time.Minute
		}
		cfg.LinkFilter = func(peer string) bool {
			mu.Lock()
			defer mu.Unlock()
			return !off(id) && !off(peer)
		}
		return openNode(t, cfg)
	}
	set := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
	}
	a, b, c := open("a", true), open("b", false), open("c", false)
	defer func() {
		for _, n := range []*Node{a, b, c} {
			_ = n.Shutdown()
		}
	}()
	waitLeader(t, a)
	ctx := testContext(t, 60*time.Second)
	addVoters(t, ctx, a, b, c)
	mustApply(t, a, &CreateKey{Key: symKey("k0")})

	// c misses entries that a then compacts into a snapshot.
	set(func() { isolated["c"] = true })
	for i := range 5 {
		mustApply(t, a, &CreateKey{Key: symKey(fmt.Sprintf("k%d", i+1))})
	}
	if err := a.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snap := a.Stats().CommitIndex
	if first := a.Stats().FirstLogIndex; first <= c.Stats().LastLogIndex+1 {
		return fmt.Sprintf("a's log starts at %d, c's ends at %d: c would catch up without the snapshot", first, c.Stats().LastLogIndex)
	}
	set(func() { isolated["c"] = false })
	waitFor(t, 10*time.Second, "c to install a's snapshot", func() bool {
		applied, _ := c.State().LastApplied()
		return applied >= snap
	})

	// The acknowledged write: c appends it, and learns only that the
	// snapshot's index is committed.
	mustApply(t, a, &CreateKey{Key: symKey("acked")})
	acked, _ := a.State().LastApplied()
	waitFor(t, 10*time.Second, "c to append the acknowledged write", func() bool {
		return c.Stats().LastLogIndex >= acked
	})
	commit := c.raft.CommitIndex()
	var l raft.Log
	if commit >= acked || c.logs.GetLog(commit, &l) == nil {
		return fmt.Sprintf("c's commit index is %d (the write is %d), its entry in c's log: %v; the test needs an index c never held, below the write",
			commit, acked, c.logs.GetLog(commit, &l) == nil)
	}

	set(func() { cutLeader = c })
	if err := a.TransferLeadership(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !c.IsLeader(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return "c was handed the leadership and did not lead within 10 s"
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	index, err := c.LocalReadIndex(rctx)
	cancel()
	if err == nil && index < acked {
		t.Fatalf("the write at index %d was acknowledged before c led; c's read index was %d (its commit index %d, an entry it never held)",
			acked, index, commit)
	}

	// Once c may reach the others, reads see the write.
	set(func() { cutLeader = nil })
	leader := waitLeader(t, a, b, c)
	index, err = leader.LocalReadIndex(ctx)
	if err != nil || index < acked {
		t.Fatalf("after the link came back, %s's read index is %d, %v; want at least %d", leader.ID(), index, err, acked)
	}
	return ""
}
