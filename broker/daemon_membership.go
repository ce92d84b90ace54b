package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EnsureDomainKeyCheck makes sure the cluster records a check blob for its
// domain key (once, when a cluster is bootstrapped) and that this node's
// HSM holds that domain key. A node whose HSM holds another domain key must
// not serve: its blobs would not unwrap.
func (d *Daemon) EnsureDomainKeyCheck(ctx context.Context) error {
	s := d.svc
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
	// Complete is set for a node that is a member already (it has Raft
	// state): it joins only to receive the domain key, if its HSM lacks it
	// because an earlier join stopped after the leader added the node and
	// before the key was imported. A member whose HSM holds the key does
	// nothing.
	Complete bool
}

// Join makes this node (opened without Bootstrap, with Raft running) a
// member of an existing cluster and gives its HSM the domain key, HSM to
// HSM. A partition that already holds a domain key must hold the
// cluster's: that is checked before anything is asked of the cluster.
func (d *Daemon) Join(ctx context.Context, jc JoinConfig) error {
	s := d.svc
	ctx = Internal(ctx, "join")
	if jc.Complete {
		// Asked before any seed: a member with the key (every restart of a
		// node whose configuration keeps its join list) needs no cluster.
		has, err := s.hsm.HasDomainKey(ctx)
		if err != nil {
			s.log.Warn("cannot tell whether this member's HSM holds the domain key; a join is not completed", "err", err)
			return nil
		}
		if has {
			return nil
		}
		s.log.Warn("this member's HSM holds no domain key: an earlier join stopped before it was imported; completing the join")
	}
	// An election may be under way while a node joins: a seed may know no
	// leader yet, or the node asked may have just lost leadership. Those
	// answers spend no join token, so they are retried until ctx ends.
	for {
		err := d.joinOnce(ctx, jc)
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

// tlsHint is what to check when a join failed in the TLS handshake with a
// member: the members refuse a certificate from another CA, and the
// joiner sees anything from "unknown certificate authority" to a broken
// pipe.
func tlsHint(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, s := range []string{"certificate", "tls:", "handshake", "broken pipe", "connection reset"} {
		if strings.Contains(msg, s) {
			return "; if the members are up, check that this node's certificate (tls.cert) is issued by the cluster's CA (tls.ca) for its node_id"
		}
	}
	return ""
}

// errJoinRetry marks join failures that changed nothing and may pass on a
// second try (no leader yet, a leader change).
var errJoinRetry = errors.New("broker: join can be retried")

func (d *Daemon) joinOnce(ctx context.Context, jc JoinConfig) error {
	s := d.svc
	var (
		cs      *pb.GetClusterStatusResponse
		lastErr error
		seed    string
	)
	for _, seed = range jc.Seeds {
		c, err := s.peerConn(seed)
		if err != nil {
			lastErr = err
			continue
		}
		if cs, err = pb.NewClusterServiceClient(c).GetClusterStatus(ctx, &pb.GetClusterStatusRequest{}); err == nil {
			break
		}
		lastErr = fmt.Errorf("seed %s: %w", seed, readable(err))
	}
	if cs == nil {
		return fmt.Errorf("no seed answered: %w%s", lastErr, tlsHint(lastErr))
	}
	leaderAddr, member := "", false
	for _, n := range cs.GetNodes() {
		if n.GetId() == cs.GetLeaderId() {
			leaderAddr = n.GetGrpcAddress()
		}
		member = member || n.GetId() == s.node.ID()
	}
	if leaderAddr == "" {
		return fmt.Errorf("%w: %w: the cluster reports no leader with a gRPC address", errJoinRetry, cluster.ErrNotLeader)
	}
	check := cs.GetDomainKeyCheck()
	has, err := s.hsm.HasDomainKey(ctx)
	if err != nil {
		return err
	}
	// A member by this id whose HSM lacks the domain key may be this node,
	// stopped during its join after the leader added it (before it wrote
	// any Raft state of its own, or after): the leader completes such a
	// join for the same node at the same Raft address, and refuses any
	// other.
	if member && has {
		return fmt.Errorf("%w: node id %s is already a member of the cluster", cluster.ErrAlreadyExists, s.node.ID())
	}
	req := &pb.JoinClusterRequest{NodeId: s.node.ID(), RaftAddress: s.node.Addr(), GrpcAddress: jc.GRPCAddr, JoinToken: jc.Token}
	if has {
		if err := s.hsm.VerifyDomainKey(ctx, check); err != nil {
			return fmt.Errorf("this node's HSM already holds a domain key, and it is not the cluster's: %w", err)
		}
	} else if req.TransportPublicKey, err = s.hsm.TransportKey(ctx); err != nil {
		return err
	}
	pi := s.localPartitionInfo(ctx)
	req.Partition = partitionPB(pi, time.Time{})
	c, err := s.peerConn(leaderAddr)
	if err != nil {
		return err
	}
	// Marked before the call: the leader adds this node to Raft before
	// it answers, and its entries (configurations from before the
	// admission among them) may be applied here while the domain key is
	// still being imported; readiness must read those as catching up
	// after a join, not as a removal. A join that fails leaves the mark,
	// which matters only if the leader did add the node.
	s.joinedAt.Store(time.Now().UnixNano())
	resp, err := pb.NewClusterServiceClient(c).JoinCluster(ctx, req)
	if err != nil {
		// The leader refuses before it spends the token when it has lost
		// leadership; a connection that never carried the request spent
		// nothing either.
		if st, _ := status.FromError(err); st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "not the leader") ||
			st.Code() == codes.Unavailable && reasonOf(st) == reasonNotLeader {
			return fmt.Errorf("%w: join through the leader %s: %w", errJoinRetry, leaderAddr, readable(err))
		}
		hint := tlsHint(err)
		switch c := status.Code(err); {
		case c == codes.PermissionDenied && strings.Contains(err.Error(), "node certificate names"):
			hint = "; this node's certificate (tls.cert) must be issued for its node_id: 'hsmctl certs node --node-id " + s.node.ID() + " ...'"
		case c == codes.PermissionDenied || c == codes.Unauthenticated:
			hint = "; make a new token with 'hsmctl cluster join-token --node-id " + s.node.ID() + "' and give it in join_token_file or join_token_env"
		}
		return fmt.Errorf("join through the leader %s (named by seed %s): %w%s", leaderAddr, seed, readable(err), hint)
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
	s.joinedAt.Store(time.Now().UnixNano()) // the minute counts from here
	return s.node.WaitForLeader(ctx)
}

// Heartbeat keeps this node's record (gRPC address, partition metadata and
// health) current in the replicated state until ctx ends: at once,
// whenever the health changes (checked every HeartbeatCheck), and every
// HeartbeatRefresh otherwise. Its first write that this node applies marks
// the node caught up (Config.RequireCaughtUp).
func (d *Daemon) Heartbeat(ctx context.Context) {
	s := d.svc
	grpcAddr, check, refresh := d.cfg.GRPCAddr, d.cfg.HeartbeatCheck, d.cfg.HeartbeatRefresh
	ctx = Internal(ctx, "heartbeat")
	var last string
	var lastWrite time.Time
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, check+s.cfg.WriteTimeout)
		pi := s.localPartitionInfo(cctx)
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

// RegisterNode records this node (at GRPCAddr) and its partition in the
// replicated state once, so that cluster status can show it from any node;
// Heartbeat keeps the record current.
func (d *Daemon) RegisterNode(ctx context.Context) error {
	s := d.svc
	ctx = Internal(ctx, "register")
	_, err := s.apply(ctx, &cluster.UpsertNode{Node: cluster.NodeInfo{ID: s.node.ID(), RaftAddr: s.node.Addr(),
		GRPCAddr: d.cfg.GRPCAddr, Partition: s.localPartitionInfo(ctx), LastSeen: s.now()}})
	return err
}

// readable is err with a gRPC status written as its message and code,
// rather than grpc-go's "rpc error: code = ... desc = ...", for the
// messages an operator reads; the status stays matchable (status.Code).
func readable(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err
	}
	return statusText{st}
}

type statusText struct{ st *status.Status }

func (e statusText) Error() string { return e.st.Message() + " (" + e.st.Code().String() + ")" }

// GRPCStatus keeps the status for status.Code and status.FromError.
func (e statusText) GRPCStatus() *status.Status { return e.st }
