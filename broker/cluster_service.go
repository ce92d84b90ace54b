package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Observer returns the cluster FSM observer that keeps a partition's handle
// cache in step with the replicated state: a deleted key's loaded copies are
// destroyed, and a snapshot restore drops them all. It runs on Raft's apply
// goroutine, so the HSM work is handed off and the observer returns at once.
func Observer(p *hsm.Partition) func(cluster.Event) { return PreloadingObserver(p, nil) }

// PreloadingObserver is Observer that also passes every event to a
// preloader (when pl is not nil), a restore's once the old copies are gone.
func PreloadingObserver(p *hsm.Partition, pl *Preloader) func(cluster.Event) {
	return func(ev cluster.Event) {
		switch ev.Type {
		case cluster.TypeDeleteKey:
			go p.Evict(context.Background(), ev.KeyID)
		case cluster.TypeRestore:
			go func() {
				p.EvictAll(context.Background())
				if pl != nil {
					pl.Observe(ev)
				}
			}()
			return
		}
		if pl != nil {
			pl.Observe(ev)
		}
	}
}

// serving is this node's last health verdict, kept by WatchHealth.
type healthState struct {
	// verdict is the last one, read whole: a verdict and its reason are
	// never seen from two different checks. nil before the first check.
	verdict atomic.Pointer[healthVerdict]

	mu  sync.Mutex
	srv *health.Server // the gRPC health service WatchHealth keeps; nil before
	was string         // the last reason logged, its digits left out (reasonKind)
}

// Ready reports whether this node can serve requests: its HSM answers and
// holds the domain key, the cluster has a leader, and this node's copy of
// the state is current (it has applied a write of its own since it started,
// and, as a follower, has heard from the leader within MaxStaleness). A node
// cut off from the leader stops serving rather than answer from a state
// that may miss a disable or a deletion. The reason says what is wrong.
//
// Every check is also the node's verdict until the next one: whoever asks
// (WatchHealth, /readyz), the gate of key and crypto calls, Healthy and the
// gRPC health service then agree, so a client that saw /readyz answer 200
// is not refused by the gate for up to a WatchHealth interval.
func (s *Service) Ready(ctx context.Context) (bool, string) {
	ok, reason := s.readiness(ctx)
	if ctx.Err() == nil { // a caller that gave up does not decide for the node
		s.recordHealth(ok, reason)
	}
	return ok, reason
}

// recordHealth makes a readiness verdict the node's.
func (s *Service) recordHealth(ok bool, reason string) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	h.verdict.Store(&healthVerdict{ok: ok, reason: reason})
	if h.srv != nil {
		st := healthpb.HealthCheckResponse_SERVING
		if !ok {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		for _, name := range []string{"", pb.KeyService_ServiceDesc.ServiceName, pb.CryptoService_ServiceDesc.ServiceName,
			pb.ClusterService_ServiceDesc.ServiceName} {
			h.srv.SetServingStatus(name, st)
		}
	}
	if kind := reasonKind(reason); kind != h.was {
		if ok {
			s.log.Info("node is serving")
		} else {
			s.log.Warn("node is not serving", "reason", reason)
		}
		h.was = kind
	}
}

// logStoreFailingFor is how long a failed write to the Raft log store
// keeps the node not ready when no later write tells whether the disk
// takes writes again.
const logStoreFailingFor = time.Minute

