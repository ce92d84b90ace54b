package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func nodeClients(t *testing.T, c *hsmtest.Cluster, i int) (pb.KeyServiceClient, pb.CryptoServiceClient) {
	t.Helper()
	conn := c.Dial(i, "admin")
	return pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn)
}

// A partitioned minority cannot commit; after healing it converges, and a
// key disabled on the majority side is refused by every node.
func TestPartitionedMinorityCannotCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	old := c.Leader(t)
	var majority []*hsmtest.Node
	for _, nd := range c.Nodes {
		if nd != old {
			majority = append(majority, nd)
		}
	}
	ok0, oc0 := nodeClients(t, c, old.Index)
	mk, mc := nodeClients(t, c, majority[0].Index)
	k, err := ok0.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/gate"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ok0.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/minority-write"})
	if err != nil {
		t.Fatal(err)
	}
	id := k.GetKeyMetadata().GetKeyId()
	c.WaitConverged(t)

	c.Partition([]*hsmtest.Node{old}, majority)
	// The minority cannot commit: its write is not acknowledged.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = ok0.DisableKey(wctx, &pb.DisableKeyRequest{KeyId: other.GetKeyMetadata().GetKeyId()})
	cancel()
	if err == nil {
		t.Fatal("the isolated old leader acknowledged a write")
	}
	// The majority elects a leader and takes writes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err = mk.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: id})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("majority never took the write: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = mc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantErr(t, err, codes.FailedPrecondition, "DisabledException")
	// The isolated node stops serving once its state may be stale.
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, err := oc0.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the isolated node keeps encrypting with a key the majority disabled")
		}
		time.Sleep(20 * time.Millisecond)
	}

	healed := time.Now()
	c.Heal()
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, err := oc0.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
		if err != nil {
			if code, _ := statusOf(err); code == codes.FailedPrecondition {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the healed node does not refuse the disabled key: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("after healing, the old leader refused the key disabled on the majority side within %v", time.Since(healed).Round(time.Millisecond))
	c.WaitConverged(t)
	for i := range c.Nodes {
		kc, _ := nodeClients(t, c, i)
		d, err := kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: other.GetKeyMetadata().GetKeyId()})
		if err != nil || d.GetKeyMetadata().GetKeyState() != pb.KeyState_KEY_STATE_ENABLED {
			t.Fatalf("node %d: the minority's unacknowledged write took effect: %v %v", i+1, d, err)
		}
	}
}

func statusOf(err error) (codes.Code, string) {
	st, _ := status.FromError(err)
	return st.Code(), st.Message()
}

// A node down long enough that the leader compacted its log catches up by
// installing a snapshot, then serves keys made while it was away.
func TestRejoinThroughSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 64
		cfg.SnapshotInterval = 100 * time.Millisecond
		cfg.TrailingLogs = 16
	})
	ctx := ctxT(t)
	leader, down := c.Leader(t), c.Followers(t)[0]
	wasAt := down.Raft.Stats().LastLogIndex
	down.Stop()
	lk, _ := nodeClients(t, c, leader.Index)
	var ids []string
	for i := 0; i < 40; i++ {
		k, err := lk.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/away-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.GetKeyMetadata().GetKeyId())
		for j := 0; j < 3; j++ {
			if _, err := lk.TagKey(ctx, &pb.TagKeyRequest{KeyId: ids[i], Tags: map[string]string{"n": fmt.Sprint(j)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for leader.Raft.Stats().FirstLogIndex <= wasAt+1 {
		if time.Now().After(deadline) {
			t.Fatalf("the leader never compacted past the stopped node (first index %d, node at %d)", leader.Raft.Stats().FirstLogIndex, wasAt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	down.Start()
	_, dc := nodeClients(t, c, down.Index)
	for _, id := range ids {
		if _, err := dc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("back")}); err != nil {
			t.Fatalf("rejoined node cannot use key %s made while it was down: %v", id, err)
		}
	}
	c.WaitConverged(t)
}

// An HSM failing on one node is invisible to clients of the SDK with all
// endpoints: no call fails. The node reports NOT_SERVING and comes back by
// itself when its HSM does.
func TestHSMFailureInvisibleThroughSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	cli := sdk(t, c, "app")
	ctx := ctxT(t)
	k, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/steady"})
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				enc, err := cli.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("p")})
				if err == nil {
					_, err = cli.Crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
				}
				if err != nil {
					failed.Add(1)
					t.Errorf("call failed during the HSM outage: %v", err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	sick := c.Nodes[1]
	time.Sleep(200 * time.Millisecond)
	sick.Faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if healthy, _ := sick.Service.Healthy(); !healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node with a failed HSM still reports itself ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, why := sick.Service.Healthy()
	_, sc := nodeClients(t, c, 1)
	_, err = sc.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("direct")})
	wantErr(t, err, codes.Unavailable, "DependencyTimeoutException")
	time.Sleep(500 * time.Millisecond)
	sick.Faults.Clear()
	sick.WaitServing(t)
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d calls ok, %d failed", ok.Load(), failed.Load())
	}
	t.Logf("HSM outage on %s (%s): %d round trips through the SDK, none failed", sick.ID, why, ok.Load())
}

