package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Config configures a Node. The zero value of every optional field means
// its default; the defaults suit a LAN.
type Config struct {
	// NodeID is this node's raft server ID, stable across restarts and
	// unique in the cluster. Required.
	NodeID string

	// RaftAddr is the host:port the raft transport listens on. Port 0 picks
	// a free port; Node.Addr reports the one chosen. Required.
	RaftAddr string

	// AdvertiseAddr is the host:port peers dial to reach this node, when it
	// differs from RaftAddr (a wildcard bind, NAT). Default: RaftAddr as
	// bound, which must then be a specific IP.
	AdvertiseAddr string

	// DataDir holds raft.db (the bbolt log and stable store) and the
	// snapshots directory. Created 0700 if missing. Required.
	DataDir string

	// Bootstrap makes a node with no raft state start a new cluster with
	// itself as the only voter. It is ignored when state exists, so it may
	// stay set across restarts. Set it on exactly one node of a new
	// cluster; the others join through AddNonvoter, then PromoteNonvoter.
	Bootstrap bool

	// TLS secures raft traffic with mutual TLS 1.3. One config serves as
	// both server and client: Certificates (the node certificate, valid
	// for server and client auth, with an IP or DNS SAN for the address
	// peers dial, or a name every node carries set as ServerName), ClientCAs
	// and RootCAs (the cluster CA). nil means plain TCP, for tests only.
	TLS *tls.Config

	// LinkFilter, with TLS, decides per peer node id whether Raft traffic
	// may flow; for partition tests. nil allows all.
	LinkFilter LinkFilter

	// Logger receives the node's logs and raft's. Default: discard.
	Logger *slog.Logger

	// RaftLogLevel is the least severe raft log record passed on to
	// Logger, read once by Open. Default: slog.LevelWarn, because raft is
	// chatty at Info.
	RaftLogLevel slog.Leveler

	// HeartbeatTimeout is how long a follower goes without hearing from
	// the leader before it starts an election. Default 500ms.
	HeartbeatTimeout time.Duration

	// ElectionTimeout is how long a candidate waits for votes before a new
	// election. Default 500ms.
	ElectionTimeout time.Duration

	// LeaderLeaseTimeout is how long a leader stays leader without
	// reaching a quorum. At most HeartbeatTimeout. Default 250ms.
	LeaderLeaseTimeout time.Duration

	// CommitTimeout is the longest the leader waits before sending an
	// empty append to carry the commit index. Followers apply an entry only
	// once they learn it committed, and a write through a follower waits
	// for that, so this bounds follower write latency. Default 5ms (an
	// empty append per follower every 5-10ms is nothing on a LAN).
	CommitTimeout time.Duration

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one. Default 8192.
	SnapshotThreshold uint64

	// SnapshotInterval is how often raft checks SnapshotThreshold.
	// Default 2m.
	SnapshotInterval time.Duration

	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// that a briefly absent follower catches up without a full snapshot.
	// Default 10240.
	TrailingLogs uint64

	// TransportTimeout bounds raft RPC dials and I/O. Default 10s.
	TransportTimeout time.Duration

	// MaxPool is how many idle connections are kept per peer. Default 3.
	MaxPool int

	// ReapInterval is how often the leader deletes keys whose deletion
	// date has passed. Default 30s.
	ReapInterval time.Duration

	// Now is the clock for deletion dates. Default time.Now.
	Now func() time.Time

	// Observer, if set, is called after every applied command and restore;
	// see NewFSM for its constraints.
	Observer func(Event)
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.NodeID == "" {
		return cfg, errors.New("cluster: Config.NodeID is required")
	}
	if cfg.RaftAddr == "" {
		return cfg, errors.New("cluster: Config.RaftAddr is required")
	}
	if cfg.DataDir == "" {
		return cfg, errors.New("cluster: Config.DataDir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RaftLogLevel == nil {
		cfg.RaftLogLevel = slog.LevelWarn
	}
	setDefault(&cfg.HeartbeatTimeout, 500*time.Millisecond)
	setDefault(&cfg.ElectionTimeout, 500*time.Millisecond)
	setDefault(&cfg.LeaderLeaseTimeout, 250*time.Millisecond)
	setDefault(&cfg.CommitTimeout, 5*time.Millisecond)
	setDefault(&cfg.SnapshotThreshold, 8192)
	setDefault(&cfg.SnapshotInterval, 2*time.Minute)
	setDefault(&cfg.TrailingLogs, 10240)
	setDefault(&cfg.TransportTimeout, 10*time.Second)
	setDefault(&cfg.MaxPool, 3)
	setDefault(&cfg.ReapInterval, 30*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Node is one member of the cluster: a raft instance with its stores,
// transport and FSM. All methods are safe for concurrent use.
type Node struct {
	cfg    Config
	logger *slog.Logger
	fsm    *FSM
	raft   *raft.Raft
	trans  *guardedTransport
	stream *tlsStreamLayer // nil without TLS (tests)
	store  *raftboltdb.BoltStore
	logs   *watchedLogs

	// termCommitted is the last term in which this node, leading, saw its
	// commit index at an entry of that term (readIndex): from then until
	// the term ends its commit index covers every earlier leader's writes.
	termCommitted atomic.Uint64

	ctx          context.Context // cancelled by Shutdown
	cancel       context.CancelFunc
	reaperDone   chan struct{}
	peers        peerHealth
	shutdownOnce sync.Once
	shutdownErr  error
}

// Open starts a node: it opens (or creates) the stores in DataDir, starts
// the transport, bootstraps a new single-node cluster if Bootstrap is set
// and there is no existing state, and starts raft and the deletion reaper.
// A restarted node reloads its snapshot and log and rejoins its cluster.
func Open(c Config) (*Node, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	logger := cfg.Logger.With("node", cfg.NodeID)
	hclogger := newHCLogAdapter(logger, "raft", cfg.RaftLogLevel.Level())

	n := &Node{cfg: cfg, logger: logger, reaperDone: make(chan struct{})}
	// Close whatever was opened if a later step fails.
	var closers []func() error
	fail := func(err error) (*Node, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
		return nil, err
	}

	// A timeout keeps a second process on the same DataDir from blocking
	// forever on bbolt's file lock.
	n.store, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fail(dataDirInUse(cfg.DataDir))
	}
	if err != nil {
		return fail(fmt.Errorf("cluster: open raft.db: %w", err))
	}
	closers = append(closers, n.store.Close)
	cache, err := raft.NewLogCache(512, n.store)
	if err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	logs := &watchedLogs{LogStore: cache}
	n.logs = logs
	// Made private here, before raft would make it 0755 (and Open then
	// narrow it with a warning meant for what older versions left).
	if err := os.Mkdir(filepath.Join(cfg.DataDir, "snapshots"), privateDirMode); err != nil && !os.IsExist(err) {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hclogger.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("cluster: open snapshot store: %w", err))
	}
	if err := makePrivate(logger, cfg.DataDir); err != nil {
		return fail(err)
	}
	snaps := privateSnapshots{SnapshotStore: fileSnaps, dir: filepath.Join(cfg.DataDir, "snapshots")}

	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
		if err != nil {
			return fail(fmt.Errorf("cluster: AdvertiseAddr: %w", err))
		}
		if err := checkAdvertisable(advertise); err != nil {
			return fail(err)
		}
	}
	tcfg := &raft.NetworkTransportConfig{
		Logger:  hclogger.Named("transport"),
		MaxPool: cfg.MaxPool,
		Timeout: cfg.TransportTimeout,
		// One AppendEntries in flight per follower: no pipelined
		// replication. raft's pipeline (v1.7.3) can wedge for good: when a
		// follower's answer ends the pipeline's decoder (a newer term after
		// a step-down, or Success=false after a restart), the send loop may
		// still make one more send, which waits on a queue nobody drains.
		// That follower then gets heartbeats but no more entries from this
		// leader, and Shutdown waits on the stuck sender forever. Without
		// the pipeline each follower is replicated by request and answer,
		// still in batches; docs/BENCHMARKS.md has the write figures. The
		// answers are also how the leader sees a non-voter catch up
		// (catch_up.go).
		MaxRPCsInFlight: 1,
	}
	// The FSM exists before the transport accepts anything: the Raft
	// listener asks its state which peers were removed.
	n.fsm = NewFSM(cfg.Observer, logger)
	if cfg.TLS != nil {
		stream, err := newTLSStreamLayer(cfg.RaftAddr, advertise, cfg.TLS, logger.With("component", "raft.transport"))
		if err != nil {
			return fail(err)
		}
		stream.filter = cfg.LinkFilter
		stream.admit = n.admitsRaftPeer
		tcfg.Stream = stream
		n.stream = stream
		n.trans = &guardedTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(tcfg)}
	} else {
		t, err := raft.NewTCPTransportWithConfig(cfg.RaftAddr, advertise, tcfg)
		if err != nil {
			return fail(fmt.Errorf("cluster: raft transport on %s: %w", cfg.RaftAddr, err))
		}
		n.trans = &guardedTransport{NetworkTransport: t}
	}
	closers = append(closers, n.trans.Close)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclogger
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, n.store, snaps)
		if err != nil {
			return fail(fmt.Errorf("cluster: %w", err))
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: n.trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logs, n.store, snaps, n.trans, conf); err != nil {
				return fail(fmt.Errorf("cluster: bootstrap: %w", err))
			}
			logger.Info("bootstrapped a new cluster", "addr", n.trans.LocalAddr())
		}
	}

	n.raft, err = raft.NewRaft(rc, n.fsm, logs, n.store, snaps, n.trans)
	if err != nil {
		return fail(fmt.Errorf("cluster: start raft: %w", err))
	}

	n.ctx, n.cancel = context.WithCancel(context.Background())
	go n.deletionReaper()
	n.watchHeartbeats()
	return n, nil
}

