package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Join tokens live 15 minutes unless asked otherwise, at most a day.
const (
	defaultJoinTokenTTL = 15 * time.Minute
	maxJoinTokenTTL     = 24 * time.Hour
)

var nodeIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// EnsureDomainKeyCheck makes sure the cluster records a check blob for its
// domain key (once, when a cluster is bootstrapped) and that this node's
// HSM holds that domain key. A node whose HSM holds another domain key must
// not serve: its blobs would not unwrap.
func (s *Service) EnsureDomainKeyCheck(ctx context.Context) error {
	ctx = Internal(ctx, "domain-key-check")
	check := s.node.State().DomainKeyCheck()
	if len(check) == 0 {
		if !s.node.IsLeader() {
			return nil // the bootstrap node records it
		}
		c, err := s.hsm.DomainKeyCheck(ctx)
		if err != nil {
			return fmt.Errorf("make domain key check: %w", err)
		}
		sum := sha256.Sum256(c)
		_, err = s.apply(ctx, &cluster.SetDomainKeyID{ID: hex.EncodeToString(sum[:8]), Check: c})
		if err != nil && !errors.Is(err, cluster.ErrAlreadyExists) {
			return err
		}
		check = s.node.State().DomainKeyCheck()
	}
	return s.hsm.VerifyDomainKey(ctx, check)
}

// CreateJoinToken makes a one-time token for one new node. Only a hash is
// replicated; the token itself is shown once, to the caller.
func (s *Service) CreateJoinToken(ctx context.Context, req *pb.CreateJoinTokenRequest) (*pb.CreateJoinTokenResponse, error) {
	ttl := defaultJoinTokenTTL
	if d := req.GetTtl(); d != nil {
		ttl = d.AsDuration()
		if ttl == 0 {
			ttl = defaultJoinTokenTTL
		}
	}
	if ttl < 0 || ttl > maxJoinTokenTTL {
		return nil, errInvalidArg(ExcValidation, "invalid Ttl: must be 0 (15 minutes) to 24h, got %s", ttl)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	token := "hsmbj_" + base64.RawURLEncoding.EncodeToString(raw)
	now := s.now()
	expires := now.Add(ttl)
	if _, err := s.apply(ctx, &cluster.AddJoinToken{Hash: joinTokenHash(token), Expires: expires, At: now}); err != nil {
		return nil, err
	}
	return &pb.CreateJoinTokenResponse{Token: token, ExpireTime: timestamppb.New(expires)}, nil
}

func joinTokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// JoinCluster admits a new node: it must present a node certificate from
// the cluster CA naming the node id it asks for, and an unused join token.
// The leader's HSM wraps the domain key to the joining HSM's transport key;
// the new node becomes a voter. Bad requests change nothing: the node id
// and the caller are checked before the token is spent.
func (s *Service) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.JoinClusterResponse, error) {
	if err := s.requireNode(ctx); err != nil {
		return nil, err
	}
	id := req.GetNodeId()
	if !nodeIDPattern.MatchString(id) {
		return nil, errInvalidArg(ExcValidation, "invalid NodeId %q: 1 to 63 letters, digits, '.', '_' or '-'", id)
	}
	if c := peerCert(ctx); c != nil && c.Subject.CommonName != id {
		return nil, newError(codes.PermissionDenied, ExcAccessDenied, "the caller's node certificate names %q, not %q", c.Subject.CommonName, id)
	}
	if req.GetRaftAddress() == "" || req.GetGrpcAddress() == "" {
		return nil, errInvalidArg(ExcValidation, "invalid join request: RaftAddress and GrpcAddress are required")
	}
	if !s.node.IsLeader() {
		leader, _ := s.node.Leader()
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is not the leader; join through the leader %q", s.node.ID(), leader)
	}
	if _, exists := s.node.State().Node(id); exists {
		return nil, newAlreadyExists("a node with id %s is already a member", id)
	}
	for _, srv := range s.node.Stats().Servers {
		if srv.ID == id {
			return nil, newAlreadyExists("a node with id %s is already a member", id)
		}
		if srv.Address == req.GetRaftAddress() {
			return nil, newAlreadyExists("node %s already uses raft address %s", srv.ID, srv.Address)
		}
	}
	pub := req.GetTransportPublicKey()
	if len(pub) == 0 && !req.GetPartition().GetDomainKeyPresent() {
		return nil, errInvalidArg(ExcValidation, "invalid join request: a TransportPublicKey is required when the joining partition holds no domain key")
	}
	if _, err := s.apply(ctx, &cluster.ConsumeJoinToken{Hash: joinTokenHash(req.GetJoinToken()), At: s.now()}); err != nil {
		if errors.Is(err, cluster.ErrNotFound) || errors.Is(err, cluster.ErrInvalidState) {
			return nil, newError(codes.PermissionDenied, ExcAccessDenied, "the join token is unknown, already used or expired")
		}
		return nil, err
	}
	resp := &pb.JoinClusterResponse{LeaderId: s.node.ID()}
	if len(pub) > 0 {
		w, mech, err := s.hsm.WrapDomainKeyFor(ctx, pub)
		if err != nil {
			if errors.Is(err, hsm.ErrInvalidInput) {
				return nil, errInvalidArg(ExcValidation, "invalid TransportPublicKey: %v", err)
			}
			return nil, err
		}
		resp.WrappedDomainKey, resp.WrappingMechanism = w, mech
	}
	pi := req.GetPartition()
	rec := cluster.NodeInfo{ID: id, RaftAddr: req.GetRaftAddress(), GRPCAddr: req.GetGrpcAddress(), LastSeen: s.now(),
		Partition: cluster.PartitionInfo{Model: pi.GetHsmModel(), Manufacturer: pi.GetManufacturer(), Serial: pi.GetSerial(),
			TokenLabel: pi.GetTokenLabel(), Library: pi.GetLibraryPath(), Firmware: pi.GetFirmwareVersion(),
			Mechanisms: pi.GetMechanisms(), DomainKeyPresent: true, Health: "joining"}}
	if _, err := s.apply(ctx, &cluster.UpsertNode{Node: rec}); err != nil {
		return nil, err
	}
	if err := s.node.AddVoter(ctx, id, req.GetRaftAddress()); err != nil {
		return nil, fmt.Errorf("add voter %s: %w", id, err)
	}
	s.log.Info("node joined", "node", id, "raft", req.GetRaftAddress(), "grpc", req.GetGrpcAddress())
	return resp, nil
}