// Five nodes survive the loss of any two, the leader included.
func TestFiveNodesLoseTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 5)
	cli := sdk(t, c, "app")
	ctx := ctxT(t)
	before, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/before"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cli.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/before", Plaintext: []byte("five")})
	if err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(t)
	var lost []*hsmtest.Node
	lost = append(lost, leader)
	for _, nd := range c.Nodes {
		if nd != leader && len(lost) < 2 {
			lost = append(lost, nd)
		}
	}
	for _, nd := range lost {
		nd.Stop()
	}
	after := createKeyOnce(t, cli, "alias/after")
	for i, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		_, cc := nodeClients(t, c, i)
		dec, err := cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
		if err != nil || string(dec.GetPlaintext()) != "five" {
			t.Fatalf("%s: %v", nd.ID, err)
		}
		if _, err := cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: after.GetKeyId(), Plaintext: []byte("x")}); err != nil {
			t.Fatalf("%s: key made after the loss: %v", nd.ID, err)
		}
	}
	for _, nd := range lost {
		nd.Start()
	}
	c.WaitConverged(t)
	for i := range c.Nodes {
		_, cc := nodeClients(t, c, i)
		if _, err := cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: before.GetKeyMetadata().GetKeyId(), Plaintext: []byte("x")}); err != nil {
			t.Fatalf("node %d after rejoining: %v", i+1, err)
		}
	}
}

// A backup restores a destroyed cluster on an HSM that holds the domain
// key: every key and old ciphertext works again, on new nodes too.
func TestBackupRestoresDestroyedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c1 := hsmtest.NewCluster(t, 3)
	cli := sdk(t, c1, "app")
	ctx := ctxT(t)
	type sealed struct {
		blob []byte
		pt   string
	}
	var blobs []sealed
	for i := 0; i < 5; i++ {
		if _, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/keep-%d", i)}); err != nil {
			t.Fatal(err)
		}
		enc, err := cli.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: fmt.Sprintf("alias/keep-%d", i), Plaintext: []byte(fmt.Sprint("secret ", i))})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, sealed{enc.GetCiphertextBlob(), fmt.Sprint("secret ", i)})
	}
	signer, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/keep-signer", KeySpec: pb.KeySpec_KEY_SPEC_RSA_2048, KeyUsage: pb.KeyUsage_KEY_USAGE_SIGN_VERIFY})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cli.Crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: "alias/keep-signer"})
	if err != nil || len(pub.GetPublicKey()) == 0 {
		t.Fatalf("public key before the backup: %v", err)
	}
	var backup bytes.Buffer
	info, err := cli.Backup(ctx, &backup)
	if err != nil {
		t.Fatal(err)
	}
	survivor := c1.Nodes[0].Token
	c1.StopAll() // the cluster and its Raft data are gone; the HSM tokens remain

	c2 := hsmtest.NewEmptyCluster(t)
	c2.Restore = backup.Bytes()
	c2.RestoreAuth = broker.RestoreAuth{Authenticator: info.Authenticator}
	c2.AddNodeOnToken(survivor)
	c2.AddNode()
	c2.AddNode()
	for i := range c2.Nodes {
		kc, cc := nodeClients(t, c2, i)
		for j, b := range blobs {
			dec, err := cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: b.blob})
			if err != nil || string(dec.GetPlaintext()) != b.pt {
				t.Fatalf("restored node %d: ciphertext %d: %v", i+1, j, err)
			}
		}
		s, err := cc.Sign(ctx, &pb.SignRequest{KeyId: signer.GetKeyMetadata().GetKeyId(), Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256})
		if err != nil {
			t.Fatalf("restored node %d: sign: %v", i+1, err)
		}
		v, err := cc.Verify(ctx, &pb.VerifyRequest{KeyId: "alias/keep-signer", Message: []byte("m"), Signature: s.GetSignature(), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256})
		if err != nil || !v.GetSignatureValid() {
			t.Fatalf("restored node %d: verify: %v", i+1, err)
		}
		pk, err := cc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: "alias/keep-signer"})
		if err != nil {
			t.Fatalf("restored node %d: public key: %v", i+1, err)
		}
		if string(pk.GetPublicKey()) != string(pub.GetPublicKey()) {
			t.Fatalf("restored node %d: public key changed", i+1)
		}
		if _, err := kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/new-%d", i)}); err != nil {
			t.Fatalf("restored node %d: write: %v", i+1, err)
		}
	}
	c2.WaitConverged(t)
}

