package broker_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// suffrage is how node id stands in nd's latest Raft configuration:
// "voter", "non-voter" or "" when it is not named.
func suffrage(nd *hsmtest.Node, id string) string {
	for _, s := range nd.Raft.Stats().Servers {
		if s.ID == id {
			if s.Voter {
				return "voter"
			}
			return "non-voter"
		}
	}
	return ""
}

// recordReady reports whether on's state holds node id's own record, showing
// its HSM answering and holding the domain key: half of what a promotion
// waits for (the other half is the leader's Raft.CaughtUp).
func recordReady(on *hsmtest.Node, id string) bool {
	rec, ok := on.Raft.State().Node(id)
	return ok && rec.Partition.Health == "ok" && rec.Partition.DomainKeyPresent
}

// clusterStatus is the cluster status node i answers (to an operator).
func clusterStatus(t *testing.T, c *hsmtest.Cluster, i int) *pb.GetClusterStatusResponse {
	t.Helper()
	st, err := pb.NewClusterServiceClient(c.Dial(i, "ops")).GetClusterStatus(ctxT(t), &pb.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// statusRole is the role node id has in the cluster status node i
// answers.
func statusRole(t *testing.T, c *hsmtest.Cluster, i int, id string) pb.NodeRole {
	t.Helper()
	for _, n := range clusterStatus(t, c, i).GetNodes() {
		if n.GetId() == id {
			return n.GetRole()
		}
	}
	t.Fatalf("node %s answers a status without %s", c.Nodes[i].ID, id)
	return 0
}

// joinByHand adds a node to c whose join the test makes: the node's first
// join fails before it asks the cluster (its HSM refuses the transport key
// once), which leaves it with Raft and gRPC running and no loops; then it
// joins. Until its loops run it writes no record of its own, so nothing
// shows the leader its HSM holding the domain key.
func joinByHand(t *testing.T, c *hsmtest.Cluster, ctx context.Context) *hsmtest.Node {
	t.Helper()
	var firstErr error
	c.BeforeStart = func(nd *hsmtest.Node) {
		nd.Faults.Add(hsm.FaultRule{Call: "C_GenerateKeyPair", Code: hsm.CKRDeviceError, Times: 1})
	}
	c.OnJoinError = func(_ *hsmtest.Node, err error) { firstErr = err }
	nd := c.AddNode()
	c.BeforeStart, c.OnJoinError = nil, nil
	if firstErr == nil {
		t.Fatalf("%s joined with its transport key refused", nd.ID)
	}
	var seeds []string
	for _, o := range c.Nodes {
		if o != nd {
			seeds = append(seeds, o.GRPCAddr)
		}
	}
	tok, err := pb.NewClusterServiceClient(c.Dial(0, "admin")).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: nd.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Daemon.Join(ctx, broker.JoinConfig{Seeds: seeds, Token: tok.GetToken(), GRPCAddr: nd.GRPCAddr}); err != nil {
		t.Fatalf("%s: join: %v", nd.ID, err)
	}
	return nd
}

// runLoops starts nd's own record and readiness loops, as the daemon does
// after a join, until the test ends.
func runLoops(t *testing.T, nd *hsmtest.Node) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { nd.Daemon.Heartbeat(ctx); done <- struct{}{} }()
	go func() { nd.Daemon.WatchHealth(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
}

// TestJoinedNodeIsANonvoterUntilCaughtUp: a joined node is a non-voter,
// shown so by the leader's status and by its own, until its own record
// says its HSM holds the domain key and the leader sees its log caught
// up; then the leader makes it a voter. (Before, JoinCluster added a
// voter outright.)
func TestJoinedNodeIsANonvoterUntilCaughtUp(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 1)
	ctx := ctxT(t)
	leader := c.Nodes[0]
	nd := joinByHand(t, c, ctx)
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s after its join is %q in the leader's configuration, want non-voter", nd.ID, got)
	}
	hsmtest.WaitUntil(t, nd.ID+" to know itself a member", 10*time.Second, func() bool { return suffrage(nd, nd.ID) != "" })
	for i, who := range []string{"the leader", "the node itself"} {
		if role := statusRole(t, c, i, nd.ID); role != pb.NodeRole_NODE_ROLE_NON_VOTER {
			t.Errorf("%s shows %s as %v, want NODE_ROLE_NON_VOTER", who, nd.ID, role)
		}
	}
	// A write through the leader now does not wait for the non-voter.
	keys, _ := nodeClients(t, c, 0)
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/while-joining"}); err != nil {
		t.Fatal(err)
	}
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s is %q before it wrote a record of its own, want non-voter", nd.ID, got)
	}

	runLoops(t, nd)
	nd.WaitServing(t)
	nd.WaitVoter(t)
	for i := range c.Nodes {
		if role := statusRole(t, c, i, nd.ID); role == pb.NodeRole_NODE_ROLE_NON_VOTER {
			t.Errorf("%s still shows %s as a non-voter after its promotion", c.Nodes[i].ID, nd.ID)
		}
	}
}