// ID returns this node's server ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr returns the raft address peers use for this node.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// State returns the node's replicated state, for reading. Reads are local:
// on a follower they may lag the leader by the replication delay. For a
// linearizable read, call Barrier on the leader first.
func (n *Node) State() *State { return n.fsm.State() }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's ID and raft address as this node
// knows them; both are empty when no leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// WaitForLeader blocks until some node (maybe this one) is known to lead.
func (n *Node) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ctx.Done():
			return ErrShutdown
		case <-t.C:
		}
	}
}

// Apply proposes c and waits until it is committed and applied on this
// node. It works only on the leader (*NotLeaderError otherwise, naming the
// leader to forward to). It returns the command's result (see the command
// types) or, when a precondition fails, the FSM's error (ErrNotFound,
// ErrAlreadyExists, ErrInvalidState, ErrInvalidCommand).
//
// When ctx ends first, Apply returns ctx.Err() and the command may still
// commit: the outcome is unknown, as with ErrLeadershipLost.
func (n *Node) Apply(ctx context.Context, c Command) (any, error) {
	b, err := EncodeCommand(c)
	if err != nil {
		return nil, err
	}
	return n.apply(ctx, b)
}

// ApplyRaw is Apply for a command already encoded with EncodeCommand, as a
// follower forwards it to the leader. The bytes are decoded and validated
// before they are proposed, so garbage never reaches the log.
func (n *Node) ApplyRaw(ctx context.Context, b []byte) (any, error) {
	if _, err := DecodeCommand(b); err != nil {
		return nil, err
	}
	return n.apply(ctx, b)
}

