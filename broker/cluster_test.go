package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Three brokers, each with its own HSM: keys created through any node work
// on every node, writes through followers are forwarded, and the state is
// identical everywhere.
func TestThreeNodeClusterServesFromEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	fs := c.Followers(t)
	follower := fs[len(fs)-1].Index
	keys := make([]pb.KeyServiceClient, 3)
	cryptos := make([]pb.CryptoServiceClient, 3)
	for i := range c.Nodes {
		conn := c.Dial(i, "admin")
		keys[i], cryptos[i] = pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn)
	}
	// Created through a follower: generated in the follower's HSM,
	// replicated through the leader, readable on the follower at once.
	ck, err := keys[follower].CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/shared"})
	if err != nil {
		t.Fatalf("create through follower: %v", err)
	}
	id := ck.GetKeyMetadata().GetKeyId()
	sig, err := keys[follower].CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/signer", KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256})
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Nodes {
		enc, err := cryptos[i].Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/shared", Plaintext: []byte("from node"), EncryptionContext: map[string]string{"n": "x"}})
		if err != nil {
			t.Fatalf("encrypt on node %d: %v", i+1, err)
		}
		for j := range c.Nodes {
			dec, err := cryptos[j].Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: map[string]string{"n": "x"}})
			if err != nil || string(dec.GetPlaintext()) != "from node" {
				t.Fatalf("ciphertext from node %d on node %d: %v", i+1, j+1, err)
			}
		}
		s, err := cryptos[i].Sign(ctx, &pb.SignRequest{KeyId: "alias/signer", Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
		if err != nil {
			t.Fatalf("sign on node %d: %v", i+1, err)
		}
		v, err := cryptos[(i+1)%3].Verify(ctx, &pb.VerifyRequest{KeyId: "alias/signer", Message: []byte("m"), Signature: s.GetSignature(), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
		if err != nil || !v.GetSignatureValid() {
			t.Fatalf("signature from node %d: %v %v", i+1, v, err)
		}
	}
	// A consistent read on a follower sees a write just acknowledged by
	// another node.
	for i := range c.Nodes {
		other := (i + 1) % 3
		ck, err := keys[other].CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/fresh-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		d, err := keys[i].DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: ck.GetKeyMetadata().GetKeyId(), ConsistentRead: true})
		if err != nil || d.GetKeyMetadata().GetKeyId() != ck.GetKeyMetadata().GetKeyId() {
			t.Fatalf("consistent read on node %d: %v", i+1, err)
		}
	}
	// A disable through a follower is refused by every node once applied.
	if _, err := keys[follower].DisableKey(ctx, &pb.DisableKeyRequest{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	for i := range c.Nodes {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := cryptos[i].Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
			if err != nil {
				wantErr(t, err, codes.FailedPrecondition, "DisabledException")
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d still encrypts with a disabled key", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	_, err = keys[follower].CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/shared"})
	wantErr(t, err, codes.AlreadyExists, "AlreadyExistsException", "alias/shared")

	st := clusterStatus(t, c, follower)
	if st.GetLeaderId() != leader.ID || len(st.GetNodes()) != 3 {
		t.Fatalf("status: %v", st)
	}
	serials := map[string]bool{}
	for _, n := range st.GetNodes() {
		if n.GetGrpcAddress() == "" || n.GetPartition().GetSerial() == "" || !n.GetPartition().GetDomainKeyPresent() {
			t.Errorf("node %s record incomplete: %v", n.GetId(), n)
		}
		serials[n.GetPartition().GetSerial()] = true
	}
	if len(serials) != 3 {
		t.Errorf("nodes share HSM tokens: %v", serials)
	}
	// Members by node id; the time since the leader was last heard from
	// is the answering follower's alone, and the leader reports none.
	lst := clusterStatus(t, c, leader.Index)
	for _, s := range []*pb.GetClusterStatusResponse{st, lst} {
		if !slices.IsSortedFunc(s.GetNodes(), func(a, b *pb.NodeStatus) int { return strings.Compare(a.GetId(), b.GetId()) }) {
			t.Errorf("status from %s: members not in node id order", s.GetNodeId())
		}
		for _, n := range s.GetNodes() {
			want := n.GetId() == s.GetNodeId() && n.GetId() != leader.ID
			if (n.GetLastContact() != nil) != want || (n.GetId() != s.GetNodeId()) != (n.GetAppliedIndex() == 0) {
				t.Errorf("status from %s: member %s has last_contact %v, applied_index %d", s.GetNodeId(), n.GetId(), n.GetLastContact(), n.GetAppliedIndex())
			}
		}
	}
	c.WaitConverged(t)
	if sig.GetKeyMetadata().GetKeyId() == "" {
		t.Fatal("no signing key id")
	}
}

// Joins that must fail change nothing.
func TestJoinRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 1)
	ctx := ctxT(t)
	admin := pb.NewClusterServiceClient(c.Dial(0, "admin"))

	newJoiner := func(id string, ca *pki.CA, withDomainKey bool) *broker.Daemon {
		t.Helper()
		dir := t.TempDir()
		tok := hsmtest.NewToken(t)
		p := hsmtest.Open(t, tok)
		if withDomainKey {
			if err := p.CreateDomainKey(ctx); err != nil {
				t.Fatal(err)
			}
		}
		caFile := filepath.Join(dir, "ca.pem")
		if err := ca.Save(caFile, filepath.Join(dir, "ca-key.pem")); err != nil {
			t.Fatal(err)
		}
		iss, err := ca.IssueServer(id, []string{"localhost"}, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		_ = iss.Save(filepath.Join(dir, "n.pem"), filepath.Join(dir, "n-key.pem"))
		tlsCfg, err := pki.PeerTLSConfig(filepath.Join(dir, "n.pem"), filepath.Join(dir, "n-key.pem"), caFile)
		if err != nil {
			t.Fatal(err)
		}
		// The joining node trusts the real cluster's CA to reach it, but
		// presents its own certificate.
		tlsCfg.RootCAs = c.CA.Pool()
		node, err := cluster.Open(cluster.Config{NodeID: id, RaftAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "raft"), TLS: tlsCfg, Logger: hsmtest.QuietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = node.Shutdown() })
		svc, err := broker.New(broker.Config{Node: node, Partition: p, PeerTLS: tlsCfg, Logger: hsmtest.QuietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Close)
		return broker.NewDaemon(svc, broker.DaemonConfig{})
	}
	seeds := []string{c.Nodes[0].GRPCAddr}

	t.Run("wrong token", func(t *testing.T) {
		j := newJoiner("node9", c.CA, false)
		err := j.Join(ctx, broker.JoinConfig{Seeds: seeds, Token: "hsmbj_not-a-token", GRPCAddr: "127.0.0.1:1"})
		wantErr(t, err, codes.PermissionDenied, "AccessDeniedException", "join token", "the leader "+seeds[0], "hsmctl cluster join-token")
		if strings.Contains(err.Error(), "rpc error") {
			t.Errorf("the join error shows grpc-go's own text: %v", err)
		}
	})
	t.Run("duplicate node id", func(t *testing.T) {
		tok, _ := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node1"})
		j := newJoiner("node1", c.CA, false)
		err := j.Join(ctx, broker.JoinConfig{Seeds: seeds, Token: tok.GetToken(), GRPCAddr: "127.0.0.1:1"})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("already a member")) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("foreign CA", func(t *testing.T) {
		other, err := pki.NewCA("someone else")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node8"})
		if err != nil || tok.GetToken() == "" {
			t.Fatalf("create join token: %v", err)
		}
		j := newJoiner("node8", other, false)
		// With a valid token, the only thing wrong is the certificate: the
		// seed refuses it in the TLS handshake, so not even the first
		// request (GetClusterStatus) gets an answer. How the refusal reaches
		// the client (a TLS alert, a broken pipe) depends on timing.
		err = j.Join(ctx, broker.JoinConfig{Seeds: seeds, Token: tok.GetToken(), GRPCAddr: "127.0.0.1:1"})
		if status.Code(err) != codes.Unavailable || !strings.Contains(fmt.Sprint(err), "no seed answered") {
			t.Fatalf("join with a foreign CA's certificate: %v, want the seed's TLS handshake refusal", err)
		}
	})
	t.Run("different domain key", func(t *testing.T) {
		tok, _ := admin.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: "node7"})
		j := newJoiner("node7", c.CA, true)
		err := j.Join(ctx, broker.JoinConfig{Seeds: seeds, Token: tok.GetToken(), GRPCAddr: "127.0.0.1:1"})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("not the cluster's")) {
			t.Fatalf("got %v", err)
		}
	})
	// Nothing changed but the join tokens the test itself made.
	st := c.Nodes[0].Raft.State()
	if len(st.Nodes()) != 1 || len(c.Nodes[0].Raft.Stats().Servers) != 1 {
		t.Fatalf("membership changed: %v / %v", st.Nodes(), c.Nodes[0].Raft.Stats().Servers)
	}
}

