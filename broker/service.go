package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Config wires a Service. Zero values of optional fields mean their
// defaults.
type Config struct {
	// NodeID names this node in logs, audit lines and cluster status.
	NodeID string
	// Node is this node's Raft member. Required.
	Node *cluster.Node
	// Partition is this node's HSM partition. Required.
	Partition *hsm.Partition
	// Region and Account make key ARNs: arn:aws:kms:REGION:ACCOUNT:key/ID
	// (defaults "us-east-1" and "000000000000").
	Region  string
	Account string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// WriteTimeout bounds one replicated write (default 10s).
	WriteTimeout time.Duration
	// PeerTLS is the client TLS configuration (node certificate and cluster
	// CA) for calls to other nodes: forwarded writes and joins. nil dials
	// peers in plaintext, for tests only.
	PeerTLS *tls.Config
	// MaxStaleness is how long a follower may go without hearing from the
	// leader before it stops serving (default 3s).
	MaxStaleness time.Duration
	// RequireCaughtUp keeps a node unready until it has applied a write of
	// its own (Daemon.Heartbeat's first) since it started. The daemon sets
	// it; a service whose node runs no Daemon.Heartbeat leaves it off.
	RequireCaughtUp bool
	// Peers are gRPC addresses of other members (serve's join list). A
	// node that hears from no leader asks them, besides the members its
	// replicated state records, whether it is still a member
	// (membership_probe.go): after a restart without a snapshot that state
	// is empty until a leader reaches the node, which a removed node's
	// never does.
	Peers []string
	// AuditLog, when set, receives one line per request (see accessInterceptor
	// and EndRequest); a request whose line cannot be written fails. nil
	// keeps no audit log. The caller closes it after the service.
	AuditLog *audit.Log
	// BackupChunkSize is the most snapshot bytes one Backup message
	// carries (default and maximum MaxBackupChunkSize).
	BackupChunkSize int
	// InsecureNoClientAuth serves gRPC without identities: every caller,
	// with or without a certificate, is an admin, and every caller is
	// taken for a cluster node. It is for tests on loopback only; New
	// logs a warning every time it is set. Off (the default), a caller
	// without a verified client certificate is refused, whether or not
	// the server was given a TLS configuration.
	InsecureNoClientAuth bool
}

// Service is the broker core. It is safe for concurrent use.
type Service struct {
	pb.UnimplementedKeyServiceServer
	pb.UnimplementedCryptoServiceServer
	pb.UnimplementedClusterServiceServer
	pb.UnimplementedAccessServiceServer
	pb.UnimplementedAuditServiceServer

	cfg  Config
	node *cluster.Node
	hsm  *hsm.Partition
	log  *slog.Logger

	// inflight counts the gRPC calls the tap admitted that have not
	// ended, and byPrincipal those of each principal; tapRefused the
	// calls it refused (see tap.go).
	inflight    atomic.Int64
	byPrincipal principalCalls
	tapRefused  atomic.Uint64
	// firstMessageWait, when set (tests), replaces firstMessageTimeout.
	firstMessageWait atomic.Int64

	health healthState
	peers  peers
	// joining holds the one JoinCluster under way on this node.
	joining chan struct{}
	// suffrage is held by a removal and by a promotion from the check of
	// a member's suffrage to the configuration change, so that neither
	// acts on a suffrage the other is changing (promotion.go).
	suffrage sync.Mutex
	// membership is what members said of this node's membership while it
	// heard from no leader (membership_probe.go).
	membership membershipProbe
	// access decides key access: policies (parsed once, cached) and grants.
	access *authz.Authorizer
	// gate is set while WatchHealth runs: key and crypto calls are then
	// refused (Unavailable) whenever the node is not ready.
	gate atomic.Bool
	// caughtUp is set once a write of this node's own has been applied
	// here: the state is then at least as new as the cluster's was when
	// the node started.
	caughtUp atomic.Bool
	// joinedAt is when this process asked to join the cluster, and again
	// when its join completed (Daemon.Join, unix nanoseconds; 0 if it did
	// not): for a while after, a configuration without this node is one
	// from before its admission, not a removal.
	joinedAt atomic.Int64
	// recordRefresh is how often the nodes rewrite their records
	// (DaemonConfig.HeartbeatRefresh, as NewDaemon set it): a record not
	// rewritten for recordStaleRefreshes of it is a node not heard from.
	recordRefresh atomic.Int64
	// auditAnchoring is set while CheckpointAudit runs and has not yet
	// checked the log against the cluster's checkpoints: the node does not
	// serve until it has, so that no request's line lands on a log that
	// may have been cut while the node was down.
	auditAnchoring atomic.Bool
	// anonymous bounds the audit lines of refusals that proved no
	// identity (audit_anonymous.go).
	anonymous anonymousRefusals
	// leaderSync shares syncWithLeader's round trips among its callers;
	// anonSync those of callers that have proved no identity yet
	// (syncUnauthenticated), apart, so that they cannot slow the others.
	leaderSync, anonSync leaderSync
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Node == nil || cfg.Partition == nil {
		return nil, errors.New("broker: a cluster node and an HSM partition are required")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Account == "" {
		cfg.Account = "000000000000"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = 3 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.NodeID == "" {
		cfg.NodeID = cfg.Node.ID()
	}
	if cfg.BackupChunkSize <= 0 || cfg.BackupChunkSize > MaxBackupChunkSize {
		cfg.BackupChunkSize = MaxBackupChunkSize
	}
	s := &Service{cfg: cfg, node: cfg.Node, hsm: cfg.Partition, log: cfg.Logger, anonSync: leaderSync{spacing: anonSyncSpacing, localOnLeader: true},
		joining: make(chan struct{}, 1)}
	s.access = authz.NewAuthorizer(cfg.Account, s.KeyARN)
	if cfg.InsecureNoClientAuth {
		s.log.Warn("INSECURE: gRPC client authentication is off (InsecureNoClientAuth): every caller is an admin and a cluster node; never run this outside a test",
			"node", cfg.NodeID)
	}
	// A node that must catch up refuses key and crypto calls from the
	// start, until WatchHealth finds it ready.
	s.gate.Store(cfg.RequireCaughtUp)
	return s, nil
}

// now is the service clock in UTC, truncated to the second as AWS KMS
// reports times.
func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }
