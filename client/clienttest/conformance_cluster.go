package clienttest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestClusterService is the conformance suite of the ClusterService calls
// hsmctl's cluster commands make: status, backup, join tokens (made,
// listed and revoked), and the refusals of RemoveNode and
// TransferLeadership. It changes no membership, so it runs against a real
// cluster as well as a fake one. conn must reach the cluster as an admin.
func TestClusterService(t *testing.T, conn grpc.ClientConnInterface) {
	cl := pb.NewClusterServiceClient(conn)
	t.Run("Status", func(t *testing.T) { checkClusterStatus(t, cl) })
	t.Run("Backup", func(t *testing.T) { checkBackup(t, cl) })
	t.Run("JoinToken", func(t *testing.T) { checkJoinToken(t, cl) })
	t.Run("Refusals", func(t *testing.T) { checkMembershipRefusals(t, cl) })
}

func checkClusterStatus(t *testing.T, cl pb.ClusterServiceClient) *pb.GetClusterStatusResponse {
	st, err := cl.GetClusterStatus(ctxOf(t), &pb.GetClusterStatusRequest{})
	must(t, "GetClusterStatus", err)
	leaders, self := 0, false
	for _, n := range st.GetNodes() {
		if n.GetRole() == pb.NodeRole_NODE_ROLE_LEADER {
			leaders++
			if n.GetId() != st.GetLeaderId() || !n.GetHealthy() {
				t.Errorf("leader entry %v, leader id %q", n, st.GetLeaderId())
			}
		}
		self = self || n.GetId() == st.GetNodeId()
		if n.GetId() == "" || n.GetGrpcAddress() == "" || n.GetRaftAddress() == "" || n.GetPartition() == nil {
			t.Errorf("node entry lacks fields: %v", n)
		}
	}
	if leaders != 1 || !self || st.GetTerm() == 0 {
		t.Errorf("GetClusterStatus: %d leaders, answering node listed %v: %v", leaders, self, st)
	}
	return st
}

func checkBackup(t *testing.T, cl pb.ClusterServiceClient) {
	stream, err := cl.Backup(ctxOf(t), &pb.BackupRequest{})
	must(t, "Backup", err)
	var snap []byte
	var last *pb.BackupResponse
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, "Backup stream", err)
		if last != nil {
			t.Fatal("Backup sent a message after its summary")
		}
		if msg.GetSha256() != "" {
			last = msg
			continue
		}
		snap = append(snap, msg.GetChunk()...)
	}
	sum := sha256.Sum256(snap)
	if last == nil || last.GetSha256() != hex.EncodeToString(sum[:]) || last.GetSize() != uint64(len(snap)) || len(snap) == 0 ||
		last.GetIndex() == 0 || last.GetTerm() == 0 || len(last.GetAuthenticator()) != 40 {
		t.Fatalf("Backup: %d bytes, summary %v", len(snap), last)
	}
	checkVerifyBackup(t, cl, last.GetSha256(), last.GetAuthenticator())
}

// checkVerifyBackup: the authenticator of a backup just taken is authentic
// for its SHA-256, not for another or when changed; malformed input is
// InvalidArgument.
func checkVerifyBackup(t *testing.T, cl pb.ClusterServiceClient, sum string, auth []byte) {
	ctx := ctxOf(t)
	other := sha256.Sum256([]byte("another backup"))
	changed := append([]byte(nil), auth...)
	changed[len(changed)-1] ^= 1
	for _, tt := range []struct {
		what string
		sum  string
		auth []byte
		want bool
	}{
		{"the backup's own", sum, auth, true},
		{"another backup's SHA-256", hex.EncodeToString(other[:]), auth, false},
		{"a changed authenticator", sum, changed, false},
	} {
		resp, err := cl.VerifyBackup(ctx, &pb.VerifyBackupRequest{Sha256: tt.sum, Authenticator: tt.auth})
		if err != nil || resp.GetAuthentic() != tt.want || resp.GetNodeId() == "" {
			t.Errorf("VerifyBackup, %s: %v, %v; want authentic %v", tt.what, resp, err, tt.want)
		}
	}
	for _, tt := range []struct {
		what string
		req  *pb.VerifyBackupRequest
	}{
		{"no SHA-256", &pb.VerifyBackupRequest{Authenticator: auth}},
		{"a short SHA-256", &pb.VerifyBackupRequest{Sha256: sum[:62], Authenticator: auth}},
		{"a SHA-256 not in hex", &pb.VerifyBackupRequest{Sha256: "zz" + sum[2:], Authenticator: auth}},
		{"no authenticator", &pb.VerifyBackupRequest{Sha256: sum}},
		{"a long authenticator", &pb.VerifyBackupRequest{Sha256: sum, Authenticator: append(auth, 0)}},
	} {
		if _, err := cl.VerifyBackup(ctx, tt.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("VerifyBackup with %s: %v, want InvalidArgument", tt.what, err)
		}
	}
}

