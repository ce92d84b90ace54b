package broker_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// transportKey is a DER SubjectPublicKeyInfo of a new RSA key of bits.
func transportKey(t *testing.T, bits int) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tokenUnused reports whether the cluster still holds token unused.
func tokenUnused(c *hsmtest.Cluster, token string) bool {
	h := sha256.Sum256([]byte(token))
	_, ok := c.Nodes[0].Raft.State().JoinToken(h[:])
	return ok
}

// joinTarget is a one-node cluster, a join token it made for node9, and a
// client of it holding a node certificate for node9, a node it does not
// know.
func joinTarget(t *testing.T) (*hsmtest.Cluster, *pb.CreateJoinTokenResponse, pb.ClusterServiceClient) {
	t.Helper()
	c := hsmtest.NewCluster(t, 1)
	tok, err := pb.NewClusterServiceClient(c.Dial(0, "admin")).CreateJoinToken(ctxT(t), &pb.CreateJoinTokenRequest{NodeId: "node9"})
	if err != nil {
		t.Fatal(err)
	}
	return c, tok, pb.NewClusterServiceClient(c.DialAsNewNode("node9", 0))
}

// TestJoinRequestsCheckedBeforeTheToken: a join request refused for its
// own content (a transport key that is not RSA 2048 to 4096, a node id no
// node can have) leaves its token unused, and an error quoting a long id
// is bounded.
func TestJoinRequestsCheckedBeforeTheToken(t *testing.T) {
	c, tok, joiner := joinTarget(t)
	ctx := ctxT(t)
	req := func(id string, pub []byte) *pb.JoinClusterRequest {
		return &pb.JoinClusterRequest{NodeId: id, RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2",
			JoinToken: tok.GetToken(), TransportPublicKey: pub, Partition: &pb.PartitionInfo{}}
	}
	for _, tt := range []struct {
		what string
		req  *pb.JoinClusterRequest
		want string
	}{
		{"a 1024-bit transport key", req("node9", transportKey(t, 1024)), "RSA 2048 to 4096 bits"},
		{"a transport key that is not DER", req("node9", []byte("not a key")), "not DER SubjectPublicKeyInfo"},
		{"a 250,000-byte node id", req(strings.Repeat("n", 250000), transportKey(t, 2048)), "invalid NodeId"},
	} {
		_, err := joiner.JoinCluster(ctx, tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) || len(err.Error()) > 400 {
			t.Errorf("join with %s: %.300v, want InvalidArgument saying %q, in under 400 bytes", tt.what, err, tt.want)
		}
		if !tokenUnused(c, tok.GetToken()) {
			t.Fatalf("join with %s spent the token", tt.what)
		}
	}
}

// TestJoinTokenBoundToANode: a token made for node7 is refused to node9,
// PermissionDenied, and stays unused; a node id no node can have is
// refused when the token is made.
func TestJoinTokenBoundToANode(t *testing.T) {
	c, _, joiner := joinTarget(t)
	ctx := ctxT(t)
	admin := pb.NewClusterServiceClient(c.Dial(0, "admin"))
	tok, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node7"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = joiner.JoinCluster(ctx, &pb.JoinClusterRequest{NodeId: "node9", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2",
		JoinToken: tok.GetToken(), TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "made for another node id") {
		t.Fatalf("node9 joining with node7's token: %v", err)
	}
	if !tokenUnused(c, tok.GetToken()) {
		t.Fatal("the refused join spent node7's token")
	}
	h := sha256.Sum256([]byte(tok.GetToken()))
	if got, _ := c.Nodes[0].Raft.State().JoinToken(h[:]); got.NodeID != "node7" {
		t.Fatalf("the token is bound to %q", got.NodeID)
	}
	if _, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "no/such id"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a token for an impossible node id: %v", err)
	}
}

