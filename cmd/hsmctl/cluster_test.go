package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/client/clienttest"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeCluster is three fake brokers that answer ClusterService as members
// of one cluster: each knows itself first-hand and the others from their
// replicated records, which say healthy whatever became of them.
type fakeCluster struct {
	t       *testing.T
	pki     *clienttest.PKI
	ids     []string
	addrs   []string
	servers []*grpc.Server

	mu       sync.Mutex
	leader   string
	removed  []string
	tokenTTL time.Duration
	// tokenNode and tokenAnyNode are the NodeId and AnyNode of the last
	// CreateJoinToken.
	tokenNode    string
	tokenAnyNode bool
	// tokens are the join tokens made and not revoked, by id; tokenCount
	// numbers them (tok-secret-123 is the first).
	tokens     map[string]*pb.JoinTokenInfo
	tokenCount int
	snapshot   []byte
	// hsmDown is the member whose HSM cannot be asked: its partition
	// reports unavailable and no domain key.
	hsmDown string
	// joining is a node that has asked to join and holds no
	// configuration yet: it knows no leader, no term and no members.
	joining string
	// notServing is what a member says of itself when it does not serve.
	notServing map[string]string
	// backupFault makes Backup misbehave: "bad sum", "bad size", "no
	// trailer", "flipped byte", "broken stream", or "no authenticator" (a
	// broker older than authenticators).
	backupFault string
}

type fakeMember struct {
	pb.UnimplementedClusterServiceServer
	c  *fakeCluster
	id string
}

// nodeIDPattern is the broker's rule for node ids.
var nodeIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// TestFakeClusterConformance holds fakeCluster to the ClusterService
// conformance suite that a real broker passes (client/clienttest).
func TestFakeClusterConformance(t *testing.T) {
	c := newFakeCluster(t)
	conn, err := grpc.NewClient(c.addrs[0], grpc.WithTransportCredentials(credentials.NewTLS(c.pki.ClientTLS())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	clienttest.TestClusterService(t, conn)
}

func newFakeCluster(t *testing.T) *fakeCluster {
	t.Helper()
	c := &fakeCluster{t: t, pki: clienttest.NewPKI(t), ids: []string{"node1", "node2", "node3"}, leader: "node1",
		snapshot: bytes.Repeat([]byte("snapshot "), 1000)} // 9000 bytes: 10 chunks
	var lns []net.Listener
	for range c.ids {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		c.addrs = append(c.addrs, ln.Addr().String())
	}
	for i, id := range c.ids {
		s := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.pki.ServerTLS())))
		pb.RegisterClusterServiceServer(s, &fakeMember{c: c, id: id})
		go func() { _ = s.Serve(lns[i]) }()
		t.Cleanup(s.Stop)
		c.servers = append(c.servers, s)
	}
	return c
}

// flags reach the cluster through the brokers at the indexes given.
func (c *fakeCluster) flags(idx ...int) []string {
	var addrs []string
	for _, i := range idx {
		addrs = append(addrs, c.addrs[i])
	}
	return []string{"--addr", strings.Join(addrs, ","), "--ca", c.pki.CAFile, "--cert", c.pki.CertFile, "--tls-key", c.pki.KeyFile,
		"--timeout", "2s"}
}