// A member removed from the cluster says so when asked whether it is
// ready, and what it takes to come back, instead of "catching up" for
// ever.
func TestRemovedNodeSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	gone := c.Followers(t)[0]
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: gone.ID}); err != nil {
		t.Fatal(err)
	}
	var reason string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, reason = gone.Service.Ready(ctx); !ok && strings.Contains(reason, "removed from the cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removed node's readiness: %q", reason)
		}
	}
	if !strings.Contains(reason, "join token") {
		t.Errorf("the removed node does not say how to come back: %q", reason)
	}
	if ok, reason := leader.Service.Ready(ctx); !ok {
		t.Errorf("the leader after the removal: %s", reason)
	}
	// Its cluster status says so too (what hsmctl cluster status shows);
	// a serving member's says nothing.
	st, err := pb.NewClusterServiceClient(c.Dial(gone.Index, "admin")).GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil || !strings.Contains(st.GetNotServingReason(), "removed from the cluster") {
		t.Errorf("the removed node's status: %q, %v", st.GetNotServingReason(), err)
	}
	if st, err := admin.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{}); err != nil || st.GetNotServingReason() != "" {
		t.Errorf("the leader's status: %q, %v", st.GetNotServingReason(), err)
	}
	// A cluster change an admin asks of the removed node, which passes it
	// on to the leader, says the node was removed: not that the admin may
	// not.
	wantToldRemoved(t, ctx, c, gone)
	// A write it refuses (at its readiness gate) is marked as not carried
	// out, so a client with the removed node first among its endpoints
	// makes it on the next, once, though the write is not idempotent.
	_, err = pb.NewKeyServiceClient(c.Dial(gone.Index, "admin")).CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/refused"})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "was removed from the cluster")
	if !client.NotCarriedOut(err) {
		t.Errorf("the removed node's refusal of a write is not marked as not carried out: %v", err)
	}
	cli, err := client.Dial(ctx, client.Config{Endpoints: []string{gone.GRPCAddr, leader.GRPCAddr},
		TLS: c.ClientTLS("admin", authz.RoleAdmin), Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/made-elsewhere"}); err != nil {
		t.Fatalf("a write through a client whose first endpoint was removed: %v", err)
	}
	if cli.PreferredEndpoint() != leader.GRPCAddr {
		t.Errorf("the client prefers %s after the removed node refused, want the member %s", cli.PreferredEndpoint(), leader.GRPCAddr)
	}
}