// TestNonvoterWaitsTheSettleTime: a non-voter that is caught up, with a
// record showing its HSM healthy, becomes a voter only once it has been so
// for the settle time; a spell of not being caught up (cut off from the
// leader) starts the wait again. (Before, the leader promoted it at the
// first check that found it ready.)
func TestNonvoterWaitsTheSettleTime(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const settle = 2 * time.Second
	c := hsmtest.NewEmptyCluster(t)
	c.PromoteSettle = settle
	leader := c.AddNode()
	ctx := ctxT(t)
	nd := joinByHand(t, c, ctx)
	ready := func() bool { return recordReady(leader, nd.ID) && leader.Raft.CaughtUp(nd.ID) }
	runLoops(t, nd)
	hsmtest.WaitUntil(t, nd.ID+" to be ready for promotion", 20*time.Second, ready)
	time.Sleep(settle / 2)
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s is a %s half the settle time after it was ready, want a non-voter still", nd.ID, got)
	}
	c.Partition([]*hsmtest.Node{nd}, []*hsmtest.Node{leader})
	hsmtest.WaitUntil(t, nd.ID+" to fall behind, cut off", 10*time.Second, func() bool { return !leader.Raft.CaughtUp(nd.ID) })
	c.Heal()
	hsmtest.WaitUntil(t, nd.ID+" to be ready again", 20*time.Second, ready)
	readyAgain := time.Now()
	hsmtest.WaitUntil(t, nd.ID+" to be made a voter", settle+20*time.Second, func() bool { return suffrage(leader, nd.ID) == "voter" })
	// The leader checks every 50ms and may have found it ready again up to
	// one of its checks before this test did.
	if d := time.Since(readyAgain); d < settle-100*time.Millisecond {
		t.Fatalf("%s was made a voter %v after it was ready again, want at least the settle time %v (the spell cut off must start the wait again)", nd.ID, d, settle)
	}
}

// TestLeadershipLostAndWonRestartsTheSettleTime: a leader that hands its
// leadership away and gets it back counts a non-voter's settle time again
// from then: what it saw in its earlier term does not count. The hand-off
// and return take a fraction of the one-second check, so most runs see a
// new term between two checks, not a check while the other node led.
func TestLeadershipLostAndWonRestartsTheSettleTime(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const settle, check = 3 * time.Second, time.Second
	c := hsmtest.NewEmptyCluster(t)
	c.PromoteSettle, c.PromoteCheck = settle, check
	leader := c.AddNode()
	other := c.AddNode()
	ctx := ctxT(t)
	nd := joinByHand(t, c, ctx)
	ready := func() bool { return recordReady(leader, nd.ID) && leader.Raft.CaughtUp(nd.ID) }
	runLoops(t, nd)
	hsmtest.WaitUntil(t, nd.ID+" to be ready for promotion", 20*time.Second, ready)
	// The leader finds it ready at its next check, within a second, and
	// would promote it at its check three seconds after that.
	time.Sleep(2 * check)
	for _, to := range []*hsmtest.Node{other, leader} {
		from := c.Leader(t)
		if err := from.Raft.TransferLeadership(ctx, to.ID); err != nil {
			t.Fatalf("hand leadership from %s to %s: %v", from.ID, to.ID, err)
		}
		hsmtest.WaitUntil(t, to.ID+" to lead", 10*time.Second, to.Raft.IsLeader)
	}
	back := time.Now()
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s is a %s right after the leadership came back, want a non-voter still", nd.ID, got)
	}
	time.Sleep(settle - check/2)
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s is a %s %v after %s led again, want a non-voter until the settle time %v has passed in its new term",
			nd.ID, got, time.Since(back).Round(time.Millisecond), leader.ID, settle)
	}
	hsmtest.WaitUntil(t, nd.ID+" to be made a voter", settle+20*time.Second, func() bool { return suffrage(leader, nd.ID) == "voter" })
}