func (n *Node) apply(ctx context.Context, b []byte) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := n.requireLeader(); err != nil {
		return nil, err
	}
	f := n.raft.Apply(b, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return nil, err
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// enqueueTimeout turns ctx's deadline into raft's enqueue timeout (0 means
// none).
func enqueueTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Nanosecond
	}
	return 0
}

// wait waits for f or ctx and translates raft's errors into this package's.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	case errors.Is(err, raft.ErrEnqueueTimeout):
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("cluster: %w: %w", err, context.DeadlineExceeded)
	}
	return fmt.Errorf("cluster: %w", err)
}

// requireLeader returns nil on the leader, ErrShutdown after Shutdown and a
// *NotLeaderError otherwise.
func (n *Node) requireLeader() error {
	switch n.raft.State() {
	case raft.Leader:
		return nil
	case raft.Shutdown:
		return ErrShutdown
	}
	return n.notLeader()
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	if id == n.cfg.NodeID {
		// Leadership changed under our feet and raft still names us.
		id, addr = "", ""
	}
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Barrier waits until every entry committed before the call has been
// applied to this node's State. On the leader, a read from State after
// Barrier returns is linearizable: it sees every write acknowledged before
// Barrier was called. Leader only.
func (n *Node) Barrier(ctx context.Context) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.Barrier(enqueueTimeout(ctx)))
}