// wantToldRemoved asks node nd, as an admin, to hand leadership over and
// wants the answer to say nd was removed (FailedPrecondition).
func wantToldRemoved(t *testing.T, ctx context.Context, c *hsmtest.Cluster, nd *hsmtest.Node) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	_, err := pb.NewClusterServiceClient(c.Dial(nd.Index, "admin")).TransferLeadership(cctx, &pb.TransferLeadershipRequest{})
	wantErr(t, err, codes.FailedPrecondition, broker.ExcInvalidState, "was removed from the cluster")
	// Refused before the leader was asked anything: another node may
	// take it.
	if !client.NotCarriedOut(err) {
		t.Errorf("the removed node's refusal is not marked as not carried out: %v", err)
	}
}

// A removed member's node certificate no longer makes the calls of a
// member: it cannot propose changes through the leader (ForwardCommand),
// read its commit index, or pass on cluster changes. Removing a node is
// how an operator cuts off a node whose host is retired or compromised,
// and its certificate stays valid until it expires.
func TestRemovedNodeCannotActAsMember(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	fs := c.Followers(t)
	gone, stays := fs[0], fs[1]
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: gone.ID}); err != nil {
		t.Fatal(err)
	}
	gone.Stop()
	// A member's certificate still may (the check is not of node
	// certificates in general).
	member := pb.NewClusterServiceClient(c.DialAsNode(stays, leader.Index))
	if _, err := member.ReadIndex(ctx, &pb.ReadIndexRequest{}); err != nil {
		t.Fatalf("ReadIndex with a member's certificate: %v", err)
	}
	as := pb.NewClusterServiceClient(c.DialAsNode(gone, leader.Index))
	cmd, err := cluster.EncodeCommand(&cluster.SetPrincipalRole{Name: "mallory", Role: authz.RoleAdmin, At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = as.ForwardCommand(ctx, &pb.ForwardCommandRequest{Command: cmd})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "not a member", "ForwardCommand")
	_, err = as.ReadIndex(ctx, &pb.ReadIndexRequest{})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "not a member", "ReadIndex")
	_, err = as.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: stays.ID})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "not a member", "TransferLeadership")
	_, err = as.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: stays.ID})
	wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, "not a member", "RemoveNode")
	if _, ok := leader.Raft.State().Principal("mallory"); ok {
		t.Error("the removed node's command was applied: principal mallory has a role")
	}
	if len(leader.Raft.Stats().Servers) != 2 {
		t.Errorf("membership changed: %v", leader.Raft.Stats().Servers)
	}
	if id, _ := leader.Raft.Leader(); id != leader.ID {
		t.Errorf("leadership moved to %q", id)
	}
}