func (s *Service) readiness(ctx context.Context) (bool, string) {
	if err := s.hsm.Healthy(ctx); err != nil {
		return false, "HSM partition unavailable: " + err.Error()
	}
	if ok, err := s.hsm.HasDomainKey(ctx); err != nil || !ok {
		if err == nil && s.hsm.HeldDomainKey() {
			return false, "the HSM partition no longer shows the domain key it held: the token's storage was lost or replaced; restore it and restart the node"
		}
		return false, "HSM partition holds no domain key"
	}
	// A log store whose last write failed (a full or read-only disk under
	// data_dir) makes the node refuse every change. Say so for a while;
	// the next write (a replication, the no-op of an election) clears it
	// once the disk takes writes again.
	if at, err := s.node.LogStoreFailing(); err != nil && time.Since(at) < logStoreFailingFor {
		return false, "the Raft log store under data_dir cannot be written (" + err.Error() + "): free space or fix the disk (docs/OPERATIONS.md)"
	}
	// A member removed from the cluster learns it from the configuration
	// that removed it; it is never a member again (its state stays), so say
	// what it takes to come back rather than "catching up" for ever. One
	// that missed that configuration learns it from the members it asks
	// while it hears from no leader.
	st := s.node.Stats()
	const bringBack = "to bring it back, stop it, move its audit log aside, empty the rest of its data_dir and start it with a new join token (docs/OPERATIONS.md)"
	// Only a node that takes itself for a member asks: one joining (its
	// configuration empty until the leader's first entries) is not listed
	// yet, and must not read that as a removal.
	listed := slices.ContainsFunc(st.Servers, func(sv cluster.Server) bool { return sv.ID == st.ID })
	inDoubt := listed && st.Role != "Leader" && (st.LeaderID == "" || st.LastContact.IsZero() || time.Since(st.LastContact) > s.cfg.MaxStaleness)
	if n := s.removedByMembers(inDoubt); n != nil {
		return false, fmt.Sprintf("this node was removed from the cluster: %s; %s", n, bringBack)
	}
	if len(st.Servers) > 0 && !listed {
		if s.cfg.RequireCaughtUp && !s.caughtUp.Load() {
			// A node that joined a moment ago (or completes its join) also
			// starts from a configuration without itself, until it has
			// caught up to the change that added it.
			if at := s.joinedAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < joinCatchUp {
				return false, "catching up with the cluster after joining it"
			}
			return false, "this node is not in the cluster configuration it has applied so far: it is catching up after a join, or it was removed; if this lasts, it was removed: " + bringBack
		}
		return false, "this node was removed from the cluster; " + bringBack
	}
	if s.cfg.RequireCaughtUp && !s.caughtUp.Load() {
		return false, "catching up with the cluster"
	}
	if s.auditAnchoring.Load() {
		return false, "checking the audit log against the cluster's checkpoints"
	}
	// Cryptography needs no leader, only a current state: a follower keeps
	// serving through an election as long as it heard from a leader within
	// MaxStaleness.
	if st.Role == "Leader" {
		return true, ""
	}
	if st.LastContact.IsZero() {
		if st.LeaderID == "" {
			return false, "no cluster leader"
		}
		return true, ""
	}
	if since := time.Since(st.LastContact); since > s.cfg.MaxStaleness {
		return false, fmt.Sprintf("no contact with a leader for %s: the cluster may have lost its quorum, or this node was removed "+
			"while it was away ('hsmctl cluster status' through another node lists the members)", since.Round(time.Millisecond))
	}
	return true, ""
}

// joinCatchUp is how long after its join a node not yet in the
// configuration it applied is taken to be catching up, not removed.
const joinCatchUp = time.Minute

// reasonKind is a readiness reason without its digits: a reason that
// differs only in a count or a duration ("no contact with a leader for
// 25.4s") is logged once, not at every check.
func reasonKind(reason string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, reason)
}

// healthVerdict is one readiness verdict.
type healthVerdict struct {
	ok     bool
	reason string
}

// Healthy is the last readiness verdict (see Ready).
func (s *Service) Healthy() (bool, string) {
	v := s.health.verdict.Load()
	if v == nil {
		return false, "starting: its readiness not checked yet"
	}
	return v.ok, v.reason
}

func partitionPB(pi cluster.PartitionInfo, lastSeen time.Time) *pb.PartitionInfo {
	return &pb.PartitionInfo{HsmModel: pi.Model, Manufacturer: pi.Manufacturer, Serial: pi.Serial, TokenLabel: pi.TokenLabel,
		LibraryPath: pi.Library, FirmwareVersion: pi.Firmware, Mechanisms: pi.Mechanisms, DomainKeyPresent: pi.DomainKeyPresent,
		Health: pi.Health, LastSeen: ts(lastSeen)}
}

// localPartitionInfo describes this node's partition as cluster metadata.
// DomainKeyPresent false means "missing" only when Health is "ok": a
// partition that could not be asked may hold the key or not.
func (s *Service) localPartitionInfo(ctx context.Context) cluster.PartitionInfo {
	info := s.hsm.Info()
	health := "ok"
	if err := s.hsm.Healthy(ctx); err != nil {
		health = "unavailable: " + err.Error()
	}
	dk, err := s.hsm.HasDomainKey(ctx)
	if err != nil && health == "ok" {
		health = "unavailable: domain key check: " + err.Error()
	}
	return cluster.PartitionInfo{Model: info.Model, Manufacturer: info.Manufacturer, Serial: info.Serial,
		TokenLabel: info.Label, Library: info.Library, Firmware: info.Firmware, Mechanisms: info.Mechanisms,
		DomainKeyPresent: dk, Health: health}
}