// checkJoinToken: a TTL unset or zero is 15 minutes, one out of 1m to
// 24h is InvalidArgument; a request that names neither the node the token
// admits (NodeId) nor AnyNode, or names both, is InvalidArgument and makes
// no token.
func checkJoinToken(t *testing.T, cl pb.ClusterServiceClient) {
	ctx := ctxOf(t)
	for _, tt := range []struct {
		ttl  *durationpb.Duration
		want time.Duration
	}{{nil, 15 * time.Minute}, {durationpb.New(0), 15 * time.Minute}, {durationpb.New(time.Hour), time.Hour}, {durationpb.New(24 * time.Hour), 24 * time.Hour}} {
		before := time.Now()
		tok, err := cl.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{Ttl: tt.ttl, AnyNode: true})
		must(t, "CreateJoinToken", err)
		if d := tok.GetExpireTime().AsTime().Sub(before); tok.GetToken() == "" || d < tt.want-time.Minute || d > tt.want+time.Minute {
			t.Errorf("CreateJoinToken ttl %v: token %d bytes, expires in %v; want %v", tt.ttl.AsDuration(), len(tok.GetToken()), d, tt.want)
		}
	}
	for _, ttl := range []time.Duration{-time.Minute, time.Nanosecond, 30 * time.Second, 25 * time.Hour} {
		_, err := cl.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{Ttl: durationpb.New(ttl), NodeId: "node-conformance"})
		wantErr(t, "CreateJoinToken ttl "+ttl.String(), err, codes.InvalidArgument, "ValidationException",
			"invalid Ttl: must be 0 (15 minutes) or from 1m to 24h, got "+ttl.String())
	}
	listed := func() int {
		t.Helper()
		resp, err := cl.ListJoinTokens(ctx, &pb.ListJoinTokensRequest{})
		must(t, "ListJoinTokens", err)
		return len(resp.GetJoinTokens())
	}
	before := listed()
	for _, tt := range []struct {
		what string
		req  *pb.CreateJoinTokenRequest
		want string
	}{
		{"neither NodeId nor AnyNode", &pb.CreateJoinTokenRequest{Ttl: durationpb.New(time.Hour)},
			"NodeId or AnyNode is required: a token bound to the joining node's id (NodeId) admits only that node; AnyNode=true admits any id"},
		{"both NodeId and AnyNode", &pb.CreateJoinTokenRequest{NodeId: "node-conformance", AnyNode: true},
			"give NodeId or AnyNode, not both: a token bound to NodeId admits only that node; AnyNode=true admits any id"},
	} {
		_, err := cl.CreateJoinToken(ctx, tt.req)
		wantErr(t, "CreateJoinToken with "+tt.what, err, codes.InvalidArgument, "ValidationException", tt.want)
	}
	if after := listed(); after != before {
		t.Errorf("refused CreateJoinToken requests changed the tokens listed from %d to %d", before, after)
	}
	checkJoinTokenRevocation(t, cl)
}