// A removed node brought back as the operations guide says (its data
// emptied, a new join token) joins again with the same id: the leader's
// admission clears its removal, so the others take its Raft traffic and
// its member calls again.
func TestRemovedNodeJoinsAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	back := c.Followers(t)[0]
	kc, cc := nodeClients(t, c, leader.Index)
	k, err := kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/before-removal"})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: back.ID}); err != nil {
		t.Fatal(err)
	}
	back.Wipe()
	removedOn := func(nd *hsmtest.Node, want bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); nd.Raft.State().NodeRemoved(back.ID) != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %s as removed: %v, want %v", nd.ID, back.ID, !want, want)
			}
		}
	}
	for _, nd := range c.Nodes {
		if nd.Running() {
			removedOn(nd, true)
		}
	}
	back.Start()
	back.WaitServing(t)
	for _, nd := range c.Nodes {
		removedOn(nd, false)
	}
	// A write through it goes through the leader (ForwardCommand), and
	// it decrypts what was encrypted before its removal.
	bk, bc := nodeClients(t, c, back.Index)
	if _, err := bk.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-rejoin"}); err != nil {
		t.Fatalf("a write through the node joined again: %v", err)
	}
	pt, err := bc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: ct.GetCiphertextBlob()})
	if err != nil || string(pt.GetPlaintext()) != "kept" {
		t.Fatalf("decrypt on the node joined again: %q, %v", pt.GetPlaintext(), err)
	}
	c.WaitConverged(t)
}

// A node removed while it was down never gets the configuration that
// removes it: restarted with its old state it finds no leader, since the
// members refuse its Raft traffic. It learns of its removal from the
// members it asks, and says so, instead of "catching up" for ever.
func TestNodeRemovedWhileDownLearnsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	gone := c.Followers(t)[0]
	gone.Stop()
	admin := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := admin.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: gone.ID}); err != nil {
		t.Fatal(err)
	}
	// Nothing of Raft reaches it once it is back (so it cannot learn the
	// removal from the leader's last send), and it has no snapshot: its
	// state is empty, and it knows the members only as its peers.
	var members []*hsmtest.Node
	for _, nd := range c.Nodes {
		if nd != gone {
			members = append(members, nd)
		}
	}
	c.Partition([]*hsmtest.Node{gone}, members)
	if !gone.Launch() {
		t.Fatal("the removed node did not start")
	}
	if n := len(gone.Raft.State().Nodes()); n != 0 {
		t.Fatalf("the restarted node holds %d node records; the test needs none", n)
	}
	var reason string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, reason = gone.Service.Healthy(); !ok && strings.Contains(reason, "removed from the cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node removed while down says: %q", reason)
		}
	}
	if !strings.Contains(reason, "the leader "+leader.ID) || !strings.Contains(reason, "does not list it") || !strings.Contains(reason, "join token") {
		t.Errorf("the reason does not say who said so and how to come back: %q", reason)
	}
	// A cluster change asked of it is refused, saying why, rather than
	// after waiting for a leader that will not come.
	wantToldRemoved(t, ctx, c, gone)
	// The members are unaffected.
	for _, nd := range c.Nodes {
		if nd != gone {
			if ok, why := nd.Service.Healthy(); !ok {
				t.Errorf("%s: %s", nd.ID, why)
			}
		}
	}
}