// TestNonvoterLeftByALostLeaderIsPromoted: the leader that admitted a node
// stops before the node has caught up; the next leader makes it a voter
// once it has.
func TestNonvoterLeftByALostLeaderIsPromoted(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	old := c.Leader(t)
	nd := joinByHand(t, c, ctx)
	if got := suffrage(old, nd.ID); got != "non-voter" {
		t.Fatalf("%s after its join is %q, want non-voter", nd.ID, got)
	}
	old.Stop()
	next := c.Leader(t) // among the running nodes, which old is not
	if next == nd {
		t.Fatal("the non-voter was elected")
	}
	runLoops(t, nd)
	hsmtest.WaitUntil(t, "the new leader "+next.ID+" to make "+nd.ID+" a voter", 30*time.Second, func() bool {
		return suffrage(next, nd.ID) == "voter"
	})
	// The old leader comes back, and the cluster of four voters serves.
	old.Start()
	keys, _ := nodeClients(t, c, nd.Index)
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-promotion"}); err != nil {
		t.Fatal(err)
	}
}

// TestNonvoterThatNeverAnswersLeavesTheQuorum: a node admitted at a Raft
// address that completes the TLS handshake as the node and then never
// answers stays a non-voter: the one voter keeps committing writes (two
// voters, one of them silent, would have no quorum), the status shows it
// a non-voter, and RemoveNode takes it out.
func TestNonvoterThatNeverAnswersLeavesTheQuorum(t *testing.T) {
	c, tok, joiner := joinTarget(t)
	ctx := ctxT(t)
	addr := c.SilentRaftListener("node9")
	if _, err := joiner.JoinCluster(ctx, &pb.JoinClusterRequest{NodeId: "node9", RaftAddress: addr, GrpcAddress: addr,
		JoinToken: tok.GetToken(), TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}}); err != nil {
		t.Fatal(err)
	}
	leader := c.Nodes[0]
	if got := suffrage(leader, "node9"); got != "non-voter" {
		t.Fatalf("node9 after its join is %q, want non-voter", got)
	}
	keys, _ := nodeClients(t, c, 0)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, alias := range []string{"alias/first", "alias/second"} {
		if _, err := keys.CreateKey(wctx, &pb.CreateKeyRequest{AliasName: alias}); err != nil {
			t.Fatalf("a write with a silent non-voter: %v", err)
		}
	}
	if role := statusRole(t, c, 0, "node9"); role != pb.NodeRole_NODE_ROLE_NON_VOTER {
		t.Fatalf("the status shows node9 as %v, want NODE_ROLE_NON_VOTER", role)
	}
	if got := suffrage(leader, "node9"); got != "non-voter" {
		t.Fatalf("node9, silent, is %q, want non-voter", got)
	}
	admin := pb.NewClusterServiceClient(c.Dial(0, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: "node9"}); err != nil {
		t.Fatalf("removing the non-voter: %v", err)
	}
	if got := suffrage(leader, "node9"); got != "" {
		t.Fatalf("node9 after its removal is %q", got)
	}
	if _, ok := leader.Raft.State().Node("node9"); ok {
		t.Fatal("node9's record outlived its removal")
	}
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-removal"}); err != nil {
		t.Fatal(err)
	}
}

