package broker_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestJoinTokensListedAndRevoked, on two nodes: tokens made through either
// node are listed through the other by id, making and expiry time and
// bound node, and never by the token or its hash; a token used by a join
// (the harness's, for the second node) or expired is not listed. A token
// revoked through the follower (its command forwarded to the leader) is
// refused to a join PermissionDenied, where before it passed the token
// check; it is gone from both nodes' states. An unknown or revoked id is
// NotFound, through the follower too; a malformed id, or the token given
// as its id, is InvalidArgument naming TokenId and never repeating the
// token. An auditor lists but may not revoke, and the refusal is audited
// as a deny; the revocation is audited as join-token:ID on the node that
// took it and as command:RevokeJoinToken on the leader.
func TestJoinTokensListedAndRevoked(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	c.AddNode()
	ctx := ctxT(t)
	li, fi := 0, 1
	if c.Leader(t) == c.Nodes[1] {
		li, fi = 1, 0
	}
	leader := c.Nodes[li]
	viaLeader := pb.NewClusterServiceClient(c.Dial(li, "admin"))
	viaFollower := pb.NewClusterServiceClient(c.Dial(fi, "admin"))
	auditor := pb.NewClusterServiceClient(c.DialAs(fi, "eve", authz.RoleAuditor))

	list := func(cl pb.ClusterServiceClient) []*pb.JoinTokenInfo {
		t.Helper()
		resp, err := cl.ListJoinTokens(ctx, &pb.ListJoinTokensRequest{})
		if err != nil {
			t.Fatalf("ListJoinTokens: %v", err)
		}
		return resp.GetJoinTokens()
	}
	// The second node joined with a token made by CreateJoinToken: used,
	// and so not listed.
	if got := list(auditor); len(got) != 0 {
		t.Fatalf("tokens listed before any was made but the one the join used: %v", got)
	}

	before := time.Now().Add(-time.Second)
	bound, err := viaFollower.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node7", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	free, err := viaLeader.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{AnyNode: true})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)
	idOf := func(token string) string {
		h := sha256.Sum256([]byte(token))
		return hex.EncodeToString(h[:8])
	}
	for _, tok := range []*pb.CreateJoinTokenResponse{bound, free} {
		if tok.GetTokenId() != idOf(tok.GetToken()) {
			t.Fatalf("CreateJoinToken answered id %q for a token whose id is %s", tok.GetTokenId(), idOf(tok.GetToken()))
		}
	}
	// An expired token the state still holds (it is dropped when the next
	// token is added) is not listed either.
	now := time.Now()
	expiredHash := sha256.Sum256([]byte("expired"))
	if _, err := leader.Raft.Apply(ctx, &cluster.AddJoinToken{Hash: expiredHash[:], At: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := leader.Raft.State().JoinToken(expiredHash[:]); !ok {
		t.Fatal("the expired token is not in the state")
	}

	got := list(auditor)
	want := []struct {
		tok  *pb.CreateJoinTokenResponse
		node string
	}{{free, ""}, {bound, "node7"}} // by expiry
	if len(got) != len(want) {
		t.Fatalf("listed %v, want the two tokens made", got)
	}
	for i, w := range want {
		g := got[i]
		if g.GetTokenId() != w.tok.GetTokenId() || g.GetNodeId() != w.node || !g.GetExpireTime().AsTime().Equal(w.tok.GetExpireTime().AsTime()) ||
			g.GetCreateTime() == nil || g.GetCreateTime().AsTime().Before(before) || g.GetCreateTime().AsTime().After(after) {
			t.Errorf("listing %d: %v, want id %s, node %q, expiry %v, made between %v and %v", i, g, w.tok.GetTokenId(), w.node,
				w.tok.GetExpireTime().AsTime(), before, after)
		}
	}
	listed, _ := protojson.Marshal(&pb.ListJoinTokensResponse{JoinTokens: got})
	for _, tok := range []*pb.CreateJoinTokenResponse{bound, free} {
		h := sha256.Sum256([]byte(tok.GetToken()))
		if strings.Contains(string(listed), tok.GetToken()) || strings.Contains(string(listed), hex.EncodeToString(h[:])) {
			t.Fatalf("the listing shows a token or its hash: %s", listed)
		}
	}

	// An auditor may not revoke.
	if _, err := auditor.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: bound.GetTokenId()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an auditor revoking a token: %v", err)
	}
	if got := list(viaLeader); len(got) != 2 {
		t.Fatalf("after the auditor's refused revocation: %v", got)
	}

	// node7 with its token passes the token check, and is refused only
	// for its Raft address; once the token is revoked, for the token.
	joiner := pb.NewClusterServiceClient(c.DialAsNewNode("node7", li))
	join := &pb.JoinClusterRequest{NodeId: "node7", RaftAddress: hsmtest.ClosedAddr(t), GrpcAddress: "127.0.0.1:2",
		JoinToken: bound.GetToken(), TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}}
	if _, err := joiner.JoinCluster(ctx, join); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "does not answer the leader") {
		t.Fatalf("a join with the token before its revocation: %v", err)
	}
	if _, err := viaFollower.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: bound.GetTokenId()}); err != nil {
		t.Fatalf("RevokeJoinToken through the follower: %v", err)
	}
	if _, err := joiner.JoinCluster(ctx, join); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "join token is unknown, already used") {
		t.Fatalf("a join with a revoked token: %v", err)
	}
	if got := list(viaLeader); len(got) != 1 || got[0].GetTokenId() != free.GetTokenId() {
		t.Fatalf("listed after the revocation: %v", got)
	}
	c.WaitConverged(t)
	for _, nd := range c.Nodes {
		if tokenHeld(nd, bound.GetToken()) || !tokenHeld(nd, free.GetToken()) {
			t.Fatalf("%s after the revocation: the revoked token held %v, the other %v", nd.ID, tokenHeld(nd, bound.GetToken()), tokenHeld(nd, free.GetToken()))
		}
	}

	for _, tt := range []struct {
		what string
		cl   pb.ClusterServiceClient
		id   string
		code codes.Code
		want string
	}{
		{"a revoked token, through the follower", viaFollower, bound.GetTokenId(), codes.NotFound, "outstanding join token " + bound.GetTokenId() + " does not exist"},
		{"an unknown id", viaLeader, "0123456789abcdef", codes.NotFound, "outstanding join token 0123456789abcdef does not exist"},
		{"an expired token", viaLeader, hex.EncodeToString(expiredHash[:8]), codes.NotFound, "does not exist"},
		{"no id", viaLeader, "", codes.InvalidArgument, "invalid TokenId: a join token id is 16 lowercase hex digits"},
		{"a short id", viaLeader, "0123abcd", codes.InvalidArgument, "invalid TokenId: a join token id is 16 lowercase hex digits"},
		{"an upper-case id", viaFollower, strings.ToUpper(free.GetTokenId()), codes.InvalidArgument, "invalid TokenId"},
		{"the token's whole hash", viaLeader, hex.EncodeToString(expiredHash[:]), codes.InvalidArgument, "invalid TokenId"},
		{"the token itself", viaFollower, free.GetToken(), codes.InvalidArgument, "invalid TokenId: this is a join token, not its id"},
	} {
		_, err := tt.cl.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: tt.id})
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("revoking %s: %v, want %s saying %q", tt.what, err, tt.code, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), free.GetToken()) {
			t.Errorf("revoking %s: the error repeats the token", tt.what)
		}
	}
	if got := list(viaFollower); len(got) != 1 {
		t.Fatalf("refused revocations changed the listing: %v", got)
	}

	type line struct {
		Operation, Decision, Reason, Result, Principal string
		KeyRef                                         string `json:"key_ref"`
	}
	lines := func(nd *hsmtest.Node) ([]line, string) {
		data, err := os.ReadFile(nd.AuditPath())
		if err != nil {
			return nil, ""
		}
		var ls []line
		for l := range strings.Lines(string(data)) {
			var got line
			if json.Unmarshal([]byte(l), &got) == nil {
				ls = append(ls, got)
			}
		}
		return ls, string(data)
	}
	has := func(ls []line, w line) bool {
		for _, l := range ls {
			if l.Operation == w.Operation && l.KeyRef == w.KeyRef && l.Decision == w.Decision && l.Result != "INTENT" &&
				(w.Principal == "" || l.Principal == w.Principal) && strings.Contains(l.Reason, w.Reason) {
				return true
			}
		}
		return false
	}
	revokeRef := "join-token:" + bound.GetTokenId()
	wantFollower := []line{
		{Operation: "hsmbroker:CreateJoinToken", KeyRef: revokeRef, Decision: "allow"},
		{Operation: "hsmbroker:ListJoinTokens", Decision: "allow", Principal: "eve"},
		{Operation: "hsmbroker:RevokeJoinToken", Decision: "deny", Principal: "eve", Reason: "RevokeJoinToken"},
		{Operation: "hsmbroker:RevokeJoinToken", KeyRef: revokeRef, Decision: "allow", Principal: "admin"},
	}
	wantLeader := []line{
		{Operation: "hsmbroker:ForwardCommand", KeyRef: "command:RevokeJoinToken", Decision: "allow"},
		{Operation: "hsmbroker:CreateJoinToken", KeyRef: "join-token:" + free.GetTokenId(), Decision: "allow"},
	}
	hsmtest.WaitUntil(t, "the audit lines", 10*time.Second, func() bool {
		fl, _ := lines(c.Nodes[fi])
		ll, _ := lines(leader)
		for _, w := range wantFollower {
			if !has(fl, w) {
				return false
			}
		}
		for _, w := range wantLeader {
			if !has(ll, w) {
				return false
			}
		}
		return true
	})
	for _, nd := range c.Nodes {
		if _, data := lines(nd); strings.Contains(data, free.GetToken()) || strings.Contains(data, bound.GetToken()) {
			t.Errorf("%s's audit log holds a join token", nd.ID)
		}
	}
}

