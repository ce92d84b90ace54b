package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TestAuditAmplification: one refused Encrypt from a revoked principal
// (role none), and one from a user, with a multi-megabyte encryption
// context of characters JSON escapes six-fold, through real gRPC with
// mutual TLS. Each leaves an audit line within audit.MaxLine that says the
// context was omitted; the log reopens (a restart) and verifies.
func TestAuditAmplification(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newSecureEnv(t, log)
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	key := e.createKey(admin, "alias/amplified", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "revoked", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	dial := func(principal string, role authz.Role) clients {
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(hsmtest.ClientTLS(t, e.ca, principal, role))),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return newClient(conn)
	}
	// Just under the gRPC receive limit (256 KiB): a larger message is
	// refused before it is read, and never reaches the audit writer.
	huge := map[string]string{"tenant": strings.Repeat("<", 160<<10)}
	for _, who := range []struct {
		principal string
		role      authz.Role
	}{{"revoked", authz.RoleUser}, {"ursula", authz.RoleUser}} {
		_, err := dial(who.principal, who.role).crypto.Encrypt(withRequestID(ctx, who.principal+"-"+strings.Repeat("x", 100)),
			&pb.EncryptRequest{KeyId: key + strings.Repeat("k", 64<<10), Plaintext: []byte("p"), EncryptionContext: huge})
		if err == nil {
			t.Fatalf("%s: an Encrypt with a %d-byte context succeeded", who.principal, len(huge["tenant"]))
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) > audit.MaxLine {
			t.Fatalf("audit line %d has %d bytes, more than %d", i+1, len(line), audit.MaxLine)
		}
	}
	recs := auditLines(t, b)
	// The revoked principal is refused before its message is read, so its
	// line holds nothing of the message; the user's message is read, and
	// its line bounds what the message carried.
	lines, omitted := 0, 0
	for _, r := range recs {
		if r.Operation == "kms:Encrypt" {
			if r.EncryptionContext != nil || len(r.KeyRef) > 1024 {
				t.Errorf("Encrypt line keeps what it should bound: context %d pairs, key ref %d bytes", len(r.EncryptionContext), len(r.KeyRef))
			}
			if strings.Contains(r.ContextOmitted, "8192") {
				omitted++
			}
			lines++
		}
	}
	if lines != 2 || omitted != 1 {
		t.Fatalf("%d Encrypt lines (want 2), %d with the context omitted (want 1, the user's)", lines, omitted)
	}
	// A restart continues the log, and the chain holds.
	log, err = audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = log.Close()
	rep, err := audit.Verify(bytes.NewReader(b))
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// waitCheckpointed waits until the cluster holds a checkpoint of nd's
// audit log at its current head, and returns that seq.
func waitCheckpointed(t *testing.T, nd *hsmtest.Node) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, seq, _ := nd.AuditLog.Head()
		for _, h := range nd.Raft.State().AuditHeads(nd.ID) {
			if seq > 0 && h.Last.Seq == seq {
				return seq
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the audit head (seq %d) was not checkpointed: %+v", nd.ID, seq, nd.Raft.State().AuditHeads(nd.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditCheckpointsAnchorTheLog: a node checkpoints its audit chain
// head through Raft with its HSM's MAC; an auditor lists the checkpoints,
// MACs checked by the node's HSM; a node whose log lost lines from its end
// while it was down refuses every request once restarted, and says why.
func TestAuditCheckpointsAnchorTheLog(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit, c.AuditCheckpointInterval = true, 50*time.Millisecond
	nd := c.AddNode()
	ctx := ctxT(t)
	admin := newClient(c.DialAs(0, "root", authz.RoleAdmin))
	for i := range 3 {
		if _, err := admin.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/anchored-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	seq := waitCheckpointed(t, nd)
	auditor := newClient(c.DialAs(0, "audra", authz.RoleAuditor))
	ac := pb.NewAuditServiceClient(c.DialAs(0, "audra", authz.RoleAuditor))
	resp, err := ac.ListAuditCheckpoints(ctx, &pb.ListAuditCheckpointsRequest{NodeId: nd.ID})
	if err != nil {
		t.Fatal(err)
	}
	last := resp.GetCheckpoints()[len(resp.GetCheckpoints())-1]
	if resp.GetNodeId() != nd.ID || last.GetSeq() < seq || last.GetMacVerdict() != pb.AuditMacVerdict_AUDIT_MAC_VERDICT_VALID || len(last.GetMac()) != 32 {
		t.Fatalf("checkpoints %v", resp)
	}
	if _, err := pb.NewAuditServiceClient(c.DialAs(0, "ursula", authz.RoleUser)).ListAuditCheckpoints(ctx, &pb.ListAuditCheckpointsRequest{}); !isDenied(err) {
		t.Fatalf("a user listed checkpoints: %v", err)
	}
	seq = waitCheckpointed(t, nd) // the auditor's own requests' lines

	// Down, the host cuts the last two lines; up again, the node refuses.
	nd.Stop()
	b, err := os.ReadFile(nd.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	cut := bytes.Join(lines[:len(lines)-3], nil) // the last element is empty
	if err := os.WriteFile(nd.AuditPath(), cut, 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(bytes.NewReader(cut)); err != nil || rep.LastSeq != seq-2 {
		t.Fatalf("the cut log should still be a chain: %+v %v", rep, err)
	}
	nd.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := auditor.keys.ListKeys(ctx, &pb.ListKeysRequest{})
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "audit log") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node serves on a log cut behind its checkpoint: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := nd.AuditLog.Err(); err == nil || !strings.Contains(err.Error(), audit.ProblemCutEnd) {
		after, _ := os.ReadFile(nd.AuditPath())
		t.Logf("the log after the restart, past the cut:\n%s", after[len(cut):])
		t.Fatalf("the log's refusal does not say what is wrong: %v", err)
	}
}

// outcomeFailer is an audit writer that refuses every outcome line (one
// naming an intent), as a disk that fills between the two would.
type outcomeFailer struct{ lockedBuffer }

func (w *outcomeFailer) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"intent":`)) {
		return 0, errors.New("no space left on device")
	}
	return w.lockedBuffer.Write(p)
}

// TestOutcomeUnwritable: a change whose intent was written but whose
// outcome line cannot be is answered as it happened (a refusal would
// invite a retry of a change made), and verify reports the intent without
// outcome.
func TestOutcomeUnwritable(t *testing.T) {
	var buf bytes.Buffer
	w := &outcomeFailer{lockedBuffer{b: &buf}}
	e := newSecureEnv(t, audit.New(w, audit.Options{}))
	admin := e.as("root", authz.RoleAdmin)
	key := e.createKey(admin, "alias/outcome-lost", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	if _, ok := e.node.State().Key(key); !ok {
		t.Fatal("the key was not made")
	}
	rep, err := audit.Verify(bytes.NewReader([]byte(w.String())))
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.ProblemIntent || !strings.Contains(rep.Problems[0].Detail, "kms:CreateKey") {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// TestAuditCheckpointsReplicated: in a 3-node cluster every node's
// checkpoints reach every member's state, so no one host holds the only
// copy; a node's HSM vouches for its own checkpoints' MACs and leaves
// other nodes' unchecked.
func TestAuditCheckpointsReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit, c.AuditCheckpointInterval = true, 50*time.Millisecond
	for range 3 {
		c.AddNode()
	}
	ctx := ctxT(t)
	for _, nd := range c.Nodes {
		admin := newClient(c.DialAs(nd.Index, "root", authz.RoleAdmin))
		if _, err := admin.keys.ListKeys(ctx, &pb.ListKeysRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.Nodes {
		seq := waitCheckpointed(t, nd)
		for _, other := range c.Nodes {
			deadline := time.Now().Add(30 * time.Second)
			for {
				hs := other.Raft.State().AuditHeads(nd.ID)
				if len(hs) == 1 && hs[0].Last.Seq >= seq {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s's checkpoint of seq %d not on %s: %+v", nd.ID, seq, other.ID, hs)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	owner, other := c.Nodes[1], c.Nodes[2]
	for _, asked := range []*hsmtest.Node{owner, other} {
		resp, err := pb.NewAuditServiceClient(c.DialAs(asked.Index, "audra", authz.RoleAuditor)).
			ListAuditCheckpoints(ctx, &pb.ListAuditCheckpointsRequest{NodeId: owner.ID})
		if err != nil || len(resp.GetCheckpoints()) == 0 {
			t.Fatalf("checkpoints of %s from %s: %v %v", owner.ID, asked.ID, resp, err)
		}
		want := pb.AuditMacVerdict_AUDIT_MAC_VERDICT_UNCHECKED
		if asked == owner {
			want = pb.AuditMacVerdict_AUDIT_MAC_VERDICT_VALID
		}
		for _, cp := range resp.GetCheckpoints() {
			if cp.GetNodeId() != owner.ID || cp.GetMacVerdict() != want {
				t.Errorf("from %s: %v, want verdict %s", asked.ID, cp, want)
			}
		}
	}
	// Another member records a checkpoint in owner's name (any member may
	// propose commands): owner's HSM calls its MAC invalid.
	seg, seq, _ := owner.AuditLog.Head()
	leader := c.Leader(t)
	if _, err := leader.Raft.Apply(ctx, &cluster.AuditCheckpoint{Node: owner.ID, Segment: seg, Seq: seq + 1000,
		Head: strings.Repeat("ab", 32), MAC: bytes.Repeat([]byte{7}, 32), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := pb.NewAuditServiceClient(c.DialAs(owner.Index, "audra", authz.RoleAuditor)).
			ListAuditCheckpoints(ctx, &pb.ListAuditCheckpointsRequest{NodeId: owner.ID})
		if err != nil {
			t.Fatal(err)
		}
		cps := resp.GetCheckpoints()
		if last := cps[len(cps)-1]; last.GetSeq() == seq+1000 {
			if last.GetMacVerdict() != pb.AuditMacVerdict_AUDIT_MAC_VERDICT_INVALID {
				t.Fatalf("a forged checkpoint's MAC: %s", last.GetMacVerdict())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forged checkpoint did not reach %s", owner.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