func roleOf(r string) pb.NodeRole {
	switch r {
	case "Leader":
		return pb.NodeRole_NODE_ROLE_LEADER
	case "Follower":
		return pb.NodeRole_NODE_ROLE_FOLLOWER
	case "Candidate":
		return pb.NodeRole_NODE_ROLE_CANDIDATE
	}
	return pb.NodeRole_NODE_ROLE_UNKNOWN
}

// GetClusterStatus reports the members as this node sees them: its own
// live view, and for the others the records they last replicated.
func (s *Service) GetClusterStatus(ctx context.Context, _ *pb.GetClusterStatusRequest) (*pb.GetClusterStatusResponse, error) {
	st := s.node.Stats()
	resp := &pb.GetClusterStatusResponse{LeaderId: st.LeaderID, Term: st.Term, NodeId: s.node.ID(),
		DomainKeyCheck: s.node.State().DomainKeyCheck()}
	if ok, reason := s.Healthy(); !ok {
		resp.NotServingReason = reason
	}
	records := map[string]cluster.NodeInfo{}
	for _, n := range s.node.State().Nodes() {
		records[n.ID] = n
	}
	for _, srv := range st.Servers {
		rec := records[srv.ID]
		ns := &pb.NodeStatus{Id: srv.ID, RaftAddress: srv.Address, GrpcAddress: rec.GRPCAddr,
			Partition: partitionPB(rec.Partition, rec.LastSeen), Role: pb.NodeRole_NODE_ROLE_UNKNOWN}
		switch {
		case srv.ID == s.node.ID():
			ok, _ := s.Healthy()
			ns.Role, ns.Healthy = roleOf(st.Role), ok
			if !srv.Voter && ns.Role == pb.NodeRole_NODE_ROLE_FOLLOWER {
				// Raft calls a non-voter a follower too.
				ns.Role = pb.NodeRole_NODE_ROLE_NON_VOTER
			}
			ns.AppliedIndex, ns.CommitIndex = st.AppliedIndex, st.CommitIndex
			ns.Partition = partitionPB(s.localPartitionInfo(ctx), time.Now())
			if st.Role != "Leader" && !st.LastContact.IsZero() {
				ns.LastContact = durationpb.New(time.Since(st.LastContact))
			}
		case srv.ID == st.LeaderID:
			ns.Role, ns.Healthy = pb.NodeRole_NODE_ROLE_LEADER, s.recordHealthy(rec)
		case !srv.Voter:
			ns.Role, ns.Healthy = pb.NodeRole_NODE_ROLE_NON_VOTER, s.recordHealthy(rec)
		default:
			ns.Role, ns.Healthy = pb.NodeRole_NODE_ROLE_FOLLOWER, s.recordHealthy(rec)
		}
		resp.Nodes = append(resp.Nodes, ns)
	}
	// Raft keeps its configuration in the order members joined.
	slices.SortFunc(resp.Nodes, func(a, b *pb.NodeStatus) int { return strings.Compare(a.GetId(), b.GetId()) })
	return resp, nil
}

// recordHealthy is what another node's record says of its health: its HSM
// answered and held the domain key when it last wrote the record, and it
// wrote it recently. A node that stopped (or cannot reach the leader to
// write) keeps its last record, which would otherwise call it healthy for
// ever.
func (s *Service) recordHealthy(rec cluster.NodeInfo) bool {
	refresh := time.Duration(s.recordRefresh.Load())
	if refresh <= 0 {
		refresh = DefaultHeartbeatRefresh
	}
	fresh := s.now().Sub(rec.LastSeen) <= recordStaleRefreshes*refresh
	return fresh && rec.Partition.Health == "ok" && rec.Partition.DomainKeyPresent
}