// TestJoinTokenNeedsANodeChoice: CreateJoinToken makes a token only for
// the node the caller names (NodeId) or, when asked for by name (AnyNode),
// for any node. A request with neither, even with a TTL, or with both, is
// refused InvalidArgument naming both fields, as is a NodeId no node can
// have; no refused request makes a token. An AnyNode token is listed bound
// to no node and admits node9, an id named nowhere when it was made; a
// NodeId token is listed bound to its node, is refused to node9
// PermissionDenied and stays unused, and admits its own node.
func TestJoinTokenNeedsANodeChoice(t *testing.T) {
	c := hsmtest.NewCluster(t, 1)
	ctx := ctxT(t)
	admin := pb.NewClusterServiceClient(c.Dial(0, "admin"))
	list := func() []*pb.JoinTokenInfo {
		t.Helper()
		resp, err := admin.ListJoinTokens(ctx, &pb.ListJoinTokensRequest{})
		if err != nil {
			t.Fatalf("ListJoinTokens: %v", err)
		}
		return resp.GetJoinTokens()
	}
	const (
		neither = "NodeId or AnyNode is required: a token bound to the joining node's id (NodeId) admits only that node; AnyNode=true admits any id"
		both    = "give NodeId or AnyNode, not both: a token bound to NodeId admits only that node; AnyNode=true admits any id"
	)
	for _, tt := range []struct {
		what string
		req  *pb.CreateJoinTokenRequest
		want string
	}{
		{"an empty request", &pb.CreateJoinTokenRequest{}, neither},
		{"a TTL alone", &pb.CreateJoinTokenRequest{Ttl: durationpb.New(time.Hour)}, neither},
		{"AnyNode false and no NodeId", &pb.CreateJoinTokenRequest{AnyNode: false, Ttl: durationpb.New(time.Hour)}, neither},
		{"both NodeId and AnyNode", &pb.CreateJoinTokenRequest{NodeId: "node7", AnyNode: true}, both},
		{"an impossible NodeId and AnyNode", &pb.CreateJoinTokenRequest{NodeId: "no/such id", AnyNode: true}, both},
		{"an impossible NodeId", &pb.CreateJoinTokenRequest{NodeId: "no/such id"}, "invalid NodeId \"no/such id\""},
	} {
		_, err := admin.CreateJoinToken(ctx, tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("CreateJoinToken with %s: %v, want InvalidArgument saying %q", tt.what, err, tt.want)
		}
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("refused requests made join tokens: %v", got)
	}
	if got := c.Nodes[0].Raft.State().JoinTokens(); len(got) != 0 {
		t.Fatalf("refused requests added %d join tokens to the state", len(got))
	}

	anyNode, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{AnyNode: true})
	if err != nil {
		t.Fatalf("CreateJoinToken with AnyNode: %v", err)
	}
	bound, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node7", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatalf("CreateJoinToken with NodeId node7: %v", err)
	}
	got := list() // by expiry: the AnyNode token lives 15 minutes, the other an hour
	if len(got) != 2 || got[0].GetTokenId() != anyNode.GetTokenId() || got[0].GetNodeId() != "" ||
		got[1].GetTokenId() != bound.GetTokenId() || got[1].GetNodeId() != "node7" {
		t.Fatalf("listed %v; want %s for any node, then %s for node7", got, anyNode.GetTokenId(), bound.GetTokenId())
	}

	// Each join answers at a Raft address of its own that the leader's
	// probe finds speaking as the joining node.
	join := func(id, token string) error {
		addr := c.SilentRaftListener(id)
		_, err := pb.NewClusterServiceClient(c.DialAsNewNode(id, 0)).JoinCluster(ctx, &pb.JoinClusterRequest{NodeId: id, RaftAddress: addr,
			GrpcAddress: addr, JoinToken: token, TransportPublicKey: transportKey(t, 2048), Partition: &pb.PartitionInfo{}})
		return err
	}
	leader := c.Nodes[0]
	if err := join("node9", bound.GetToken()); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "made for another node id") {
		t.Fatalf("node9 joining with node7's token: %v, want PermissionDenied", err)
	}
	if !tokenHeld(leader, bound.GetToken()) {
		t.Fatal("node9's refused join spent node7's token")
	}
	if err := join("node9", anyNode.GetToken()); err != nil {
		t.Fatalf("node9 joining with the AnyNode token: %v", err)
	}
	if err := join("node7", bound.GetToken()); err != nil {
		t.Fatalf("node7 joining with its token: %v", err)
	}
	for _, id := range []string{"node9", "node7"} {
		if _, ok := leader.Raft.State().Node(id); !ok {
			t.Errorf("%s joined and is not a member", id)
		}
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("tokens listed after both were used: %v", got)
	}
}