// TestRemovingANonvoterIgnoresTheQuorum: with three voters, one of them
// stopped, a live follower may not be removed, but a non-voter may.
func TestRemovingANonvoterIgnoresTheQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	nd := joinByHand(t, c, ctx)
	var followers []*hsmtest.Node
	for _, o := range c.Nodes {
		if o != leader && o != nd {
			followers = append(followers, o)
		}
	}
	stopped, live := followers[0], followers[1]
	stopped.Stop()
	hsmtest.WaitUntil(t, "the leader's heartbeats to miss "+stopped.ID, 20*time.Second, func() bool {
		return leader.Raft.UnreachablePeers()[stopped.ID]
	})
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	_, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: live.ID})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "a quorum needs") {
		t.Fatalf("removing a live voter with another down: %v, want FailedPrecondition", err)
	}
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s is %q, want non-voter", nd.ID, got)
	}
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: nd.ID}); err != nil {
		t.Fatalf("removing the non-voter: %v", err)
	}
	if got := suffrage(leader, nd.ID); got != "" {
		t.Fatalf("%s after its removal is %q", nd.ID, got)
	}
}

// TestRemovalByALostLeaderIsNotUndoneByPromotion: a leader commits a
// non-voter's removal record and loses its leadership before it takes the
// node out of Raft (RemoveNode does the two in that order). The next
// leader must not then make the node a voter: a voter marked removed
// would count toward the quorum while the others refuse its calls.
//
// Why it could: a follower applies an entry only once it learns that the
// entry is committed, from the leader's next AppendEntries. A follower
// elected leader with the removal in its log but not applied still finds
// the node's record healthy and its log caught up, everything a promotion
// checks, until the no-op of its own term commits.
//
// How the test holds that window open: the first leader (the writer) has
// a CommitTimeout of a minute, so the followers hear of a commit only with
// the next write; the removal is the last write. The writer is then cut
// off, and the follower elected after it is cut off from the other one the
// moment it leads, so it cannot commit its no-op. Its settle time is a
// nanosecond, so it would decide to promote the node at its second check;
// raft holds the configuration change until the leader's no-op commits.
// The leader leads cut off for up to a second (its LeaderLeaseTimeout);
// the link comes back after three checks, while it still leads. Then its
// no-op commits, and the removal with it; the node must still be a
// non-voter, and RemoveNode completes the removal.
func TestRemovalByALostLeaderIsNotUndoneByPromotion(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const writerID = "node2"
	cut := &heldCut{}
	c := hsmtest.NewEmptyCluster(t, func(cfg *cluster.Config) {
		if cfg.NodeID == writerID {
			cfg.CommitTimeout = time.Minute
		} else {
			// The follower elected cut off leads for a second: twenty
			// promotion checks.
			cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		}
		self, partition := cfg.NodeID, cfg.LinkFilter
		cfg.LinkFilter = func(peer string) bool { return cut.allow(self, peer) && partition(peer) }
	})
	c.HeartbeatRefresh = time.Hour
	ctx := ctxT(t)
	c.PromoteSettle = time.Nanosecond
	c.AddNode()
	c.PromoteSettle = time.Hour // the writer: it never promotes
	writer := c.AddNode()
	if writer.ID != writerID {
		t.Fatalf("setup: the second node is %s, want %s", writer.ID, writerID)
	}
	c.PromoteSettle = time.Nanosecond
	c.AddNode()
	// Joined while node1 leads; with its loops not running it writes no
	// record of its own, so nobody promotes it yet.
	nd := joinByHand(t, c, ctx)
	if lead := c.Leader(t); lead != writer {
		if err := lead.Raft.TransferLeadership(ctx, writer.ID); err != nil {
			t.Fatalf("hand leadership to %s: %v", writer.ID, err)
		}
	}
	followers := []*hsmtest.Node{c.Nodes[0], c.Nodes[2]}
	hsmtest.WaitUntil(t, "every node to follow "+writer.ID, 10*time.Second, func() bool {
		for _, f := range append(slices.Clone(followers), nd) {
			if id, _ := f.Raft.Leader(); id != writer.ID {
				return false
			}
		}
		return writer.Raft.IsLeader()
	})
	ready := func(on *hsmtest.Node) bool { return recordReady(on, nd.ID) }
	runLoops(t, nd)
	hsmtest.WaitUntil(t, nd.ID+" to be ready on "+writer.ID, 20*time.Second, func() bool {
		return ready(writer) && writer.Raft.CaughtUp(nd.ID)
	})
	// One more write carries the commit of the record to the followers.
	wk, _ := nodeClients(t, c, writer.Index)
	if _, err := wk.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/carries-the-commit"}); err != nil {
		t.Fatal(err)
	}
	hsmtest.WaitUntil(t, "the followers to apply "+nd.ID+"'s record", 10*time.Second, func() bool {
		return ready(followers[0]) && ready(followers[1])
	})
	if got := suffrage(writer, nd.ID); got != "non-voter" {
		t.Fatalf("setup: %s is %q before its removal, want non-voter", nd.ID, got)
	}

	// The first half of RemoveNode, on the writer, which then loses its
	// leadership.
	if _, err := writer.Raft.Apply(ctx, &cluster.RemoveNode{ID: nd.ID}); err != nil {
		t.Fatal(err)
	}
	at, _ := writer.Raft.State().LastApplied()
	holders := 0
	for _, f := range followers {
		if !ready(f) {
			t.Fatalf("setup: %s applied the removal before the partition: the test needs the followers not to know it is committed", f.ID)
		}
		if f.Raft.Stats().LastLogIndex >= at {
			holders++
		}
	}
	if holders == 0 {
		t.Fatalf("setup: no follower has the removal's entry %d, yet %s committed it", at, writer.ID)
	}
	cut.arm(followers)
	c.Partition([]*hsmtest.Node{writer}, []*hsmtest.Node{followers[0], followers[1], nd})
	defer c.Heal()

	// The window: the new leader, cut off, finds the node ready.
	open := false
	hsmtest.WaitUntil(t, "a follower to lead, cut off, finding "+nd.ID+" ready", 20*time.Second, func() bool {
		l := cut.leading()
		open = l != nil && l.Raft.IsLeader() && ready(l) && l.Raft.CaughtUp(nd.ID)
		return open
	})
	leader := cut.leading()
	time.Sleep(150 * time.Millisecond) // three promotion checks
	if !leader.Raft.IsLeader() {
		t.Fatalf("setup: %s stepped down before the link came back: the test needs it to commit its no-op as the leader that checked %s", leader.ID, nd.ID)
	}
	cut.release()

	hsmtest.WaitUntil(t, "a leader that has applied the removal", 20*time.Second, func() bool {
		for _, f := range followers {
			if _, ok := f.Raft.State().Node(nd.ID); f.Raft.IsLeader() && !ok {
				leader = f
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond) // ten promotion checks
	if got := suffrage(leader, nd.ID); got != "non-voter" {
		t.Fatalf("%s, removed by %s before it lost its leadership, is %q in %s's configuration, want non-voter: "+
			"the promotion read a record the removal had deleted", nd.ID, writer.ID, got, leader.ID)
	}
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: nd.ID}); err != nil {
		t.Fatalf("completing the removal: %v", err)
	}
	if got := suffrage(leader, nd.ID); got != "" {
		t.Fatalf("%s after the removal completed is %q", nd.ID, got)
	}
}

// heldCut cuts the Raft link between two nodes from the moment either is
// seen leading until release: it is consulted, as the nodes' link filter,
// on every Raft read and write, so the new leader's first message as
// leader never leaves.
type heldCut struct {
	mu       sync.Mutex
	pair     []*hsmtest.Node
	leader   *hsmtest.Node
	released bool
}

func (w *heldCut) arm(pair []*hsmtest.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pair = pair
}

func (w *heldCut) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.released = true
}

// leading is the node of the pair first seen leading, or nil.
func (w *heldCut) leading() *hsmtest.Node {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

func (w *heldCut) allow(self, peer string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.released || !slices.ContainsFunc(w.pair, func(nd *hsmtest.Node) bool { return nd.ID == self }) ||
		!slices.ContainsFunc(w.pair, func(nd *hsmtest.Node) bool { return nd.ID == peer }) {
		return true
	}
	if w.leader == nil {
		for _, nd := range w.pair {
			if nd.Raft.IsLeader() {
				w.leader = nd
			}
		}
	}
	return w.leader == nil
}
