package broker

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Join tokens live 15 minutes unless asked otherwise, at most a day, and
// at least a minute: a token that expires before it can be carried to the
// new node and used is a mistake (a TTL given in the wrong unit), and
// the leader allows a member's clock to be two minutes off its own.
const (
	defaultJoinTokenTTL = 15 * time.Minute
	minJoinTokenTTL     = time.Minute
	maxJoinTokenTTL     = cluster.MaxJoinTokenTTL
)

var nodeIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// checkNodeID refuses a NodeId that no node can have, quoting at most 64
// bytes of it: the field is the caller's, of any length up to a message.
func checkNodeID(id string) error {
	if !nodeIDPattern.MatchString(id) {
		return errInvalidArg(ExcValidation, "invalid NodeId %.64q: a node id is 1 to 63 of [a-zA-Z0-9._-], starting with a letter or digit", id)
	}
	return nil
}

// CreateJoinToken makes a one-time token for one new node: the node of
// NodeId, or any node when AnyNode is set; exactly one of the two is
// required. Only a hash is replicated; the token itself is shown once, to
// the caller.
func (s *Service) CreateJoinToken(ctx context.Context, req *pb.CreateJoinTokenRequest) (*pb.CreateJoinTokenResponse, error) {
	ttl := defaultJoinTokenTTL
	if d := req.GetTtl(); d != nil {
		ttl = d.AsDuration()
		if ttl == 0 {
			ttl = defaultJoinTokenTTL
		}
	}
	if ttl < minJoinTokenTTL || ttl > maxJoinTokenTTL {
		return nil, errInvalidArg(ExcValidation, "invalid Ttl: must be 0 (15 minutes) or from 1m to 24h, got %s", ttl)
	}
	// Whom the token admits is always asked for: an empty NodeId is
	// what a caller that forgot it sends, and must not make a token any
	// node may use.
	switch id := req.GetNodeId(); {
	case id == "" && !req.GetAnyNode():
		return nil, errInvalidArg(ExcValidation, "NodeId or AnyNode is required: a token bound to the joining node's id (NodeId) admits only that node; AnyNode=true admits any id")
	case id != "" && req.GetAnyNode():
		return nil, errInvalidArg(ExcValidation, "give NodeId or AnyNode, not both: a token bound to NodeId admits only that node; AnyNode=true admits any id")
	case id != "":
		if err := checkNodeID(id); err != nil {
			return nil, err
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	token := joinTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := joinTokenHash(token)
	tokenID := cluster.JoinTokenID(hash)
	// The audit lines of the token's making, revocation and listing name
	// it alike; the node it admits is in its record.
	nameObject(ctx, "join-token:"+tokenID)
	now := s.now()
	expires := now.Add(ttl)
	if _, err := s.apply(ctx, &cluster.AddJoinToken{Hash: hash, Expires: expires, At: now, NodeID: req.GetNodeId()}); err != nil {
		return nil, err
	}
	return &pb.CreateJoinTokenResponse{Token: token, ExpireTime: timestamppb.New(expires), TokenId: tokenID}, nil
}

// joinTokenPrefix starts every join token, so that one given where its id
// is expected is recognised (and not repeated).
const joinTokenPrefix = "hsmbj_"

// ListJoinTokens lists the join tokens a join could still use, by id, from
// a state at least as new as every write acknowledged before the call.
func (s *Service) ListJoinTokens(ctx context.Context, _ *pb.ListJoinTokensRequest) (*pb.ListJoinTokensResponse, error) {
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	resp := &pb.ListJoinTokensResponse{}
	for _, t := range s.node.State().JoinTokens() {
		if !now.Before(t.Expires) {
			continue // kept until the next token is added, and useless
		}
		info := &pb.JoinTokenInfo{TokenId: t.ID(), ExpireTime: timestamppb.New(t.Expires), NodeId: t.NodeID}
		if !t.CreatedAt.IsZero() {
			info.CreateTime = timestamppb.New(t.CreatedAt)
		}
		resp.JoinTokens = append(resp.JoinTokens, info)
	}
	return resp, nil
}

// RevokeJoinToken forgets an unused join token before it expires: a join
// with it is then refused as one with a used token is.
func (s *Service) RevokeJoinToken(ctx context.Context, req *pb.RevokeJoinTokenRequest) (*pb.RevokeJoinTokenResponse, error) {
	id := req.GetTokenId()
	if !cluster.ValidJoinTokenID(id) {
		// The value is not repeated, here or in the audit line: it may be
		// the token itself.
		if strings.HasPrefix(id, joinTokenPrefix) {
			return nil, errInvalidArg(ExcValidation, "invalid TokenId: this is a join token, not its id; a token is revoked by the %d-hex-digit id 'hsmctl cluster join-tokens' lists", cluster.JoinTokenIDLen)
		}
		return nil, errInvalidArg(ExcValidation, "invalid TokenId: a join token id is %d lowercase hex digits, as 'hsmctl cluster join-tokens' lists it; got %d characters", cluster.JoinTokenIDLen, len(id))
	}
	nameObject(ctx, "join-token:"+id)
	if _, err := s.apply(ctx, &cluster.RevokeJoinToken{ID: id, At: s.now()}); err != nil {
		return nil, err
	}
	s.log.Info("join token revoked", "token_id", id)
	return &pb.RevokeJoinTokenResponse{}, nil
}

func joinTokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// JoinCluster admits a new node: it must present a node certificate from
// the cluster CA naming the node id it asks for, and an unused join token.
// The leader's HSM wraps the domain key to the joining HSM's transport key;
// the new node joins as a non-voter, and the leader makes it a voter once
// it has caught up (promotion.go). Bad requests change nothing: the node id,
// the caller, the addresses and the transport key are checked before the
// token is spent. Joins are taken one at a time, so that two of them
// cannot both pass the checks against the same id or Raft address.
func (s *Service) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.JoinClusterResponse, error) {
	if err := s.requireNode(ctx); err != nil {
		return nil, err
	}
	id := req.GetNodeId()
	if err := checkNodeID(id); err != nil {
		return nil, err
	}
	nameObject(ctx, "node:"+id)
	if c := peerCert(ctx); c != nil && c.Subject.CommonName != id {
		return nil, newError(codes.PermissionDenied, ExcAccessDenied, "the caller's node certificate names %q, not %q", c.Subject.CommonName, id)
	}
	if req.GetRaftAddress() == "" || req.GetGrpcAddress() == "" {
		return nil, errInvalidArg(ExcValidation, "invalid join request: RaftAddress and GrpcAddress are required")
	}
	if !s.node.IsLeader() {
		leader, _ := s.node.Leader()
		if leader == "" {
			return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is not the leader and knows none; join through another member", s.node.ID())
		}
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is not the leader; join through the leader %q", s.node.ID(), leader)
	}
	pub := req.GetTransportPublicKey()
	if len(pub) == 0 && !req.GetPartition().GetDomainKeyPresent() {
		return nil, errInvalidArg(ExcValidation, "invalid join request: a TransportPublicKey is required when the joining partition holds no domain key")
	}
	var transport *rsa.PublicKey
	if len(pub) > 0 {
		var err error
		if transport, err = hsm.ParseTransportPublicKey(pub); err != nil {
			return nil, errInvalidArg(ExcValidation, "invalid TransportPublicKey: %v", err)
		}
	}
	select {
	case s.joining <- struct{}{}:
		defer func() { <-s.joining }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	completing, err := s.joinCompletes(id, req)
	if err != nil {
		return nil, err
	}
	// Only a holder of a live token gets the leader to reach out to an
	// address; the token is spent below, once the address answered.
	tokenHash := joinTokenHash(req.GetJoinToken())
	if err := s.node.State().CheckJoinToken(tokenHash, id, s.now()); err != nil {
		return nil, s.refuseJoinToken(ctx)
	}
	if !completing {
		if err := s.probeRaftAddress(ctx, id, req.GetRaftAddress()); err != nil {
			return nil, err
		}
	}
	if _, err := s.apply(ctx, &cluster.ConsumeJoinToken{Hash: tokenHash, At: s.now(), NodeID: id}); err != nil {
		if errors.Is(err, cluster.ErrNotFound) || errors.Is(err, cluster.ErrInvalidState) {
			return nil, s.refuseJoinToken(ctx)
		}
		return nil, err
	}
	resp := &pb.JoinClusterResponse{LeaderId: s.node.ID()}
	if transport != nil {
		w, mech, err := s.hsm.WrapDomainKeyFor(ctx, transport)
		if err != nil {
			if errors.Is(err, hsm.ErrInvalidInput) {
				return nil, errInvalidArg(ExcValidation, "invalid TransportPublicKey: %v", err)
			}
			return nil, err
		}
		resp.WrappedDomainKey, resp.WrappingMechanism = w, mech
	}
	if completing {
		s.log.Info("join completed: the domain key sent to a member that had not received it", "node", id)
		return resp, nil
	}
	pi := req.GetPartition()
	rec := cluster.NodeInfo{ID: id, RaftAddr: req.GetRaftAddress(), GRPCAddr: req.GetGrpcAddress(), LastSeen: s.now(),
		Partition: cluster.PartitionInfo{Model: pi.GetHsmModel(), Manufacturer: pi.GetManufacturer(), Serial: pi.GetSerial(),
			TokenLabel: pi.GetTokenLabel(), Library: pi.GetLibraryPath(), Firmware: pi.GetFirmwareVersion(),
			Mechanisms: pi.GetMechanisms(), DomainKeyPresent: pi.GetDomainKeyPresent(), Health: "joining"}}
	// Admit: a node removed before comes back this way only, and is no
	// longer refused once this is applied, before Raft adds it.
	if _, err := s.apply(ctx, &cluster.UpsertNode{Node: rec, Admit: true}); err != nil {
		return nil, err
	}
	if err := s.node.AddNonvoter(ctx, id, req.GetRaftAddress()); err != nil {
		return nil, fmt.Errorf("add non-voter %s: %w", id, err)
	}
	s.log.Info("node joined as a non-voter", "node", id, "raft", req.GetRaftAddress(), "grpc", req.GetGrpcAddress())
	return resp, nil
}

// refuseJoinToken is the answer to a join whose token the cluster does not
// hold, or no longer, or holds for another node id, with its audit line
// denied. The four are not told apart: the caller learns nothing of other
// tokens.
func (s *Service) refuseJoinToken(ctx context.Context) error {
	s.RefuseRequest(ctx, "join token unknown, already used, expired or made for another node")
	return newError(codes.PermissionDenied, ExcAccessDenied, "the join token is unknown, already used, expired or made for another node id")
}

// raftProbeTimeout bounds the leader's check that a joining node's Raft
// address answers.
const raftProbeTimeout = 3 * time.Second

// probeRaftAddress checks, before a node becomes a member, that the
// joining node answers at its Raft address: it takes a connection from the
// leader and, over TLS, presents the node certificate of id. A member that
// no one can reach (a wrong raft_advertise, a node that is not up) never
// catches up: it stays a non-voter that cannot serve, and says only that.
// One added at an address where another node answers (another name of a
// member's address) is refused here; the transport would not count that
// node's answers for it either (cluster.answeredAs).
func (s *Service) probeRaftAddress(ctx context.Context, id, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil || len(addr) > 255 {
		return errInvalidArg(ExcValidation, "invalid RaftAddress %.100q: want host:port", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, raftProbeTimeout)
	defer cancel()
	err := s.node.ProbePeer(ctx, id, addr)
	switch {
	case errors.Is(err, cluster.ErrPeerIdentity):
		return newError(codes.FailedPrecondition, ExcInvalidState,
			"the joining node's Raft address %.100q answers the leader as another node (%v): check raft_advertise; it must be node %s's own address", addr, err, id)
	case err != nil:
		return newError(codes.FailedPrecondition, ExcInvalidState,
			"the joining node's Raft address %.100q does not answer the leader as node %s (%v): a member the others cannot reach can never catch up; check raft_advertise, and that the node's Raft port is reachable from the members", addr, id, err)
	}
	return nil
}

// joinCompletes decides whether a join request for id may proceed: a node
// that is not a member joins; a member is refused (AlreadyExists), unless it
// is completing its own join (completing true): a join that stopped after
// the leader added the node and before the node imported the domain key
// leaves a member (a non-voter: promotion waits for the node's own record
// to show the key) that can never serve, and can only be completed by the
// same node, at the Raft address it joined with, whose HSM shows no domain
// key, both in the request and in the node's own record if it wrote one.
// The caller's node certificate and a new join token are required as for
// any join.
func (s *Service) joinCompletes(id string, req *pb.JoinClusterRequest) (bool, error) {
	member := false
	for _, srv := range s.node.Stats().Servers {
		switch {
		case srv.ID == id && srv.Address != req.GetRaftAddress():
			return false, newAlreadyExists("a node with id %s is already a member, at raft address %s", id, srv.Address)
		case srv.ID == id:
			member = true
		case srv.Address == req.GetRaftAddress():
			return false, newAlreadyExists("node %s already uses raft address %s", srv.ID, srv.Address)
		}
	}
	rec, recorded := s.node.State().Node(id)
	switch {
	case !member && !recorded:
		return false, nil
	case !member:
		return false, newAlreadyExists("a node with id %s is recorded but is not a Raft member: an earlier join stopped before Raft added it; remove it ('hsmctl cluster remove %s') and join again", id, id)
	case req.GetPartition().GetDomainKeyPresent() || len(req.GetTransportPublicKey()) == 0:
		return false, newAlreadyExists("a node with id %s is already a member", id)
	case recorded && rec.Partition.Health != "joining" && rec.Partition.DomainKeyPresent:
		return false, newAlreadyExists("a node with id %s is already a member, and its HSM held the domain key", id)
	}
	return true, nil
}

// quorumAfterRemoval refuses to remove id when the voters left would not
// have a quorum among those that answer the leader: the cluster
// would stop taking writes the moment the removal commits (with three
// voters and one stopped, removing a live follower leaves two voters of
// which one answers). Removing an unreachable voter is always allowed.
func (s *Service) quorumAfterRemoval(id string) error {
	unreachable := s.node.UnreachablePeers()
	voters, live := 0, 0
	var down []string
	for _, srv := range s.node.Stats().Servers {
		if !srv.Voter || srv.ID == id {
			continue
		}
		voters++
		// A voter counts only on evidence: the leader itself, or one whose
		// latest heartbeat did not fail and that answered the leader's
		// replication a moment ago (a leader elected just now has heard
		// from no one yet, and knows of no failure either).
		if srv.ID == s.node.ID() || !unreachable[srv.ID] && s.node.Answered(srv.ID) {
			live++
		} else {
			down = append(down, srv.ID)
		}
	}
	if need := voters/2 + 1; voters > 0 && live < need {
		return newError(codes.FailedPrecondition, ExcInvalidState,
			"removing node %s would leave %d voters of which %d answer the leader (not %s), fewer than the %d a quorum needs: the cluster would stop taking writes; bring those nodes back, or remove them first (a leader elected a moment ago has yet to hear from them: then retry)",
			id, voters, live, strings.Join(down, ", "), need)
	}
	return nil
}

// RemoveNode removes a member from Raft and from the replicated records.
// A follower passes the request to the leader. Removing a non-voter
// changes no quorum and is allowed whatever the voters' state.
func (s *Service) RemoveNode(ctx context.Context, req *pb.RemoveNodeRequest) (*pb.RemoveNodeResponse, error) {
	id := req.GetNodeId()
	if err := checkNodeID(id); err != nil {
		return nil, err
	}
	nameObject(ctx, "node:"+id)
	if !s.node.IsLeader() {
		lc, leader, err := s.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		if lc != nil {
			var p peer.Peer
			resp, err := lc.RemoveNode(outgoing(ctx), req, grpc.Peer(&p))
			return resp, s.passToLeader(leader, &p, err)
		}
	}
	s.suffrage.Lock()
	defer s.suffrage.Unlock()
	member, voters, voter := false, 0, false
	for _, srv := range s.node.Stats().Servers {
		member = member || srv.ID == id
		if srv.Voter {
			voters++
			voter = voter || srv.ID == id
		}
	}
	if voter && voters == 1 {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is the cluster's last voter and cannot be removed: a cluster cannot remove its last member; to retire the cluster, stop the node", id)
	}
	if id == s.node.ID() {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is the leader and cannot remove itself; transfer leadership first", id)
	}
	if voter {
		if err := s.quorumAfterRemoval(id); err != nil {
			return nil, err
		}
	}
	if _, ok := s.node.State().Node(id); !ok && !member {
		return nil, errNotFound("node %s is not a member", id)
	}
	// The record goes, and the id is marked removed, before Raft drops the
	// node: once it is out of the configuration, no call of its may find
	// it not yet marked (a leader lost between the two would leave it so).
	// A failure in between leaves a voter marked removed, whose Raft calls
	// the others refuse; running the removal again completes it.
	if _, err := s.apply(ctx, &cluster.RemoveNode{ID: id}); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return nil, err
	}
	if member {
		if err := s.node.RemoveServer(ctx, id); err != nil {
			return nil, err
		}
	}
	s.log.Info("node removed", "node", id)
	return &pb.RemoveNodeResponse{}, nil
}