// TestJoinTokenTTLBounds: a TTL under a minute is refused, InvalidArgument
// naming Ttl and the range; a minute is accepted, and 0 is 15 minutes.
func TestJoinTokenTTLBounds(t *testing.T) {
	c := hsmtest.NewCluster(t, 1)
	ctx := ctxT(t)
	admin := pb.NewClusterServiceClient(c.Dial(0, "admin"))
	for _, ttl := range []time.Duration{time.Nanosecond, 30 * time.Second, time.Minute - time.Millisecond} {
		_, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{Ttl: durationpb.New(ttl), NodeId: "node9"})
		if want := "invalid Ttl: must be 0 (15 minutes) or from 1m to 24h, got " + ttl.String(); status.Code(err) != codes.InvalidArgument ||
			status.Convert(err).Message() != want {
			t.Errorf("a token living %s: %v, want InvalidArgument %q", ttl, err, want)
		}
	}
	if got := len(c.Nodes[0].Raft.State().JoinTokens()); got != 0 {
		t.Fatalf("refused tokens added %d", got)
	}
	for _, tt := range []struct{ ttl, want time.Duration }{{time.Minute, time.Minute}, {0, 15 * time.Minute}} {
		start := time.Now()
		tok, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{Ttl: durationpb.New(tt.ttl), NodeId: "node9"})
		if err != nil {
			t.Fatalf("a token living %s: %v", tt.ttl, err)
		}
		if d := tok.GetExpireTime().AsTime().Sub(start); d < tt.want-time.Second || d > tt.want+5*time.Second {
			t.Errorf("a token asked to live %s expires in %s", tt.ttl, d)
		}
	}
}

// tokenHeld reports whether nd's state holds token.
func tokenHeld(nd *hsmtest.Node, token string) bool {
	h := sha256.Sum256([]byte(token))
	_, ok := nd.Raft.State().JoinToken(h[:])
	return ok
}