// TestJoinNeedsARaftAddressThatAnswers: a join whose Raft address takes no
// connection from the leader, answers as another node (the leader itself,
// under another name of its address) or is not a Raft port (a TLS port of
// the cluster CA that speaks gRPC) is refused FailedPrecondition before
// its token is spent; a one-node cluster, which such a voter would leave
// without a leader, keeps its leader and takes writes.
func TestJoinNeedsARaftAddressThatAnswers(t *testing.T) {
	c, tok, joiner := joinTarget(t)
	ctx := ctxT(t)
	_, raftPort, _ := net.SplitHostPort(c.Nodes[0].Raft.Addr())
	for _, tt := range []struct{ addr, want string }{
		{hsmtest.ClosedAddr(t), "does not answer the leader"},
		{net.JoinHostPort("localhost", raftPort), "answers the leader as another node"},
		{c.Nodes[0].GRPCAddr, "does not answer the leader as node node9"},
		{"no-port", "invalid RaftAddress"},
		{strings.Repeat("h", 300) + ":7401", "invalid RaftAddress"},
	} {
		_, err := joiner.JoinCluster(ctx, &pb.JoinClusterRequest{NodeId: "node9", RaftAddress: tt.addr, GrpcAddress: "127.0.0.1:2",
			JoinToken: tok.GetToken(), TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}})
		if code := status.Code(err); (code != codes.FailedPrecondition && code != codes.InvalidArgument) || !strings.Contains(err.Error(), tt.want) || len(err.Error()) > 600 {
			t.Errorf("join at %.40s: %v, want an error saying %q", tt.addr, err, tt.want)
		}
	}
	if !tokenUnused(c, tok.GetToken()) {
		t.Fatal("a refused join spent the token")
	}
	if n := len(c.Nodes[0].Raft.Stats().Servers); n != 1 {
		t.Fatalf("%d servers after refused joins", n)
	}
	if _, err := pb.NewKeyServiceClient(c.Dial(0, "admin")).CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/still-leading"}); err != nil {
		t.Fatalf("a write after the refused joins: %v", err)
	}
}

// TestConcurrentJoinsAreTakenOneAtATime: two joins at once under one node
// id, from two Raft addresses that each answer as that node (two hosts
// given a certificate for the same id), are taken one at a time: one
// joins, the other is refused AlreadyExists naming the first one's
// address, its token unused, and the member keeps the first address.
// (Before joins were taken one at a time, both passed the checks, both
// tokens were spent, and raft moved the member to the second address.)
// Two ids at one address are refused by the leader's probe of the address
// instead (TestJoinNeedsARaftAddressThatAnswers). A three-node cluster
// keeps its quorum with the member that never comes up.
func TestConcurrentJoinsAreTakenOneAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	li := 0
	for i, n := range c.Nodes {
		if n == leader {
			li = i
		}
	}
	admin := pb.NewClusterServiceClient(c.Dial(li, "admin"))
	const id = "node4"
	// Each address answers as node4 (the leader checks that a joiner's
	// Raft address answers as the joiner) and then never speaks Raft.
	addrs := []string{c.SilentRaftListener(id), c.SilentRaftListener(id)}
	tokens := make([]string, len(addrs))
	reqs := make([]*pb.JoinClusterRequest, len(addrs))
	clients := make([]pb.ClusterServiceClient, len(addrs))
	for i, addr := range addrs {
		tok, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: id})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok.GetToken()
		reqs[i] = &pb.JoinClusterRequest{NodeId: id, RaftAddress: addr, GrpcAddress: addr,
			JoinToken: tokens[i], TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}}
		clients[i] = pb.NewClusterServiceClient(c.DialAsNewNode(id, li))
	}
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range addrs {
		wg.Go(func() {
			<-start
			_, errs[i] = clients[i].JoinCluster(ctx, reqs[i])
		})
	}
	close(start)
	wg.Wait()
	joined, refused := -1, -1
	for i, err := range errs {
		switch {
		case err == nil:
			joined = i
		case status.Code(err) == codes.AlreadyExists:
			refused = i
		default:
			t.Fatalf("join from %s: %v", addrs[i], err)
		}
	}
	if joined < 0 || refused < 0 {
		t.Fatalf("joins: %v; want one to join and one refused", errs)
	}
	if !strings.Contains(errs[refused].Error(), addrs[joined]) {
		t.Errorf("the refusal does not name the member's address %s: %v", addrs[joined], errs[refused])
	}
	st := leader.Raft.State()
	if rec, ok := st.Node(id); !ok || rec.RaftAddr != addrs[joined] {
		t.Errorf("%s's record: %+v (found %v), want it at %s", id, rec, ok, addrs[joined])
	}
	for _, srv := range leader.Raft.Stats().Servers {
		if srv.ID == id && srv.Address != addrs[joined] {
			t.Errorf("raft has %s at %s, want %s", id, srv.Address, addrs[joined])
		}
	}
	h := sha256.Sum256([]byte(tokens[refused]))
	if _, ok := st.JoinToken(h[:]); !ok {
		t.Errorf("the refused join from %s spent its token", addrs[refused])
	}
}