// RemoveNode removes a member from Raft and from the replicated records.
// A follower passes the request to the leader.
func (s *Service) RemoveNode(ctx context.Context, req *pb.RemoveNodeRequest) (*pb.RemoveNodeResponse, error) {
	id := req.GetNodeId()
	if !nodeIDPattern.MatchString(id) {
		return nil, errInvalidArg(ExcValidation, "invalid NodeId %q", id)
	}
	if !s.node.IsLeader() {
		lc, _, err := s.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		if lc != nil {
			return lc.RemoveNode(outgoing(ctx), req)
		}
	}
	if id == s.node.ID() {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s is the leader and cannot remove itself; transfer leadership first", id)
	}
	member := false
	for _, srv := range s.node.Stats().Servers {
		member = member || srv.ID == id
	}
	if _, ok := s.node.State().Node(id); !ok && !member {
		return nil, errNotFound("node %s is not a member", id)
	}
	if member {
		if err := s.node.RemoveServer(ctx, id); err != nil {
			return nil, err
		}
	}
	if _, err := s.apply(ctx, &cluster.RemoveNode{ID: id}); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return nil, err
	}
	s.log.Info("node removed", "node", id)
	return &pb.RemoveNodeResponse{}, nil
}

// JoinConfig is what a new node needs to join a cluster.
type JoinConfig struct {
	// Seeds are gRPC addresses of existing members; any reachable one will
	// do, the leader is found from it.
	Seeds []string
	// Token is a join token from CreateJoinToken.
	Token string
	// GRPCAddr is the address other nodes and clients reach this node's
	// gRPC server at.
	GRPCAddr string
}