// VerifyLeader confirms, by contacting a quorum, that this node is still
// the leader. It is cheaper than Barrier but does not wait for the State
// to catch up with the commit index.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.VerifyLeader())
}

// AddVoter adds a voting member, or updates the address of an existing one,
// and waits for the configuration change to commit. Leader only. A new
// member joins with AddNonvoter instead: a voter counts toward the quorum
// from the moment it is added, before it holds any of the log.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx)))
}

// RemoveServer removes a member from the raft configuration. Removing the
// leader itself makes it step down once the change commits. Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx)))
}

// TransferLeadership hands leadership to the voter id, or to the most
// up-to-date voter when id is "", and waits until the transfer completes.
// Leader only. It fails with ErrNotFound when id is not a member and with
// ErrInvalidState when there is no one to hand over to: id is this node or
// a non-voter, or (id "") no other voter exists. Raft would refuse these
// too, but with errors of its own that say nothing to the caller.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	cf := n.raft.GetConfiguration()
	if err := n.wait(ctx, cf); err != nil {
		return err
	}
	if id == n.cfg.NodeID {
		return invalidState("node %s is already the leader", id)
	}
	if id == "" {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.NodeID {
				return transferFailed(id, n.wait(ctx, n.raft.LeadershipTransfer()))
			}
		}
		return invalidState("no other voter to hand leadership to")
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == id {
			if s.Suffrage != raft.Voter {
				return invalidState("node %q is not a voter", id)
			}
			return transferFailed(id, n.wait(ctx, n.raft.LeadershipTransferToServer(s.ID, s.Address)))
		}
	}
	return notFound("node %q", id)
}

// transferFailed says why a leadership transfer to id ("" for any voter)
// did not happen. Besides losing leadership or shutting down, raft fails a
// transfer when the target cannot be reached ("failed to make TimeoutNow
// RPC") or does not win an election in time ("leadership transfer
// timeout"): it is down, unreachable or far behind. The leader keeps
// leading, so that is a precondition the operator can fix, not an internal
// error.
func transferFailed(id string, err error) error {
	if err == nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrShutdown) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if id == "" {
		id = "the chosen voter"
	}
	return invalidState("leadership was not handed to %s (%s): is it running, reachable and caught up? This node still leads",
		id, strings.TrimPrefix(err.Error(), "cluster: "))
}

// Server is one member of the raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Stats is a snapshot of a node's raft status.
type Stats struct {
	ID   string
	Role string // Leader, Follower, Candidate or Shutdown
	Term uint64
	// LastContact is when a follower last heard from the leader; zero if
	// never, and not meaningful on the leader.
	LastContact  time.Time
	CommitIndex  uint64
	AppliedIndex uint64 // raft's, including entries the FSM does not see
	LastLogIndex uint64
	// FirstLogIndex is the oldest entry still in the log; entries before it
	// were compacted into a snapshot, so a peer that lacks them can only
	// catch up by installing the snapshot.
	FirstLogIndex uint64
	LeaderID      string
	LeaderAddr    string
	Servers       []Server // nil if the configuration could not be read
}