// TestForwardedJoinTokenDates: the leader refuses a join token a member
// forwards dated far from its clock, and the state refuses one living
// more than a day, so a member cannot mint a token that outlives its
// removal by years.
func TestForwardedJoinTokenDates(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 2)
	ctx := ctxT(t)
	leader, _, forward := forwarderToLeader(t, c)
	now := time.Now()
	for _, tt := range []struct {
		what        string
		at, expires time.Time
		want        string
	}{
		{"dated ten years ahead", now.AddDate(10, 0, 0), now.AddDate(10, 0, 0).Add(time.Hour), "from the leader's clock"},
		{"living 74 years", now, now.Add(650000 * time.Hour), "more than 24h0m0s"},
	} {
		h := sha256.Sum256([]byte(tt.what))
		err := forward(ctx, &cluster.AddJoinToken{Hash: h[:], At: tt.at, Expires: tt.expires})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("a forwarded join token %s: %v, want InvalidArgument saying %q", tt.what, err, tt.want)
		}
		if _, ok := leader.Raft.State().JoinToken(h[:]); ok {
			t.Errorf("the join token %s was added", tt.what)
		}
	}
}

// forwarderToLeader returns the leader of a two-node cluster, the other
// node, and a function that makes that node forward a command to the
// leader. The command is encoded by hand: EncodeCommand refuses what the
// state refuses, and these tests send what a compromised member might.
func forwarderToLeader(t *testing.T, c *hsmtest.Cluster) (leader, from *hsmtest.Node, forward func(context.Context, cluster.Command) error) {
	t.Helper()
	leader = c.Leader(t)
	li, from := 0, c.Nodes[1]
	if leader == c.Nodes[1] {
		li, from = 1, c.Nodes[0]
	}
	fwd := pb.NewClusterServiceClient(c.DialAsNode(from, li))
	return leader, from, func(ctx context.Context, cmd cluster.Command) error {
		body, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fwd.ForwardCommand(ctx, &pb.ForwardCommandRequest{Command: append([]byte{byte(cmd.Type())}, body...)})
		return err
	}
}

// TestForwardedRecordsAndRevocations: a member passes on its own node
// record, and nothing it has no business sending: another node's record
// (the health the leader's promotion of a non-voter trusts), an admission
// (which brings a removed id back), or a revocation dated far from the
// leader's clock.
func TestForwardedRecordsAndRevocations(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 2)
	ctx := ctxT(t)
	leader, from, forward := forwarderToLeader(t, c)
	own, ok := leader.Raft.State().Node(from.ID)
	if !ok {
		t.Fatalf("no record of %s", from.ID)
	}
	own.LastSeen = time.Now().UTC()
	if err := forward(ctx, &cluster.UpsertNode{Node: own}); err != nil {
		t.Fatalf("a member's own record: %v", err)
	}
	forged, _ := leader.Raft.State().Node(leader.ID)
	forged.Partition.Health = "forged"
	for _, tt := range []struct {
		what string
		cmd  cluster.Command
		code codes.Code
		want string
	}{
		{"another node's record", &cluster.UpsertNode{Node: forged}, codes.PermissionDenied, "only its own record"},
		{"an admission", &cluster.UpsertNode{Node: own, Admit: true}, codes.PermissionDenied, "only the leader admits"},
		{"a revocation dated ten years ahead", &cluster.RevokeJoinToken{ID: "0123456789abcdef", At: time.Now().AddDate(10, 0, 0)}, codes.InvalidArgument, "from the leader's clock"},
	} {
		if err := forward(ctx, tt.cmd); status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %s saying %q", tt.what, err, tt.code, tt.want)
		}
	}
	if n, _ := leader.Raft.State().Node(leader.ID); n.Partition.Health == "forged" {
		t.Error("the leader's record was overwritten by a member")
	}
}

// TestRemovalKeepsAQuorum: with three voters and one stopped, removing a
// live follower would leave two voters of which one answers: refused,
// FailedPrecondition naming the stopped node, and the cluster keeps taking
// writes. Removing the stopped node is allowed.
func TestRemovalKeepsAQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	var li int
	var followers []*hsmtest.Node
	for i, n := range c.Nodes {
		if n == leader {
			li = i
		} else {
			followers = append(followers, n)
		}
	}
	stopped, live := followers[0], followers[1]
	stopped.Stop()
	hsmtest.WaitUntil(t, "the leader's heartbeats to miss "+stopped.ID, 20*time.Second, func() bool {
		return leader.Raft.UnreachablePeers()[stopped.ID]
	})
	admin := pb.NewClusterServiceClient(c.Dial(li, "admin"))
	_, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: live.ID})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "fewer than the 2 a quorum needs") ||
		!strings.Contains(err.Error(), stopped.ID) {
		t.Fatalf("removing a live follower with another voter down: %v", err)
	}
	if _, ok := leader.Raft.State().Node(live.ID); !ok {
		t.Fatal("the refused removal dropped the node's record")
	}
	keys := pb.NewKeyServiceClient(c.Dial(li, "admin"))
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-refusal"}); err != nil {
		t.Fatalf("a write after the refused removal: %v", err)
	}
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: stopped.ID}); err != nil {
		t.Fatalf("removing the stopped node: %v", err)
	}
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-removal"}); err != nil {
		t.Fatalf("a write after removing the stopped node: %v", err)
	}
}