// createKeyOnce creates a key the way a careful client does when a write's
// outcome is unknown (the connection died after the request left): it
// looks the alias up before it tries again, so the key is made exactly once.
func createKeyOnce(t *testing.T, cli *client.Client, alias string) *pb.KeyMetadata {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: alias})
		if err == nil {
			cancel()
			return resp.GetKeyMetadata()
		}
		d, derr := cli.Keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: alias})
		cancel()
		if derr == nil {
			return d.GetKeyMetadata()
		}
		if time.Now().After(deadline) {
			t.Fatalf("create %s: %v", alias, err)
		}
	}
}

// TestStatusCallsAStoppedNodeUnhealthy: cluster status (and XKS
// GetHealthStatus, which reads it) takes another node's health from its
// replicated record, which a node that stopped leaves behind. A record not
// rewritten for three refreshes is a node not heard from: unhealthy until it
// writes again.
func TestStatusCallsAStoppedNodeUnhealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.HeartbeatRefresh = 200 * time.Millisecond
	for range 3 {
		c.AddNode()
	}
	leader := c.Leader(t)
	stopped := c.Followers(t)[0]
	cc := pb.NewClusterServiceClient(c.Dial(leader.Index, "admin"))
	ctx := ctxT(t)
	waitHealth := func(want map[string]bool) {
		t.Helper()
		var got map[string]bool
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			st, err := cc.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			got = map[string]bool{}
			for _, n := range st.GetNodes() {
				got[n.GetId()] = n.GetHealthy()
			}
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
		}
		t.Fatalf("health by node %v, want %v", got, want)
	}
	all := map[string]bool{}
	for _, nd := range c.Nodes {
		all[nd.ID] = true
	}
	waitHealth(all)
	stopped.Stop()
	without := map[string]bool{}
	for id := range all {
		without[id] = id != stopped.ID
	}
	waitHealth(without)
	stopped.Start()
	waitHealth(all)
}