func (c *fakeCluster) run(flags []string, args ...string) result {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	code := runWith(context.Background(), append(args, flags...), strings.NewReader(""), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

func (c *fakeCluster) ok(flags []string, args ...string) string {
	c.t.Helper()
	r := c.run(flags, args...)
	if r.code != 0 {
		c.t.Fatalf("hsmctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (c *fakeCluster) okJSON(v any, flags []string, args ...string) {
	c.t.Helper()
	out := c.ok(flags, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("hsmctl %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// GetClusterStatus: the answering member's own entry has its applied index
// (10, 20, 30 for node1..3); the others' entries have none.
func (m *fakeMember) GetClusterStatus(context.Context, *pb.GetClusterStatusRequest) (*pb.GetClusterStatusResponse, error) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &pb.GetClusterStatusResponse{LeaderId: c.leader, Term: 4, NodeId: m.id}
	if m.id == c.joining {
		return &pb.GetClusterStatusResponse{NodeId: m.id, NotServingReason: c.notServing[m.id]}, nil
	}
	resp.NotServingReason = c.notServing[m.id]
	for i, id := range c.ids {
		if contains(c.removed, id) {
			continue
		}
		role := pb.NodeRole_NODE_ROLE_FOLLOWER
		if id == c.leader {
			role = pb.NodeRole_NODE_ROLE_LEADER
		}
		n := &pb.NodeStatus{Id: id, GrpcAddress: c.addrs[i], RaftAddress: "127.0.0.1:1" + id[4:], Role: role, Healthy: true,
			Partition: &pb.PartitionInfo{HsmModel: "SoftHSM v2", Serial: "serial-" + id, TokenLabel: id, LibraryPath: "/lib/softhsm.so",
				Mechanisms: []string{"CKM_AES_GCM", "CKM_AES_KEY_WRAP_PAD"}, DomainKeyPresent: true, Health: "ok",
				LastSeen: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}}
		if id == c.hsmDown {
			n.Healthy, n.Partition.DomainKeyPresent = false, false
			n.Partition.Health = "unavailable: hsm: partition unavailable: C_OpenSession: CKR_DEVICE_REMOVED"
		}
		if id == m.id {
			n.AppliedIndex, n.CommitIndex = uint64(10*(i+1)), uint64(10*(i+1))
			n.LastContact = durationpb.New(25 * time.Millisecond)
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	return resp, nil
}

func (m *fakeMember) CreateJoinToken(_ context.Context, req *pb.CreateJoinTokenRequest) (*pb.CreateJoinTokenResponse, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	ttl := req.GetTtl().AsDuration()
	m.c.tokenTTL, m.c.tokenNode, m.c.tokenAnyNode = ttl, req.GetNodeId(), req.GetAnyNode()
	if ttl == 0 {
		ttl = 15 * time.Minute
	}
	if ttl < time.Minute || ttl > 24*time.Hour {
		return nil, clienttest.Error(codes.InvalidArgument, "ValidationException", "invalid Ttl: must be 0 (15 minutes) or from 1m to 24h, got %s", ttl)
	}
	switch {
	case req.GetNodeId() == "" && !req.GetAnyNode():
		return nil, clienttest.Error(codes.InvalidArgument, "ValidationException",
			"NodeId or AnyNode is required: a token bound to the joining node's id (NodeId) admits only that node; AnyNode=true admits any id")
	case req.GetNodeId() != "" && req.GetAnyNode():
		return nil, clienttest.Error(codes.InvalidArgument, "ValidationException",
			"give NodeId or AnyNode, not both: a token bound to NodeId admits only that node; AnyNode=true admits any id")
	}
	token := fmt.Sprintf("tok-secret-%d", 123+m.c.tokenCount)
	m.c.tokenCount++
	h := sha256.Sum256([]byte(token))
	now := time.Now()
	info := &pb.JoinTokenInfo{TokenId: hex.EncodeToString(h[:8]), CreateTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(ttl)),
		NodeId: req.GetNodeId()}
	if m.c.tokens == nil {
		m.c.tokens = map[string]*pb.JoinTokenInfo{}
	}
	m.c.tokens[info.GetTokenId()] = info
	return &pb.CreateJoinTokenResponse{Token: token, ExpireTime: info.GetExpireTime(), TokenId: info.GetTokenId()}, nil
}

// ListJoinTokens lists the tokens made and not revoked, by expiry, then
// id, as the broker does (none expires while a test runs).
func (m *fakeMember) ListJoinTokens(context.Context, *pb.ListJoinTokensRequest) (*pb.ListJoinTokensResponse, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	resp := &pb.ListJoinTokensResponse{}
	for _, info := range m.c.tokens {
		resp.JoinTokens = append(resp.JoinTokens, info)
	}
	slices.SortFunc(resp.JoinTokens, func(a, b *pb.JoinTokenInfo) int {
		if c := a.GetExpireTime().AsTime().Compare(b.GetExpireTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetTokenId(), b.GetTokenId())
	})
	return resp, nil
}

// RevokeJoinToken refuses and forgets as the broker does.
func (m *fakeMember) RevokeJoinToken(_ context.Context, req *pb.RevokeJoinTokenRequest) (*pb.RevokeJoinTokenResponse, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	id := req.GetTokenId()
	switch {
	case strings.HasPrefix(id, "hsmbj_"):
		return nil, clienttest.Error(codes.InvalidArgument, "ValidationException",
			"invalid TokenId: this is a join token, not its id; a token is revoked by the 16-hex-digit id 'hsmctl cluster join-tokens' lists")
	case !tokenIDPattern.MatchString(id):
		return nil, clienttest.Error(codes.InvalidArgument, "ValidationException",
			"invalid TokenId: a join token id is 16 lowercase hex digits, as 'hsmctl cluster join-tokens' lists it; got %d characters", len(id))
	case m.c.tokens[id] == nil:
		return nil, clienttest.Error(codes.NotFound, "NotFoundException", "outstanding join token %s does not exist", id)
	}
	delete(m.c.tokens, id)
	return &pb.RevokeJoinTokenResponse{}, nil
}

// tokenIDPattern is the broker's rule for join token ids.
var tokenIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

func (m *fakeMember) RemoveNode(_ context.Context, req *pb.RemoveNodeRequest) (*pb.RemoveNodeResponse, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	id := req.GetNodeId()
	switch {
	case !nodeIDPattern.MatchString(id):
		return nil, badNodeID(id)
	case id == m.c.leader && len(m.c.ids) == len(m.c.removed)+1:
		return nil, clienttest.Error(codes.FailedPrecondition, "KMSInvalidStateException", "node %s is the cluster's last voter and cannot be removed: a cluster cannot remove its last member; to retire the cluster, stop the node", id)
	case id == m.c.leader:
		return nil, clienttest.Error(codes.FailedPrecondition, "KMSInvalidStateException", "node %s is the leader and cannot remove itself; transfer leadership first", id)
	case !contains(m.c.ids, id) || contains(m.c.removed, id):
		return nil, clienttest.Error(codes.NotFound, "NotFoundException", "node %s is not a member", id)
	}
	m.c.removed = append(m.c.removed, req.GetNodeId())
	return &pb.RemoveNodeResponse{}, nil
}

// badNodeID is the broker's refusal of a NodeId no node can have.
func badNodeID(id string) error {
	return clienttest.Error(codes.InvalidArgument, "ValidationException",
		"invalid NodeId %.64q: a node id is 1 to 63 of [a-zA-Z0-9._-], starting with a letter or digit", id)
}

func (m *fakeMember) TransferLeadership(_ context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	switch to := req.GetNodeId(); {
	case to == "":
		m.c.leader = "node3"
	case !nodeIDPattern.MatchString(to):
		return nil, badNodeID(to)
	case to == m.c.leader:
		return nil, clienttest.Error(codes.FailedPrecondition, "KMSInvalidStateException", "node %s is already the leader", to)
	case contains(m.c.ids, to):
		m.c.leader = to
	default:
		return nil, clienttest.Error(codes.NotFound, "NotFoundException", "node %q does not exist", to)
	}
	return &pb.TransferLeadershipResponse{LeaderId: m.c.leader}, nil
}

// Backup streams the snapshot in 1000-byte chunks, then the totals, with
// the fault backupFault names, if any.
func (m *fakeMember) Backup(_ *pb.BackupRequest, stream pb.ClusterService_BackupServer) error {
	m.c.mu.Lock()
	snapshot, fault := m.c.snapshot, m.c.backupFault
	m.c.mu.Unlock()
	for i := 0; i < len(snapshot); i += 1000 {
		chunk := snapshot[i:min(i+1000, len(snapshot))]
		if fault == "flipped byte" && i == 0 {
			chunk = append([]byte{chunk[0] ^ 1}, chunk[1:]...)
		}
		if fault == "broken stream" && i >= len(snapshot)/2 {
			return status.Error(codes.Unavailable, "connection lost")
		}
		if err := stream.Send(&pb.BackupResponse{Chunk: chunk}); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(snapshot)
	last := &pb.BackupResponse{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(snapshot)), Index: 42, Term: 4,
		Authenticator: clienttest.BackupAuthenticator(sum[:])}
	switch fault {
	case "no authenticator":
		last.Authenticator = nil
	case "no trailer":
		return nil
	case "bad sum":
		sum[0] ^= 1
		last.Sha256 = hex.EncodeToString(sum[:])
	case "bad size":
		last.Size++
	}
	return stream.Send(last)
}

// VerifyBackup answers as the clienttest fake does, from its stand-in
// authenticators.
func (m *fakeMember) VerifyBackup(ctx context.Context, req *pb.VerifyBackupRequest) (*pb.VerifyBackupResponse, error) {
	resp, err := clienttest.NewFake().VerifyBackup(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.NodeId = m.id
	return resp, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type statusJSON struct {
	Leader     string `json:"leader"`
	Term       uint64 `json:"term"`
	AnsweredBy string `json:"answeredBy"`
	Nodes      []struct {
		ID           string `json:"id"`
		GRPCAddress  string `json:"grpcAddress"`
		Role         string `json:"role"`
		Healthy      bool   `json:"healthy"`
		Reachable    *bool  `json:"reachable"`
		Error        string `json:"error"`
		NotServing   string `json:"notServing"`
		AppliedIndex uint64 `json:"appliedIndex"`
		LastContact  string `json:"lastContact"`
		Partition    struct {
			HSMModel   string   `json:"hsmModel"`
			Serial     string   `json:"serial"`
			TokenLabel string   `json:"tokenLabel"`
			Library    string   `json:"library"`
			Mechanisms []string `json:"mechanisms"`
			Health     string   `json:"health"`
		} `json:"partition"`
	} `json:"nodes"`
}

func TestClusterStatus(t *testing.T) {
	c := newFakeCluster(t)

	var st statusJSON
	c.okJSON(&st, c.flags(0), "cluster", "status")
	if st.Leader != "node1" || st.Term != 4 || st.AnsweredBy != "node1" || len(st.Nodes) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for i, n := range st.Nodes {
		// Every member was asked for its own entry.
		// The leader's own last contact, with a leader before it led, is
		// left out.
		wantContact := map[bool]string{true: "", false: "25ms"}[i == 0]
		if n.ID != c.ids[i] || !n.Healthy || n.Reachable == nil || !*n.Reachable || n.AppliedIndex != uint64(10*(i+1)) || n.LastContact != wantContact {
			t.Errorf("node %d: %+v", i, n)
		}
		if want := map[bool]string{true: "leader", false: "follower"}[i == 0]; n.Role != want {
			t.Errorf("node %s role %q, want %q", n.ID, n.Role, want)
		}
		p := n.Partition
		if p.HSMModel != "SoftHSM v2" || p.Serial != "serial-"+n.ID || p.TokenLabel != n.ID || p.Library == "" || len(p.Mechanisms) != 2 || p.Health != "ok" {
			t.Errorf("node %s partition: %+v", n.ID, p)
		}
	}
	out := c.ok(c.flags(0), "cluster", "status")
	for _, want := range []string{"Leader node1, term 4 (answered by node1)", "NODE", "RAFT ADDRESS", "APPLIED", "LAST CONTACT",
		"HSM MODEL", "serial-node2", "/lib/softhsm.so", "MECHANISMS", "present"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}

	// A member whose HSM cannot be asked: whether it holds the domain key
	// is unknown, not missing.
	c.mu.Lock()
	c.hsmDown = "node2"
	c.mu.Unlock()
	out = c.ok(c.flags(0), "cluster", "status")
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 6 && strings.HasPrefix(f[1], "SoftHSM") {
			rows++
			if want := map[bool]string{true: "unknown", false: "present"}[f[0] == "node2"]; !strings.Contains(line, " "+want+" ") {
				t.Errorf("domain key of %s is not %q: %q", f[0], want, line)
			}
		}
	}
	if rows != 3 || strings.Contains(out, "missing") {
		t.Errorf("a member whose HSM cannot be asked shows its domain key missing:\n%s", out)
	}
	c.mu.Lock()
	c.hsmDown = ""
	c.mu.Unlock()

	// A member that does not serve says why, asked directly.
	c.mu.Lock()
	c.notServing = map[string]string{"node2": "checking the audit log against the cluster's checkpoints"}
	c.mu.Unlock()
	st = statusJSON{}
	c.okJSON(&st, c.flags(0), "cluster", "status")
	if st.Nodes[1].NotServing != "checking the audit log against the cluster's checkpoints" || st.Nodes[0].NotServing != "" {
		t.Errorf("notServing: %+v", st.Nodes)
	}
	if out := c.ok(c.flags(0), "cluster", "status"); !strings.Contains(out, "\nnode2 is not serving: checking the audit log against the cluster's checkpoints\n") {
		t.Errorf("text output does not say why node2 does not serve:\n%s", out)
	}
	c.mu.Lock()
	c.notServing = nil
	c.mu.Unlock()

	// A member that is gone: its replicated record still says healthy, the
	// probe says otherwise.
	c.servers[2].Stop()
	st = statusJSON{}
	c.okJSON(&st, c.flags(0), "cluster", "status")
	if n := st.Nodes[2]; n.Healthy || n.Reachable == nil || *n.Reachable || n.Error == "" || n.Role != "follower" {
		t.Errorf("stopped node3: %+v", n)
	}
	if !st.Nodes[1].Healthy || st.Nodes[1].AppliedIndex != 20 {
		t.Errorf("node2: %+v", st.Nodes[1])
	}
	if out := c.ok(c.flags(0), "cluster", "status"); !strings.Contains(out, "false (unreachable)") || !strings.Contains(out, "node3: ") {
		t.Errorf("text output does not show node3 unreachable:\n%s", out)
	}

	// --probe=false: the answering broker's view alone.
	st = statusJSON{}
	c.okJSON(&st, c.flags(1), "cluster", "status", "--probe=false")
	if st.AnsweredBy != "node2" || !st.Nodes[2].Healthy || st.Nodes[2].Reachable != nil || st.Nodes[0].AppliedIndex != 0 || st.Nodes[1].AppliedIndex != 20 {
		t.Errorf("--probe=false: %+v", st)
	}
}

func TestClusterStatusFake(t *testing.T) {
	e := newEnv(t)
	var st statusJSON
	e.okJSON(&st, "cluster", "status")
	if st.Leader != "fake-1" || len(st.Nodes) != 1 || st.Nodes[0].Role != "leader" || !st.Nodes[0].Healthy {
		t.Errorf("cluster status: %+v", st)
	}
	if out := e.ok("cluster", "status"); !strings.HasPrefix(out, "Leader fake-1, term 1 (answered by fake-1)\nNODE") {
		t.Errorf("text:\n%s", out)
	}
}

// idOf is the id of a join token, as the broker makes it.
func idOf(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:8])
}

func TestClusterJoinToken(t *testing.T) {
	c := newFakeCluster(t)
	// Standard output is the token alone; its id goes to standard error.
	if r := c.run(c.flags(1), "cluster", "join-token", "--any-node"); r.code != 0 || r.stdout != "tok-secret-123\n" ||
		!strings.Contains(r.stderr, "Join token "+idOf("tok-secret-123")+", valid until ") || strings.Contains(r.stderr, "tok-secret") {
		t.Errorf("join-token: %+v", r)
	}
	if c.tokenTTL != 15*time.Minute || c.tokenNode != "" || !c.tokenAnyNode {
		t.Errorf("default TTL %v, want 15m; node %q, want none; AnyNode %v, want true", c.tokenTTL, c.tokenNode, c.tokenAnyNode)
	}
	c.ok(c.flags(1), "cluster", "join-token", "--node-id", "node4")
	if c.tokenNode != "node4" || c.tokenAnyNode {
		t.Errorf("join-token --node-id node4 asked for a token for %q, AnyNode %v", c.tokenNode, c.tokenAnyNode)
	}
	// A token for any node is asked for by name; neither flag, or both,
	// is refused before the cluster is asked.
	made := c.tokenCount
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "name the node that will use the token with --node-id ID"},
		{[]string{"--node-id", "node4", "--any-node"}, "give --node-id or --any-node, not both"},
	} {
		r := c.run(c.flags(1), append([]string{"cluster", "join-token"}, tt.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || r.stdout != "" {
			t.Errorf("join-token %q: %+v, want usage error %q", tt.args, r, tt.want)
		}
	}
	if c.tokenCount != made {
		t.Errorf("a refused join-token made %d tokens", c.tokenCount-made)
	}
	var j struct{ Token, TokenID, ExpireTime, File string }
	c.okJSON(&j, c.flags(1), "cluster", "join-token", "--any-node", "--ttl", "1h")
	exp, err := time.Parse(time.RFC3339, j.ExpireTime)
	if d := time.Until(exp); j.Token != "tok-secret-125" || j.TokenID != idOf(j.Token) || err != nil || d < 59*time.Minute || d > time.Hour || c.tokenTTL != time.Hour {
		t.Errorf("join-token -o json: %+v, TTL %v", j, c.tokenTTL)
	}

	file := filepath.Join(t.TempDir(), "join.token")
	out := c.ok(c.flags(1), "cluster", "join-token", "--any-node", "--out", file)
	if strings.Contains(out, "tok-secret") {
		t.Errorf("--out printed the token:\n%s", out)
	}
	for _, want := range []string{"Join token " + idOf("tok-secret-126") + " written to " + file, "join: [" + strings.Join(c.addrs, ", ") + "]", "join_token_file: " + file} {
		if !strings.Contains(out, want) {
			t.Errorf("--out output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "tok-secret-126\n" {
		t.Errorf("token file: %q, %v", b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode: %v %v", fi.Mode(), err)
	}
	j = struct{ Token, TokenID, ExpireTime, File string }{}
	if r := c.run(c.flags(1), "cluster", "join-token", "--any-node", "--out", file); r.code != exitError || !strings.Contains(r.stderr, "exists; use --force") {
		t.Errorf("join-token over an existing --out: %+v", r)
	}
	c.okJSON(&j, c.flags(1), "cluster", "join-token", "--any-node", "--out", file, "--force")
	if j.Token != "" || j.File != file || j.TokenID != idOf("tok-secret-127") {
		t.Errorf("join-token --out -o json: %+v", j)
	}
	// A relative --out: the configuration line still names the file
	// absolutely, since the node reads it from elsewhere.
	t.Chdir(t.TempDir())
	out = c.ok(c.flags(1), "cluster", "join-token", "--any-node", "--out", "rel.token")
	if abs, err := filepath.Abs("rel.token"); err != nil || !strings.Contains(out, "join_token_file: "+abs+"\n") {
		t.Errorf("join-token --out rel.token, output:\n%s", out)
	}

	for _, ttl := range []string{"0s", "30s", "59s", "25h", "-1m"} {
		if r := c.run(c.flags(1), "cluster", "join-token", "--any-node", "--ttl", ttl); r.code != exitUsage || !strings.Contains(r.stderr, "invalid --ttl ") || !strings.Contains(r.stderr, ": want 1m to 24h") {
			t.Errorf("--ttl %s: %+v", ttl, r)
		}
	}
	c.ok(c.flags(1), "cluster", "join-token", "--any-node", "--ttl", "1m")
	if c.tokenTTL != time.Minute {
		t.Errorf("--ttl 1m asked for %v", c.tokenTTL)
	}
}

// TestClusterJoinTokensListAndRevoke: join-tokens lists the tokens by id,
// bound node, making and expiry time, in a table and in JSON, never the
// tokens; revoke-join-token withdraws one, which the list then lacks; an
// unknown id fails with the broker's NotFound, and a token given for its
// id is refused before anything is sent, without being repeated.
func TestClusterJoinTokensListAndRevoke(t *testing.T) {
	c := newFakeCluster(t)
	if out := c.ok(c.flags(0), "cluster", "join-tokens"); out != "ID  NODE  CREATED  EXPIRES\n" {
		t.Errorf("join-tokens with none:\n%s", out)
	}
	c.ok(c.flags(0), "cluster", "join-token", "--node-id", "node4", "--ttl", "2h") // tok-secret-123
	c.ok(c.flags(1), "cluster", "join-token", "--any-node")                        // tok-secret-124
	bound, free := idOf("tok-secret-123"), idOf("tok-secret-124")

	out := c.ok(c.flags(2), "cluster", "join-tokens")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.HasPrefix(lines[1], free+"  -  ") || !strings.HasPrefix(lines[2], bound+"  node4  ") ||
		strings.Contains(out, "tok-secret") {
		t.Errorf("join-tokens:\n%s", out)
	}
	var j struct {
		JoinTokens []struct{ TokenID, NodeID, CreateTime, ExpireTime string }
	}
	c.okJSON(&j, c.flags(2), "cluster", "join-tokens")
	if len(j.JoinTokens) != 2 || j.JoinTokens[1].TokenID != bound || j.JoinTokens[1].NodeID != "node4" || j.JoinTokens[0].TokenID != free ||
		j.JoinTokens[0].NodeID != "" || j.JoinTokens[1].CreateTime == "" || j.JoinTokens[1].ExpireTime <= j.JoinTokens[0].ExpireTime {
		t.Errorf("join-tokens -o json: %+v", j)
	}

	if out := c.ok(c.flags(1), "cluster", "revoke-join-token", bound); out != "Revoked join token "+bound+": a join with it is refused.\n" {
		t.Errorf("revoke-join-token printed %q", out)
	}
	if out := c.ok(c.flags(0), "cluster", "join-tokens"); strings.Contains(out, bound) || !strings.Contains(out, free) {
		t.Errorf("join-tokens after the revocation:\n%s", out)
	}
	var rv struct{ Revoked string }
	c.okJSON(&rv, c.flags(0), "cluster", "revoke-join-token", free)
	if rv.Revoked != free {
		t.Errorf("revoke-join-token -o json: %+v", rv)
	}
	if r := c.run(c.flags(0), "cluster", "revoke-join-token", free); r.code != exitError ||
		!strings.Contains(r.stderr, "outstanding join token "+free+" does not exist") {
		t.Errorf("revoking a revoked token: %+v", r)
	}
	if r := c.run(c.flags(0), "cluster", "revoke-join-token", "ABC"); r.code != exitError || !strings.Contains(r.stderr, "invalid TokenId") {
		t.Errorf("revoking a malformed id: %+v", r)
	}
	const token = "hsmbj_c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1ub3QtYmUtZWNob2Vk"
	if r := c.run(c.flags(0), "cluster", "revoke-join-token", token); r.code != exitUsage || !strings.Contains(r.stderr, "is a join token, not its id") ||
		strings.Contains(r.stderr+r.stdout, token) {
		t.Errorf("revoking by the token itself: %+v", r)
	}
	for _, args := range [][]string{{"revoke-join-token"}, {"revoke-join-token", "a", "b"}, {"join-tokens", "x"}} {
		if r := c.run(c.flags(0), append([]string{"cluster"}, args...)...); r.code != exitUsage {
			t.Errorf("cluster %v: %+v", args, r)
		}
	}
}

func TestClusterRemoveAndTransfer(t *testing.T) {
	c := newFakeCluster(t)
	var rm struct{ Removed string }
	c.okJSON(&rm, c.flags(1), "cluster", "remove", "node3")
	if rm.Removed != "node3" || !contains(c.removed, "node3") {
		t.Errorf("remove: %+v, removed %v", rm, c.removed)
	}
	// node3, asked directly, is not in the membership it reports: status
	// says so rather than pass its view off as the cluster's. What the
	// node says of itself (not_serving_reason) replaces the guess; a node
	// that has just asked to join (no configuration) is not called
	// removed.
	for _, tc := range []struct {
		joining, notServing, want string
		maySayRemoved             bool
	}{
		{"", "", "Node node3 is not in the cluster configuration it has applied: it is catching up after a join, or it was removed", true},
		{"node3", "", "Node node3 knows no members yet: it is joining", false},
		{"node3", "catching up with the cluster after joining it",
			"Node node3 knows no members yet: it is joining, or holds no cluster state; it is not serving: catching up with the cluster after joining it;", false},
		{"", "catching up with the cluster after joining it",
			"Node node3 is not in the cluster configuration it has applied and is not serving: catching up with the cluster after joining it.", false},
	} {
		c.mu.Lock()
		c.joining, c.notServing = tc.joining, map[string]string{"node3": tc.notServing}
		c.mu.Unlock()
		if out := c.ok(c.flags(2), "cluster", "status", "--probe=false"); !strings.Contains(out, tc.want) || !tc.maySayRemoved && strings.Contains(out, "removed") {
			t.Errorf("status from node3 (joining %q, not serving %q):\n%s", tc.joining, tc.notServing, out)
		}
	}
	c.mu.Lock()
	c.joining, c.notServing = "", nil
	c.mu.Unlock()
	if r := c.run(c.flags(1), "cluster", "remove", "node1"); r.code != exitError || !strings.Contains(r.stderr, "node node1 is the leader and cannot remove itself") {
		t.Errorf("remove the leader: %+v", r)
	}
	if r := c.run(c.flags(1), "cluster", "remove"); r.code != exitUsage {
		t.Errorf("remove without NODE: %+v", r)
	}

	if out := c.ok(c.flags(0), "cluster", "transfer-leadership", "node2"); out != "Leader is now node2.\n" {
		t.Errorf("transfer-leadership node2: %q", out)
	}
	var tl struct{ Leader string }
	c.okJSON(&tl, c.flags(0), "cluster", "transfer-leadership")
	if tl.Leader != "node3" {
		t.Errorf("transfer-leadership: %+v", tl)
	}
	if r := c.run(c.flags(0), "cluster", "transfer-leadership", "a", "b"); r.code != exitUsage {
		t.Errorf("two nodes: %+v", r)
	}

	// The last voter: no transfer helps, so the refusal says so.
	c = newFakeCluster(t)
	c.ok(c.flags(0), "cluster", "remove", "node3")
	c.ok(c.flags(0), "cluster", "remove", "node2")
	if r := c.run(c.flags(0), "cluster", "remove", "node1"); r.code != exitError ||
		!strings.Contains(r.stderr, "node node1 is the cluster's last voter and cannot be removed") || !strings.Contains(r.stderr, "stop the node") ||
		strings.Contains(r.stderr, "transfer leadership") {
		t.Errorf("remove the last voter: %+v", r)
	}
}

func TestClusterBackup(t *testing.T) {
	c := newFakeCluster(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.snap")
	var b struct {
		File              string
		Bytes             int
		Index             uint64
		Term              uint64
		SHA256            string
		AuthenticatorFile string `json:"authenticator_file"`
	}
	c.okJSON(&b, c.flags(2), "cluster", "backup", file)
	sum := sha256.Sum256(c.snapshot)
	want := hex.EncodeToString(sum[:])
	if b.File != file || b.Bytes != len(c.snapshot) || b.Index != 42 || b.Term != 4 || b.SHA256 != want || b.AuthenticatorFile != file+".auth" {
		t.Errorf("backup: %+v", b)
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, c.snapshot) {
		t.Fatalf("backup file differs from the snapshot (%v)", err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v", fi.Mode())
	}
	if got, _ := os.ReadFile(file + ".sha256"); string(got) != want+"  cluster.snap\n" {
		t.Errorf("checksum file: %q", got)
	}
	// The authenticator, beside it, as restore reads it.
	authFile, err := os.ReadFile(file + ".auth")
	if err != nil {
		t.Fatal(err)
	}
	if auth, err := client.ParseBackupAuth(authFile); err != nil || !bytes.Equal(auth, clienttest.BackupAuthenticator(sum[:])) ||
		!strings.HasSuffix(string(authFile), "  cluster.snap\n") {
		t.Errorf("authenticator file %q: %v", authFile, err)
	}
	if fi, _ := os.Stat(file + ".auth"); fi.Mode().Perm() != 0o600 {
		t.Errorf("authenticator file mode %v", fi.Mode())
	}

	if r := c.run(c.flags(2), "cluster", "backup", file); r.code != exitError || !strings.Contains(r.stderr, "--force") {
		t.Errorf("backup over an existing file: %+v", r)
	}
	if out := c.ok(c.flags(2), "cluster", "backup", file, "--force"); !strings.Contains(out, "Index:") || !strings.Contains(out, want) {
		t.Errorf("backup --force:\n%s", out)
	}

	// A stream that breaks, or whose bytes do not match its totals, leaves
	// nothing behind: neither the file nor its checksum nor a temporary file.
	for _, fault := range []string{"bad sum", "bad size", "no trailer", "flipped byte", "broken stream"} {
		c.mu.Lock()
		c.backupFault = fault
		c.mu.Unlock()
		other := filepath.Join(dir, "damaged.snap")
		r := c.run(c.flags(2), "cluster", "backup", other)
		want := "damaged"
		if fault == "broken stream" {
			want = "connection lost"
		}
		if r.code != exitError || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: %+v", fault, r)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 3 {
			t.Errorf("%s: a failed backup left files: %v", fault, entries)
		}
	}

	// A broker older than authenticators: the backup is written, with a
	// warning, and the earlier backup's authenticator under that name is
	// removed, since it would not match.
	c.mu.Lock()
	c.backupFault = "no authenticator"
	c.mu.Unlock()
	r := c.run(c.flags(2), "cluster", "backup", file, "--force", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stderr, "sent no authenticator") || !strings.Contains(r.stderr, "--unauthenticated") ||
		!strings.Contains(r.stdout, `"authenticator_file": ""`) {
		t.Errorf("backup from a broker without authenticators: %+v", r)
	}
	if _, err := os.Stat(file + ".auth"); !os.IsNotExist(err) {
		t.Errorf("the earlier authenticator is still beside the new backup: %v", err)
	}

	// verify-backup: the backup just written is authentic; a changed byte,
	// or another file's authenticator, is not (exit status 1, saying
	// restore would refuse it); a missing authenticator file is an error.
	if out := c.ok(c.flags(2), "cluster", "verify-backup", takeBackup(t, dir, "good.snap", c)); !strings.Contains(out, "Authentic:   true") {
		t.Errorf("verify-backup of an intact backup:\n%s", out)
	}
	var vb struct {
		File, SHA256, Node string
		Authentic          bool
	}
	good := filepath.Join(dir, "good.snap")
	c.okJSON(&vb, c.flags(2), "cluster", "verify-backup", good)
	if !vb.Authentic || vb.File != good || vb.SHA256 != want || vb.Node == "" {
		t.Errorf("verify-backup -o json: %+v", vb)
	}
	data, _ := os.ReadFile(good)
	data[0] ^= 1
	if err := os.WriteFile(good, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.run(c.flags(2), "cluster", "verify-backup", good); r.code != exitError || !strings.Contains(r.stdout, "Authentic:   false") ||
		!strings.Contains(r.stderr, "does not match its authenticator") || !strings.Contains(r.stderr, "restore would refuse it") {
		t.Errorf("verify-backup of a changed backup: %+v", r)
	}
	if r := c.run(c.flags(2), "cluster", "verify-backup", good, "--auth", file+".sha256"); r.code != exitError || !strings.Contains(r.stderr, "not an hsmbroker backup authenticator file") {
		t.Errorf("verify-backup with a checksum file as authenticator: %+v", r)
	}
	if r := c.run(c.flags(2), "cluster", "verify-backup", filepath.Join(dir, "none.snap")); r.code != exitError || !strings.Contains(r.stderr, "none.snap.auth") {
		t.Errorf("verify-backup without an authenticator file: %+v", r)
	}

	// A member that is down before the stream starts is passed over.
	c.mu.Lock()
	c.backupFault = ""
	c.mu.Unlock()
	c.servers[2].Stop()
	moved := filepath.Join(dir, "moved.snap")
	c.okJSON(&b, c.flags(2, 0), "cluster", "backup", moved)
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, c.snapshot) || b.SHA256 != want {
		t.Fatalf("backup through the second endpoint: %+v (%v)", b, err)
	}
}

// takeBackup takes a backup of c, with no fault, into dir/name (with its
// .sha256 and .auth) and returns its path.
func takeBackup(t *testing.T, dir, name string, c *fakeCluster) string {
	t.Helper()
	c.mu.Lock()
	c.backupFault = ""
	c.mu.Unlock()
	path := filepath.Join(dir, name)
	c.ok(c.flags(2), "cluster", "backup", path)
	return path
}

// transfer-leadership on a one-node cluster: a refusal that says why, as
// FailedPrecondition, not an internal error; the node keeps leading.
func TestTransferLeadershipOnASingleNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	c := hsmtest.NewCluster(t, 1)
	conn := connFlags(c, "ops", authz.RoleAdmin)
	id := c.Nodes[0].ID
	tests := []struct {
		name      string
		args      []string
		want, exc string
	}{
		{"to any voter", nil, "no other voter to hand leadership to", "KMSInvalidStateException"},
		{"to the leader", []string{id}, "node " + id + " is already the leader", "KMSInvalidStateException"},
		{"to an unknown node", []string{"no-such-node"}, `node "no-such-node" does not exist`, "NotFoundException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runArgs(append(append([]string{"cluster", "transfer-leadership"}, tt.args...), conn...)...)
			if r.code != exitError || !strings.Contains(r.stderr, tt.want) || !strings.HasSuffix(r.stderr, "("+tt.exc+")\n") {
				t.Fatalf("exit %d, stderr %q; want exit %d, %q and %s", r.code, r.stderr, exitError, tt.want, tt.exc)
			}
			if !c.Nodes[0].Raft.IsLeader() {
				t.Fatal("the node stopped leading")
			}
		})
	}
}