// Join makes this node (opened without Bootstrap, with Raft running) a
// member of an existing cluster and gives its HSM the domain key, HSM to
// HSM. A partition that already holds a domain key must hold the
// cluster's: that is checked before anything is asked of the cluster.
func (s *Service) Join(ctx context.Context, jc JoinConfig) error {
	ctx = Internal(ctx, "join")
	// An election may be under way while a node joins: a seed may know no
	// leader yet, or the node asked may have just lost leadership. Those
	// answers spend no join token, so they are retried until ctx ends.
	for {
		err := s.joinOnce(ctx, jc)
		if err == nil || !errors.Is(err, errJoinRetry) || ctx.Err() != nil {
			return err
		}
		s.log.Info("join not possible yet; retrying", "reason", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errJoinRetry marks join failures that changed nothing and may pass on a
// second try (no leader yet, a leader change).
var errJoinRetry = errors.New("broker: join can be retried")

func (s *Service) joinOnce(ctx context.Context, jc JoinConfig) error {
	var (
		cs      *pb.GetClusterStatusResponse
		lastErr error
	)
	for _, seed := range jc.Seeds {
		c, err := s.peerConn(seed)
		if err != nil {
			lastErr = err
			continue
		}
		if cs, err = pb.NewClusterServiceClient(c).GetClusterStatus(ctx, &pb.GetClusterStatusRequest{}); err == nil {
			break
		}
		lastErr = fmt.Errorf("seed %s: %w", seed, err)
	}
	if cs == nil {
		return fmt.Errorf("no seed answered: %w", lastErr)
	}
	leaderAddr := ""
	for _, n := range cs.GetNodes() {
		if n.GetId() == cs.GetLeaderId() {
			leaderAddr = n.GetGrpcAddress()
		}
		if n.GetId() == s.node.ID() {
			return fmt.Errorf("%w: node id %s is already a member of the cluster", cluster.ErrAlreadyExists, s.node.ID())
		}
	}
	if leaderAddr == "" {
		return fmt.Errorf("%w: %w: the cluster reports no leader with a gRPC address", errJoinRetry, cluster.ErrNotLeader)
	}
	check := cs.GetDomainKeyCheck()
	has, err := s.hsm.HasDomainKey(ctx)
	if err != nil {
		return err
	}
	req := &pb.JoinClusterRequest{NodeId: s.node.ID(), RaftAddress: s.node.Addr(), GrpcAddress: jc.GRPCAddr, JoinToken: jc.Token}
	if has {
		if err := s.hsm.VerifyDomainKey(ctx, check); err != nil {
			return fmt.Errorf("this node's HSM already holds a domain key, and it is not the cluster's: %w", err)
		}
	} else if req.TransportPublicKey, err = s.hsm.TransportKey(ctx); err != nil {
		return err
	}
	pi := s.LocalPartitionInfo(ctx)
	req.Partition = partitionPB(pi, time.Time{})
	c, err := s.peerConn(leaderAddr)
	if err != nil {
		return err
	}
	resp, err := pb.NewClusterServiceClient(c).JoinCluster(ctx, req)
	if err != nil {
		// The leader refuses before it spends the token when it has lost
		// leadership; a connection that never carried the request spent
		// nothing either.
		if st, _ := status.FromError(err); st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "not the leader") ||
			st.Code() == codes.Unavailable && reasonOf(st) == reasonNotLeader {
			return fmt.Errorf("%w: join through %s: %w", errJoinRetry, leaderAddr, err)
		}
		return fmt.Errorf("join through %s: %w", leaderAddr, err)
	}
	if !has {
		if err := s.hsm.ImportDomainKey(ctx, resp.GetWrappedDomainKey(), resp.GetWrappingMechanism()); err != nil {
			return fmt.Errorf("import the domain key: %w", err)
		}
		if err := s.hsm.VerifyDomainKey(ctx, check); err != nil {
			return fmt.Errorf("the imported domain key fails the cluster's check: %w", err)
		}
	}
	s.log.Info("joined the cluster", "leader", resp.GetLeaderId())
	return s.node.WaitForLeader(ctx)
}

// Heartbeat keeps this node's record (gRPC address, partition metadata and
// health) current in the replicated state: at once, whenever the health
// changes, and every refresh interval otherwise.
func (s *Service) Heartbeat(ctx context.Context, grpcAddr string, check, refresh time.Duration) {
	ctx = Internal(ctx, "heartbeat")
	var last string
	var lastWrite time.Time
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, check+s.cfg.WriteTimeout)
		pi := s.LocalPartitionInfo(cctx)
		if pi.Health != last || time.Since(lastWrite) >= refresh {
			rec := cluster.NodeInfo{ID: s.node.ID(), RaftAddr: s.node.Addr(), GRPCAddr: grpcAddr, Partition: pi, LastSeen: s.now()}
			if _, err := s.apply(cctx, &cluster.UpsertNode{Node: rec}); err == nil {
				last, lastWrite = pi.Health, time.Now()
				s.caughtUp.Store(true) // apply waited until this node applied it
			} else if ctx.Err() == nil {
				s.log.Debug("node record not updated", "err", err)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