// TestJoinStoppedBeforeTheKeyIsCompleted: a join that stops after the
// leader added the node as a voter and before the node imported the domain
// key (the process killed in between, or its HSM failing then) left a voter
// that could never serve: on its next start the node found its Raft state
// and ignored its join list, and the cluster refused it as a member. Now the
// member, whose HSM shows no domain key, completes its join with a new
// token, and serves. Until then it is a non-voter, and it becomes a voter
// once its join is complete.
func TestJoinStoppedBeforeTheKeyIsCompleted(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	first := c.AddNode()
	var joinErr error
	c.BeforeStart = func(nd *hsmtest.Node) {
		if nd != first {
			nd.Faults.Add(hsm.FaultRule{Call: "C_UnwrapKey", Code: hsm.CKRDeviceError, Times: 1})
		}
	}
	c.OnJoinError = func(_ *hsmtest.Node, err error) { joinErr = err }
	ctx := ctxT(t)
	admitted := func() *hsmtest.Node {
		t.Helper()
		joinErr = nil
		nd := c.AddNode()
		if joinErr == nil {
			t.Fatalf("%s: the join succeeded with the domain key's import failing", nd.ID)
		}
		if has, err := nd.Partition.HasDomainKey(ctx); err != nil || has {
			t.Fatalf("%s after the failed import: domain key %v, %v", nd.ID, has, err)
		}
		// A member, but not a voter: its HSM never showed the domain key,
		// so the leader does not promote it, and the cluster's quorum does
		// not hang on a node that cannot serve.
		if got := suffrage(first, nd.ID); got != "non-voter" {
			t.Fatalf("%s after the leader admitted it is %q, want non-voter: %+v", nd.ID, got, first.Raft.Stats().Servers)
		}
		return nd
	}
	second, third := admitted(), admitted()
	c.BeforeStart, c.OnJoinError = nil, nil
	joinToken := func(nodeID string) string {
		t.Helper()
		tok, err := pb.NewClusterServiceClient(c.Dial(first.Index, "admin")).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: nodeID})
		if err != nil {
			t.Fatal(err)
		}
		return tok.GetToken()
	}

	// Restarted with its Raft state, the node completes its join (as
	// hsmbrokerd serve does with its join list and a new token).
	second.Stop()
	second.Start() // completes the join, or fails the test
	// A node stopped before it wrote Raft state of its own starts as a new
	// node and joins: the leader completes that join too, rather than its
	// own check refusing a member by its id.
	if err := third.Daemon.Join(ctx, broker.JoinConfig{Seeds: []string{first.GRPCAddr}, Token: joinToken(third.ID), GRPCAddr: third.GRPCAddr}); err != nil {
		t.Fatalf("%s: join as a new node: %v", third.ID, err)
	}
	// The loops its failed first join left unstarted (OnJoinError).
	loops, stop := context.WithCancel(ctx)
	defer stop()
	go third.Daemon.Heartbeat(loops)
	go third.Daemon.WatchHealth(loops)
	keys1, crypto1 := nodeClients(t, c, first.Index)
	k, err := keys1.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/after-join"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := crypto1.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("joined")})
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*hsmtest.Node{second, third} {
		if has, err := nd.Partition.HasDomainKey(ctx); err != nil || !has {
			t.Fatalf("%s after the completed join: domain key %v, %v", nd.ID, has, err)
		}
		nd.WaitServing(t)
		nd.WaitVoter(t)
		_, cc := nodeClients(t, c, nd.Index)
		dec, err := cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
		if err != nil || string(dec.GetPlaintext()) != "joined" {
			t.Fatalf("decrypt on the completed member %s: %v", nd.ID, err)
		}
	}

	// A member whose HSM holds the key cannot join again, even with a token.
	err = second.Daemon.Join(ctx, broker.JoinConfig{Seeds: []string{first.GRPCAddr}, Token: joinToken(second.ID), GRPCAddr: second.GRPCAddr})
	if status.Code(err) != codes.AlreadyExists && !strings.Contains(fmt.Sprint(err), "already a member") {
		t.Fatalf("a member with the key joining again: %v, want already a member", err)
	}
}

// TestNoQuorumIsSaidBeforeTheCallerGivesUp: a node that knows no leader
// (here the last of three) waited for one until the caller's deadline,
// so a membership change on a cluster without quorum ended in the caller's
// own DeadlineExceeded, which says nothing. It now answers Unavailable,
// saying the cluster may have lost its quorum, before that deadline.
func TestNoQuorumIsSaidBeforeTheCallerGivesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	leader := c.Leader(t)
	var last *hsmtest.Node
	for _, nd := range c.Followers(t) {
		if last == nil {
			last = nd
			continue
		}
		nd.Stop()
	}
	leader.Stop()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if id, _ := last.Raft.Leader(); id == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the last node still follows a leader")
		}
	}
	cc := pb.NewClusterServiceClient(c.Dial(last.Index, "admin"))
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	_, err := cc.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: leader.ID})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "may have lost its quorum")
}

// A write through a follower whose leader still leads Raft but does not
// answer on its API is refused Unavailable, naming the leader, while the
// caller still listens: not with the caller's own deadline.
func TestWriteToALeaderThatDoesNotAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	leader := c.Leader(t)
	follower := c.Followers(t)[0]
	leader.StopGRPC()
	kc, _ := nodeClients(t, c, follower.Index)
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	_, err := kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/unanswered"})
	unanswered := "the cluster leader " + leader.ID + " does not answer"
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, unanswered)
	if id, _ := follower.Raft.Leader(); id != leader.ID {
		t.Fatalf("the follower now follows %q; the test needs it to follow %s", id, leader.ID)
	}
	if _, ok := leader.Raft.State().Alias("alias/unanswered"); ok {
		t.Fatal("the refused write was applied")
	}
	// Cluster changes a follower passes on to the leader say the same.
	cc := pb.NewClusterServiceClient(c.Dial(follower.Index, "admin"))
	_, err = cc.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: follower.ID})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, unanswered)
	_, err = cc.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: leader.ID})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, unanswered)
}
