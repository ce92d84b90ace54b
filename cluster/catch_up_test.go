package cluster

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAppendOutcomes: what one AppendEntries answer says of a follower's
// log. A heartbeat carries no log position, and a refused request says
// nothing of a match, so neither is recorded.
func TestAppendOutcomes(t *testing.T) {
	entries := func(from, to uint64) []*raft.Log {
		var l []*raft.Log
		for i := from; i <= to; i++ {
			l = append(l, &raft.Log{Index: i, Term: 2})
		}
		return l
	}
	tests := []struct {
		name         string
		req          raft.AppendEntriesRequest
		success      bool
		recorded     bool
		wantCaughtUp bool
	}{
		{"a heartbeat", raft.AppendEntriesRequest{Term: 2}, true, false, false},
		{"refused", raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 90, LeaderCommitIndex: 90}, false, false, false},
		{"entries up to the commit index", raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 10, Entries: entries(11, 90), LeaderCommitIndex: 90}, true, true, true},
		{"entries short of the commit index", raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 10, Entries: entries(11, 74), LeaderCommitIndex: 90}, true, true, false},
		{"entries from the first, past the commit index", raft.AppendEntriesRequest{Term: 2, Entries: entries(1, 95), LeaderCommitIndex: 90}, true, true, true},
		{"no entries, matched at the commit index", raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 90, LeaderCommitIndex: 90}, true, true, true},
		{"no entries, matched short of it", raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 89, LeaderCommitIndex: 90}, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f followerLogs
			f.appended("n2", &tt.req, &raft.AppendEntriesResponse{Term: 2, Success: tt.success})
			o, ok := f.outcome("n2")
			if ok != tt.recorded || o.caughtUp != tt.wantCaughtUp {
				t.Fatalf("recorded %v, caught up %v; want %v, %v", ok, o.caughtUp, tt.recorded, tt.wantCaughtUp)
			}
			if ok && o.term != 2 {
				t.Fatalf("term %d, want 2", o.term)
			}
		})
	}
}

// serverVoter reports whether n's latest configuration has id, and as a
// voter.
func serverVoter(n *Node, id string) (member, voter bool) {
	for _, s := range n.Stats().Servers {
		if s.ID == id {
			return true, s.Voter
		}
	}
	return false, false
}