// Term is this node's current Raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// ProbePeer checks that the node id answers at Raft address addr, before
// it is made a member: a TLS handshake as this node's transport makes one,
// whose peer must present id's node certificate (ErrPeerIdentity when it
// presents another's, as another member would at another name of its own
// address). Without TLS (tests) a TCP connection is enough.
func (n *Node) ProbePeer(ctx context.Context, id, addr string) error {
	if n.stream != nil {
		return n.stream.probe(ctx, id, addr)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// admitsRaftPeer decides whether the node whose certificate names id may
// speak Raft to this one: not once it was removed from the cluster
// (removed_nodes.go). A node the cluster does not know yet, one joining,
// may: the leader adds a joiner to Raft before the joiner has any state.
func (n *Node) admitsRaftPeer(id string) bool {
	return !n.fsm.State().NodeRemoved(id)
}

// IsMember reports whether the latest cluster configuration this node
// knows names id (as voter or not).
func (n *Node) IsMember(id string) bool {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, sv := range cf.Configuration().Servers {
		if string(sv.ID) == id {
			return true
		}
	}
	return false
}

// Unlisted reports whether the latest cluster configuration this node
// knows names other members but not this node: it was removed, or (a
// joiner catching up) has not applied its admission yet.
func (n *Node) Unlisted() bool {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	servers := cf.Configuration().Servers
	return len(servers) > 0 && !slices.ContainsFunc(servers, func(sv raft.Server) bool { return string(sv.ID) == n.cfg.NodeID })
}

// HasPeers reports whether the latest cluster configuration this node
// knows names a member other than itself: whether "use another node" is
// advice a caller can follow.
func (n *Node) HasPeers() bool {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, sv := range cf.Configuration().Servers {
		if string(sv.ID) != n.cfg.NodeID {
			return true
		}
	}
	return false
}

// Stats reports the node's raft status.
// LogStoreFailing is when the last write to the node's Raft log store
// failed and its error, if it did and none has succeeded since (a full or
// read-only disk under DataDir); the error is nil otherwise.
func (n *Node) LogStoreFailing() (time.Time, error) { return n.logs.failing() }

func (n *Node) Stats() Stats {
	s := Stats{
		ID:           n.cfg.NodeID,
		Role:         n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastContact:  n.raft.LastContact(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
	}
	if first, err := n.store.FirstIndex(); err == nil {
		s.FirstLogIndex = first
	}
	s.LeaderID, s.LeaderAddr = n.Leader()
	if cf := n.raft.GetConfiguration(); cf.Error() == nil {
		for _, sv := range cf.Configuration().Servers {
			s.Servers = append(s.Servers, Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
		}
	}
	return s
}

// Snapshot returns a consistent copy of this node's state in the snapshot
// format, for backups, with the index and term of the last command it
// includes. It is taken from the FSM under its read lock and does not
// involve raft, so it works on any node; on a follower it may lag.
func (n *Node) Snapshot() (rc io.ReadCloser, index, term uint64, err error) {
	sf := n.fsm.capture()
	pr, pw := io.Pipe()
	go func() {
		// Ends when the reader has everything or is closed.
		pw.CloseWithError(writeSnapshot(pw, &sf))
	}()
	return pr, sf.Index, sf.Term, nil
}

// RestoreFromBackup replaces the cluster's state with a backup taken by
// Snapshot. It is for disaster recovery into a NEW cluster: open a single
// node with Bootstrap (with the domain key present in its HSM), wait for it
// to lead, restore, then add the other members. The restore is refused with ErrInvalidState if
// this cluster already holds keys or has a different domain key id, since
// the backup's wrapped keys are useless under another domain key. Leader
// only; the followers receive the restored state as a raft snapshot. If ctx
// ends first the restore may still complete. b comes from ReadBackup.
func (n *Node) RestoreFromBackup(ctx context.Context, b *Backup) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	// raft refuses a user restore until the log entries before it (the
	// bootstrap configuration, at least) have been applied.
	if err := n.Barrier(ctx); err != nil {
		return err
	}
	sf := b.file
	st := n.State()
	if len(st.Keys()) > 0 {
		return invalidState("this cluster already holds keys; restore a backup only into a new cluster")
	}
	if cur := st.DomainKeyID(); cur != "" && sf.Data.DomainKeyID != "" && cur != sf.Data.DomainKeyID {
		return invalidState("backup is of domain key %q, this cluster uses %q", sf.Data.DomainKeyID, cur)
	}
	// Raft stores the bytes as a snapshot and hands them to FSM.Restore,
	// which decodes them again: the state it installs is what b checked.
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: sf.Index, Term: sf.Term, Size: int64(len(b.raw))}
	done := make(chan error, 1)
	go func() { done <- n.raft.Restore(meta, bytes.NewReader(b.raw), enqueueTimeout(ctx)) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("cluster: restore: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops the reaper and raft and closes the transport and stores.
// It is idempotent. A node that is shut down cannot be reopened in place;
// Open a new one on the same DataDir.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		n.cancel()
		<-n.reaperDone
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft: %w", err))
		}
		n.trans.stopHeartbeats() // before the store closes under one
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transport: %w", err))
		}
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			n.shutdownErr = fmt.Errorf("cluster: shutdown: %w", err)
		}
	})
	return n.shutdownErr
}