// TestRemovalRightAfterAnElection: a leader elected a moment ago has seen
// no heartbeat fail yet, to the old leader or to a voter down before it:
// it must not count them live and let a removal take the cluster below a
// quorum. Both down voters' Raft ports take connections and never answer,
// as a hung host's would, so no heartbeat to them fails for the transport
// timeout (10 s). Five voters, two of them silent: removing a third would
// leave four, of which two answer.
func TestRemovalRightAfterAnElection(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 5)
	ctx := ctxT(t)
	old := c.Leader(t)
	down := c.Followers(t)[0]
	for _, nd := range []*hsmtest.Node{down, old} {
		addr := nd.Raft.Addr()
		nd.Stop()
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s's Raft address %s: %v", nd.ID, addr, err)
		}
		t.Cleanup(func() { _ = lis.Close() })
	}
	next := c.Leader(t) // among the running nodes: neither stopped one
	var target *hsmtest.Node
	for _, nd := range c.Nodes {
		if nd != old && nd != down && nd != next {
			target = nd
			break
		}
	}
	admin := pb.NewClusterServiceClient(c.Dial(next.Index, "admin"))
	// At once, and again for the first seconds, while no heartbeat to the
	// silent voters has failed. A new leader not serving yet may refuse
	// with Unavailable; it must never carry the removal out.
	refused := 0
	for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(200 * time.Millisecond) {
		_, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: target.ID})
		switch {
		case status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "fewer than the 3 a quorum needs"):
			refused++
		case status.Code(err) == codes.Unavailable && client.NotCarriedOut(err):
		default:
			t.Fatalf("removing live voter %s %v after the election, with %s and %s silent: %v", target.ID,
				time.Since(start).Round(time.Millisecond), old.ID, down.ID, err)
		}
	}
	if refused == 0 {
		t.Fatalf("the new leader %s never answered the removal with the quorum check", next.ID)
	}
	if got := suffrage(next, target.ID); got != "voter" {
		t.Fatalf("%s after the refused removals is %q, want voter", target.ID, got)
	}
	keys := pb.NewKeyServiceClient(c.Dial(next.Index, "admin"))
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-refusals"}); err != nil {
		t.Fatalf("a write after the refused removals: %v", err)
	}
}

// TestMembershipAuditLines: membership calls name their target in the
// audit line's key_ref (node:ID), a forwarded write names its command
// (command:TYPE), and a join refused for its token is denied with the
// reason.
func TestMembershipAuditLines(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	c.AddNode()
	ctx := ctxT(t)
	li := 0
	if c.Leader(t) == c.Nodes[1] {
		li = 1
	}
	admin := pb.NewClusterServiceClient(c.Dial(li, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("remove an unknown node: %v", err)
	}
	_, err := pb.NewClusterServiceClient(c.DialAsNewNode("node9", li)).JoinCluster(ctx, &pb.JoinClusterRequest{NodeId: "node9",
		RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2", JoinToken: "hsmbj_" + strings.Repeat("A", 42) + "Q",
		TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("join with a made-up token: %v", err)
	}
	// A token made on a follower is forwarded to the leader.
	if _, err := pb.NewClusterServiceClient(c.Dial(1-li, "admin")).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node9"}); err != nil {
		t.Fatal(err)
	}
	type line struct {
		Operation, Decision, Reason, Result string
		KeyRef                              string `json:"key_ref"`
	}
	want := []line{
		{Operation: "hsmbroker:RemoveNode", KeyRef: "node:nope"},
		{Operation: "hsmbroker:JoinCluster", KeyRef: "node:node9", Decision: "deny", Reason: "join token unknown, already used, expired or made for another node"},
		{Operation: "hsmbroker:ForwardCommand", KeyRef: "command:AddJoinToken"},
	}
	hsmtest.WaitUntil(t, "the audit lines", 10*time.Second, func() bool {
		data, err := os.ReadFile(c.Nodes[li].AuditPath())
		if err != nil {
			return false
		}
		found := 0
		for _, w := range want {
			for l := range strings.Lines(string(data)) {
				var got line
				if json.Unmarshal([]byte(l), &got) == nil && got.Operation == w.Operation && got.KeyRef == w.KeyRef && got.Result != "INTENT" &&
					(w.Decision == "" || got.Decision == w.Decision && got.Reason == w.Reason) {
					found++
					break
				}
			}
		}
		return found == len(want)
	})
}