// TestNonvoterCatchesUpThenIsPromoted: a member added as a non-voter is
// shown so, catches up (here from a snapshot, the leader having compacted
// its log), is then seen caught up by the leader, and PromoteNonvoter
// makes it a voter. A non-voter that never answers is never seen caught
// up. PromoteNonvoter refuses what it cannot do.
func TestNonvoterCatchesUpThenIsPromoted(t *testing.T) {
	small := func(cfg Config) Config {
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 50 * time.Millisecond
		return cfg
	}
	n1 := openNode(t, small(testConfig(t, "n1", true)))
	waitLeader(t, n1)
	ctx := testContext(t, 60*time.Second)
	for i := range 200 {
		if _, err := n1.Apply(ctx, &CreateKey{Key: symKey(fmt.Sprintf("key-%03d", i)), Alias: fmt.Sprintf("alias/key-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "n1 to compact its log", func() bool { return n1.Stats().FirstLogIndex > 1 })

	// A member that takes no connection.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	if err := n1.AddNonvoter(ctx, "x", dead); err != nil {
		t.Fatal(err)
	}

	n2 := openNode(t, small(testConfig(t, "n2", false)))
	if err := n1.AddNonvoter(ctx, "n2", n2.Addr()); err != nil {
		t.Fatal(err)
	}
	added := n1.Stats().CommitIndex
	if member, voter := serverVoter(n1, "n2"); !member || voter {
		t.Fatalf("after AddNonvoter, n2 member %v voter %v; want a non-voter", member, voter)
	}
	waitFor(t, 30*time.Second, "the leader to see n2 caught up", func() bool { return n1.CaughtUp("n2") })
	// The request that found it so may have left before n2's own
	// admission committed.
	if got := n2.Stats().LastLogIndex; got < added-1 {
		t.Fatalf("n2 seen caught up with its log at %d, short of %d, committed before its admission", got, added-1)
	}
	if _, ok := n2.State().Key("key-199"); !ok {
		waitFor(t, 10*time.Second, "n2 to apply the last key", func() bool { _, ok := n2.State().Key("key-199"); return ok })
	}
	if n1.CaughtUp("x") {
		t.Fatal("a member that never answered is seen caught up")
	}
	if n2.CaughtUp("n1") || n2.CaughtUp("n2") {
		t.Fatal("a follower reports catch-up, which only the leader sees")
	}

	for _, tt := range []struct {
		name, id, addr string
		want           error
	}{
		{"not a member", "nobody", "127.0.0.1:1", ErrNotFound},
		{"another address", "n2", dead, ErrInvalidState},
		{"a voter", "n1", n1.Addr(), ErrInvalidState},
	} {
		if err := n1.PromoteNonvoter(ctx, tt.id, tt.addr); !errors.Is(err, tt.want) {
			t.Errorf("promote %s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := n2.PromoteNonvoter(ctx, "n2", n2.Addr()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("promote on a follower: %v, want ErrNotLeader", err)
	}
	if err := n1.PromoteNonvoter(ctx, "n2", n2.Addr()); err != nil {
		t.Fatal(err)
	}
	if member, voter := serverVoter(n1, "n2"); !member || !voter {
		t.Fatalf("after PromoteNonvoter, n2 member %v voter %v; want a voter", member, voter)
	}
	waitFor(t, 10*time.Second, "n2 to apply its promotion", func() bool { _, v := serverVoter(n2, "n2"); return v })
	if member, voter := serverVoter(n1, "x"); !member || voter {
		t.Fatalf("x member %v voter %v; want a non-voter still", member, voter)
	}
}

// TestNonvoterDoesNotCountTowardQuorum: one voter and one non-voter; the
// non-voter stops and the voter still commits writes, as it could not had
// the second member been added as a voter.
func TestNonvoterDoesNotCountTowardQuorum(t *testing.T) {
	n1 := openNode(t, testConfig(t, "n1", true))
	waitLeader(t, n1)
	ctx := testContext(t, 30*time.Second)
	n2 := openNode(t, testConfig(t, "n2", false))
	if err := n1.AddNonvoter(ctx, "n2", n2.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 to catch up", func() bool { return n1.CaughtUp("n2") })
	if err := n2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	wctx := testContext(t, 5*time.Second)
	if _, err := n1.Apply(wctx, &CreateKey{Key: symKey("after-stop"), Alias: "alias/after-stop"}); err != nil {
		t.Fatalf("a write with the non-voter stopped: %v", err)
	}
	if !n1.IsLeader() {
		t.Fatal("n1 stopped leading when the non-voter stopped")
	}
	waitFor(t, 10*time.Second, "n1 to stop seeing n2 caught up", func() bool { return !n1.CaughtUp("n2") })
}

// TestAnswered: the leader counts a member as answering only on evidence,
// a successful replication answer of its term within a heartbeat timeout:
// true for live members, false once one stops, and false on a follower.
func TestAnswered(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	ctx := testContext(t, 30*time.Second)
	n1, n2, n3 := threeVoters(t, ctx)
	waitFor(t, 10*time.Second, "n1 to hear from n2 and n3", func() bool { return n1.Answered("n2") && n1.Answered("n3") })
	if n2.Answered("n1") || n2.Answered("n3") {
		t.Fatal("a follower counts members as answering it")
	}
	_ = n3.Shutdown()
	waitFor(t, 10*time.Second, "n1 to stop counting the stopped n3", func() bool { return !n1.Answered("n3") })
	if !n1.Answered("n2") {
		t.Fatal("n1 stopped counting the live n2")
	}
}

// TestMemberAtAnotherMembersAddressIsNotCounted: a member added at the
// Raft address of another member, under another name for it (a wrong
// raft_advertise), reaches that other node, which answers in its own name.
// Its answers must not count for the member added: not as catching up, so
// it is never promoted, and not as a vote, so no node's vote counts twice
// toward a quorum.
func TestMemberAtAnotherMembersAddressIsNotCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	ctx := testContext(t, 30*time.Second)
	n1, n2, n3 := threeVoters(t, ctx)
	// raft refuses an address twice in its configuration; another name
	// for it is not the same string.
	_, port, _ := net.SplitHostPort(n2.Addr())
	alias := net.JoinHostPort("localhost", port)
	if err := n1.AddNonvoter(ctx, "ghost", alias); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Apply(ctx, &CreateKey{Key: symKey("after-ghost"), Alias: "alias/after-ghost"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if n1.CaughtUp("ghost") || n1.Answered("ghost") {
			t.Fatalf("the leader counts n2's answers, at n2's address, for the member ghost added there: caught up %v, answered %v",
				n1.CaughtUp("ghost"), n1.Answered("ghost"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !n1.CaughtUp("n2") {
		t.Fatal("n2 itself is not seen caught up")
	}
	// Made a voter outright, ghost is a fourth voter whose vote would be
	// n2's. With n1 stopped, two of the four voters are up: n2 must not be
	// elected with its own vote counted twice, nor n3 with n2's.
	if err := n1.AddVoter(ctx, "ghost", alias); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Apply(ctx, &CreateKey{Key: symKey("ghost-voter"), Alias: "alias/ghost-voter"}); err != nil {
		t.Fatal(err)
	}
	if err := n1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second) // ten election timeouts
	for time.Now().Before(deadline) {
		for _, n := range []*Node{n2, n3} {
			if n.IsLeader() {
				t.Fatalf("%s was elected with two of four voters up: ghost's vote, answered by n2, counted", n.ID())
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