// TransferLeadership hands leadership to another voter (any, when no
// node is named).
func (s *Service) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if id := req.GetNodeId(); id != "" {
		if err := checkNodeID(id); err != nil {
			return nil, err
		}
		nameObject(ctx, "node:"+id)
	}
	if !s.node.IsLeader() {
		lc, leader, err := s.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		if lc != nil {
			var p peer.Peer
			resp, err := lc.TransferLeadership(outgoing(ctx), req, grpc.Peer(&p))
			return resp, s.passToLeader(leader, &p, err)
		}
	}
	if err := s.node.TransferLeadership(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := s.node.WaitForLeader(ctx); err != nil {
		return nil, err
	}
	id, _ := s.node.Leader()
	return &pb.TransferLeadershipResponse{LeaderId: id}, nil
}

// VerifyBackup checks a backup's authenticator against its SHA-256 in this
// node's HSM (hsm.VerifyBackupAuthenticator). A mismatch is an answer
// (authentic false), not an error; malformed input is InvalidArgument, and
// an HSM without the domain key Unavailable.
func (s *Service) VerifyBackup(ctx context.Context, req *pb.VerifyBackupRequest) (*pb.VerifyBackupResponse, error) {
	// The field is the caller's, of any size up to a message: its length
	// is checked before it is decoded.
	hexSum := req.GetSha256()
	sum, err := []byte(nil), error(nil)
	if len(hexSum) == 2*sha256.Size {
		sum, err = hex.DecodeString(hexSum)
	}
	if sum == nil || err != nil {
		return nil, errInvalidArg(ExcValidation, "Sha256 must be the backup's SHA-256 as %d hex digits, got %d characters", 2*sha256.Size, len(hexSum))
	}
	if n := len(req.GetAuthenticator()); n != hsm.BackupAuthenticatorSize {
		return nil, errInvalidArg(ExcValidation, "Authenticator must be %d bytes (from the backup's .auth file), got %d", hsm.BackupAuthenticatorSize, n)
	}
	err = s.hsm.VerifyBackupAuthenticator(ctx, sum, req.GetAuthenticator())
	if err != nil && !errors.Is(err, hsm.ErrNotAuthentic) {
		return nil, err
	}
	return &pb.VerifyBackupResponse{Authentic: err == nil, NodeId: s.cfg.NodeID}, nil
}

// MaxBackupChunkSize is the most snapshot bytes one Backup message
// carries, well under every gRPC client's default receive limit (4 MiB).
const MaxBackupChunkSize = 1 << 20

// Backup streams a consistent snapshot of the replicated state (wrapped key
// blobs only, never plaintext key material) in chunks of at most
// BackupChunkSize bytes, hashing them as they go; the last message carries
// the SHA-256, size, index and term, and the authenticator this node's HSM
// makes from the SHA-256 under the domain key (hsm.BackupAuthenticator): a
// backup whose HSM call fails ends without its closing message, so it is
// never taken for whole. There is no size limit: a snapshot
// either reaches the client whole, or the stream fails (and the client,
// missing the last message, knows the backup is incomplete).
func (s *Service) Backup(_ *pb.BackupRequest, stream pb.ClusterService_BackupServer) error {
	ctx := stream.Context()
	// The closing message needs this node's HSM. One that is down fails
	// the backup here, before the first message, while the client may
	// still take it to another node, not after the whole snapshot.
	if ok, err := s.hsm.HasDomainKey(ctx); err != nil {
		return fmt.Errorf("this node's HSM cannot authenticate a backup: %w", err)
	} else if !ok {
		return fmt.Errorf("this node's HSM cannot authenticate a backup: %w", hsm.ErrNoDomainKey)
	}
	rc, index, term, err := s.node.Snapshot()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	var size uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A fresh buffer each time: gRPC allows no change to a message
		// once it is sent.
		buf := make([]byte, s.cfg.BackupChunkSize)
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			h.Write(buf[:n])
			size += uint64(n)
			if err := stream.Send(&pb.BackupResponse{Chunk: buf[:n]}); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read the snapshot: %w", rerr)
		}
	}
	sum := h.Sum(nil)
	auth, err := s.hsm.BackupAuthenticator(ctx, sum)
	if err != nil {
		return fmt.Errorf("the backup's authenticator: %w", err)
	}
	return stream.Send(&pb.BackupResponse{Sha256: hex.EncodeToString(sum), Size: size, Index: index, Term: term, Authenticator: auth})
}