// Right after a leader change, the last entry a follower has is the new
// leader's no-op, which raft does not hand to the state: a follower that
// waited for the state to reach the leader's commit index, before it
// answered "not found", waited for the next write (up to a heartbeat's
// 30 s) and answered Unavailable meanwhile. It now waits for the last
// command at or below that index, and answers at once.
func TestFollowerReadsRightAfterALeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	old := c.Leader(t)
	if _, err := pb.NewClusterServiceClient(c.Dial(old.Index, "admin")).TransferLeadership(ctx, &pb.TransferLeadershipRequest{}); err != nil {
		t.Fatal(err)
	}
	var leader *hsmtest.Node
	hsmtest.WaitUntil(t, "a new leader", 20*time.Second, func() bool {
		leader = c.Leader(t)
		return leader != old
	})
	for _, n := range c.Nodes {
		if n == leader {
			continue
		}
		// Well short of the next write, which the old wait needed: it
		// gave up after MaxStaleness (3 s), Unavailable.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := pb.NewKeyServiceClient(c.Dial(n.Index, "admin")).DescribeKey(rctx, &pb.DescribeKeyRequest{KeyId: "alias/none"})
		cancel()
		wantErr(t, err, codes.NotFound, broker.ExcNotFound)
	}
	// The new leader followed until a moment ago: its status reports no
	// time since it last heard from a leader (raft keeps the last one it
	// heard as a follower), while the old leader, following now, reports
	// its own.
	for _, n := range []*hsmtest.Node{leader, old} {
		for _, m := range clusterStatus(t, c, n.Index).GetNodes() {
			if m.GetId() == n.ID && (m.GetLastContact() != nil) != (n != leader) {
				t.Errorf("status from %s (leader %v): its last_contact is %v", n.ID, n == leader, m.GetLastContact())
			}
		}
	}
}

// GetClusterStatus lists members by node id, whatever order they joined
// in (Raft's configuration lists them in that order).
func TestClusterStatusSortsMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.NodeIDs = []string{"node-c", "node-a", "node-b"}
	for range c.NodeIDs {
		c.AddNode()
	}
	var joined []string
	for _, s := range c.Leader(t).Raft.Stats().Servers {
		joined = append(joined, s.ID)
	}
	if slices.IsSorted(joined) {
		t.Fatalf("setup: Raft's configuration lists %v, already in id order", joined)
	}
	for i, nd := range c.Nodes {
		var ids []string
		for _, m := range clusterStatus(t, c, i).GetNodes() {
			ids = append(ids, m.GetId())
		}
		if !slices.Equal(ids, []string{"node-a", "node-b", "node-c"}) {
			t.Errorf("status from %s lists %v, want node-a, node-b, node-c", nd.ID, ids)
		}
	}
}

// A consistent read on the leader appends nothing to the Raft log. It used
// to append a barrier entry, which raft hands to no state: any caller
// allowed to describe keys could fill the log with them, and a follower's
// read index, which skips only so many entries that change no state, then
// pointed at one its state never reached.
func TestConsistentReadsAppendNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 2)
	ctx := ctxT(t)
	leader := c.Leader(t)
	keys := pb.NewKeyServiceClient(c.Dial(leader.Index, "admin"))
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/read"}); err != nil {
		t.Fatal(err)
	}
	before := leader.Raft.Stats().LastLogIndex
	for range 50 {
		if _, err := keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/read", ConsistentRead: true}); err != nil {
			t.Fatal(err)
		}
		_, err := keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/none", ConsistentRead: true})
		wantErr(t, err, codes.NotFound, broker.ExcNotFound)
	}
	// Other writes (a node's record) may land meanwhile, but not one entry
	// per read.
	if after := leader.Raft.Stats().LastLogIndex; after-before >= 50 {
		t.Fatalf("100 consistent reads on the leader took the log from index %d to %d", before, after)
	}
}