// checkJoinTokenRevocation: a token's id is the first 8 bytes of its
// SHA-256 in hex; the listing shows it with its expiry and node; a revoked
// token is no longer listed, and revoking it again is NotFound; a
// malformed id, or the token given for its id, is InvalidArgument.
func checkJoinTokenRevocation(t *testing.T, cl pb.ClusterServiceClient) {
	ctx := ctxOf(t)
	tok, err := cl.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{Ttl: durationpb.New(time.Hour), NodeId: "node-conformance"})
	must(t, "CreateJoinToken", err)
	h := sha256.Sum256([]byte(tok.GetToken()))
	id := hex.EncodeToString(h[:8])
	if tok.GetTokenId() != id {
		t.Fatalf("CreateJoinToken: token id %q, want %s (the first 8 bytes of the token's SHA-256)", tok.GetTokenId(), id)
	}
	listed := func() *pb.JoinTokenInfo {
		t.Helper()
		resp, err := cl.ListJoinTokens(ctx, &pb.ListJoinTokensRequest{})
		must(t, "ListJoinTokens", err)
		for _, info := range resp.GetJoinTokens() {
			if info.GetTokenId() == id {
				return info
			}
		}
		return nil
	}
	info := listed()
	if info == nil || info.GetNodeId() != "node-conformance" || !info.GetExpireTime().AsTime().Equal(tok.GetExpireTime().AsTime()) ||
		info.GetCreateTime() == nil || !info.GetCreateTime().AsTime().Before(info.GetExpireTime().AsTime()) {
		t.Fatalf("ListJoinTokens shows the token made as %v; want id %s, node node-conformance, expiry %v and a making time",
			info, id, tok.GetExpireTime().AsTime())
	}
	_, err = cl.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: id})
	must(t, "RevokeJoinToken", err)
	if info := listed(); info != nil {
		t.Errorf("ListJoinTokens shows a revoked token: %v", info)
	}
	_, err = cl.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: id})
	wantErr(t, "RevokeJoinToken twice", err, codes.NotFound, "NotFoundException", "outstanding join token "+id+" does not exist")
	_, err = cl.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: "node4"})
	wantErr(t, "RevokeJoinToken malformed", err, codes.InvalidArgument, "ValidationException",
		"invalid TokenId: a join token id is 16 lowercase hex digits, as 'hsmctl cluster join-tokens' lists it; got 5 characters")
	// A join token (they start hsmbj_) given for its id.
	_, err = cl.RevokeJoinToken(ctx, &pb.RevokeJoinTokenRequest{TokenId: "hsmbj_" + strings.Repeat("A", 43)})
	wantErr(t, "RevokeJoinToken with a token", err, codes.InvalidArgument, "ValidationException",
		"invalid TokenId: this is a join token, not its id; a token is revoked by the 16-hex-digit id 'hsmctl cluster join-tokens' lists")
}

func checkMembershipRefusals(t *testing.T, cl pb.ClusterServiceClient) {
	ctx := ctxOf(t)
	st, err := cl.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	must(t, "GetClusterStatus", err)
	leader := st.GetLeaderId()
	_, err = cl.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: leader})
	if len(st.GetNodes()) == 1 {
		wantErr(t, "RemoveNode the last voter", err, codes.FailedPrecondition, "KMSInvalidStateException",
			"node "+leader+" is the cluster's last voter and cannot be removed: a cluster cannot remove its last member; to retire the cluster, stop the node")
	} else {
		wantErr(t, "RemoveNode the leader", err, codes.FailedPrecondition, "KMSInvalidStateException",
			"node "+leader+" is the leader and cannot remove itself; transfer leadership first")
	}
	_, err = cl.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: "no-such-node"})
	wantErr(t, "RemoveNode unknown", err, codes.NotFound, "NotFoundException", "node no-such-node is not a member")
	_, err = cl.RemoveNode(ctx, &pb.RemoveNodeRequest{NodeId: "bad id!"})
	wantErr(t, "RemoveNode malformed", err, codes.InvalidArgument, "ValidationException",
		`invalid NodeId "bad id!": a node id is 1 to 63 of [a-zA-Z0-9._-], starting with a letter or digit`)
	_, err = cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: "bad id!"})
	wantErr(t, "TransferLeadership malformed", err, codes.InvalidArgument, "ValidationException",
		`invalid NodeId "bad id!": a node id is 1 to 63 of [a-zA-Z0-9._-], starting with a letter or digit`)
	_, err = cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: "no-such-node"})
	wantErr(t, "TransferLeadership to an unknown node", err, codes.NotFound, "NotFoundException", `node "no-such-node" does not exist`)
	_, err = cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{NodeId: leader})
	wantErr(t, "TransferLeadership to the leader", err, codes.FailedPrecondition, "KMSInvalidStateException", "node "+leader+" is already the leader")
	if after := checkClusterStatus(t, cl); after.GetLeaderId() != leader || len(after.GetNodes()) != len(st.GetNodes()) {
		t.Errorf("refused calls changed the cluster: leader %s -> %s, %d -> %d nodes", leader, after.GetLeaderId(), len(st.GetNodes()), len(after.GetNodes()))
	}
}
