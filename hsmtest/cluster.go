package hsmtest

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Cluster is an in-process cluster of brokers for tests: every node has
// its own SoftHSM token, its own Raft node over mutual TLS on loopback and
// its own gRPC server with mutual TLS. Nodes after the first join through
// the real join protocol (join token, HSM-to-HSM domain key transport).
type Cluster struct {
	t     testing.TB
	dir   string
	CA    *pki.CA
	caPEM string
	Nodes []*Node
	// Tune adjusts each node's Raft configuration before it opens.
	Tune func(*cluster.Config)

	// Restore, if set, is a Backup snapshot the first node restores right
	// after it bootstraps, before anything else is written, checked as
	// RestoreAuth says (its authenticator, from the backup stream).
	Restore     []byte
	RestoreAuth broker.RestoreAuth

	// Audit, if set before nodes start, gives each node an audit log
	// (AuditPath) as the daemon does, and checkpoints its head every
	// AuditCheckpointInterval (default broker.AuditCheckpointInterval) or
	// AuditCheckpointLines lines (default: by time only).
	Audit                   bool
	AuditCheckpointInterval time.Duration
	AuditCheckpointLines    int
	// HeartbeatRefresh is how often each node rewrites its record
	// (default 10s).
	HeartbeatRefresh time.Duration
	// NodeIDs, if set, names the nodes in the order they are added
	// (default node1, node2, ...).
	NodeIDs []string
	// PromoteSettle is how long the leader waits, once a non-voter is
	// ready, before it makes it a voter (default 100ms); PromoteCheck is
	// how often it looks (default 50ms).
	PromoteSettle time.Duration
	PromoteCheck  time.Duration
	// BeforeStart, if set, runs before each node starts (to arm its
	// Faults, say).
	BeforeStart func(*Node)
	// OnJoinError, if set, gets a node's join error instead of failing the
	// test; the node is left with Raft and gRPC running, and no loops.
	OnJoinError func(*Node, error)

	linkMu  sync.RWMutex
	blocked map[[2]string]bool
}

// Partition cuts Raft traffic between every node of a and every node of b
// (both ways), live connections included.
func (c *Cluster) Partition(a, b []*Node) {
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	if c.blocked == nil {
		c.blocked = map[[2]string]bool{}
	}
	for _, x := range a {
		for _, y := range b {
			c.blocked[[2]string{x.ID, y.ID}] = true
			c.blocked[[2]string{y.ID, x.ID}] = true
		}
	}
}

// Heal restores every link.
func (c *Cluster) Heal() {
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	c.blocked = nil
}

func (c *Cluster) linkFilter(self string) cluster.LinkFilter {
	return func(peer string) bool {
		c.linkMu.RLock()
		defer c.linkMu.RUnlock()
		return !c.blocked[[2]string{self, peer}]
	}
}

// Node is one member of a test Cluster.
type Node struct {
	ID      string
	Index   int
	Token   Token
	Faults  *hsm.Faults
	DataDir string
	// GRPCAddr stays fixed across restarts.
	GRPCAddr string

	Partition *hsm.Partition
	Raft      *cluster.Node
	Service   *broker.Service
	// AuditLog is the node's audit log while it runs (nil when the
	// cluster keeps none, Audit).
	AuditLog *audit.Log
	// Daemon runs the node's own work: join, heartbeat, health, KMIP
	// activation dates, audit
	// checkpoints.
	Daemon *broker.Daemon

	c      *Cluster
	joined bool // has been a member: restarts reopen, never re-join
	// grpcLis holds GRPCAddr from AddNode until the first Start serves
	// on it, so that nothing else on the machine takes the port between.
	grpcLis net.Listener
	raftLis string
	grpc    *grpc.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running bool
}

// NewCluster starts an n-node cluster and waits until every node serves.
func NewCluster(t testing.TB, n int, tune ...func(*cluster.Config)) *Cluster {
	c := NewEmptyCluster(t, tune...)
	for i := 0; i < n; i++ {
		c.AddNode()
	}
	return c
}

// NewEmptyCluster makes a cluster with no nodes yet: its CA and directory.
// Add nodes with AddNode or AddNodeOnToken; the first one bootstraps.
func NewEmptyCluster(t testing.TB, tune ...func(*cluster.Config)) *Cluster {
	t.Helper()
	RequireSoftHSM(t)
	ca, err := pki.NewCA("hsmbroker test CA")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, dir: t.TempDir(), CA: ca}
	if len(tune) > 0 {
		c.Tune = tune[0]
	}
	c.caPEM = filepath.Join(c.dir, "ca.pem")
	if err := ca.Save(c.caPEM, filepath.Join(c.dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.StopAll)
	return c
}

// AddNode creates, starts and (for all but the first) joins a new node
// with a fresh token.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	return c.AddNodeOnToken(NewToken(c.t))
}

// AddNodeOnToken is AddNode on an existing token, such as one that holds
// the domain key of a cluster being restored.
func (c *Cluster) AddNodeOnToken(tok Token) *Node {
	c.t.Helper()
	i := len(c.Nodes)
	id := fmt.Sprintf("node%d", i+1)
	if i < len(c.NodeIDs) {
		id = c.NodeIDs[i]
	}
	nd := &Node{ID: id, Index: i, Token: tok, Faults: &hsm.Faults{},
		DataDir: filepath.Join(c.dir, id), c: c}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	nd.GRPCAddr, nd.grpcLis = lis.Addr().String(), lis
	c.Nodes = append(c.Nodes, nd)
	nd.Start()
	return nd
}

// TLSFiles issues a certificate for a client principal with a role and
// returns the paths of the CA, certificate and key files.
func (c *Cluster) TLSFiles(principal string, role authz.Role) (caFile, certFile, keyFile string) {
	c.t.Helper()
	iss, err := c.CA.IssueClient(principal, role, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	certFile = filepath.Join(c.dir, principal+".pem")
	keyFile = filepath.Join(c.dir, principal+"-key.pem")
	if err := iss.Save(certFile, keyFile); err != nil {
		c.t.Fatal(err)
	}
	return c.caPEM, certFile, keyFile
}

// ClientTLS is a client TLS configuration for principal with role.
func (c *Cluster) ClientTLS(principal string, role authz.Role) *tls.Config {
	c.t.Helper()
	ca, cert, key := c.TLSFiles(principal, role)
	cfg, err := pki.ClientTLSConfig(cert, key, ca, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// Dial connects to node i as principal (role admin).
func (c *Cluster) Dial(i int, principal string) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(c.Nodes[i].GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(c.ClientTLS(principal, authz.RoleAdmin))))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// DialAsNode connects to node i with the node certificate of from, as
// the cluster's nodes call each other (ForwardCommand, ReadIndex).
func (c *Cluster) DialAsNode(from *Node, i int) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(c.Nodes[i].GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(from.nodeTLS())))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// DialAsNewNode connects to node i with a node certificate of the cluster
// CA for id, a node the cluster need not know: what a node about to join
// holds.
func (c *Cluster) DialAsNewNode(id string, i int) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(c.Nodes[i].GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(c.nodeTLS(id))))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (nd *Node) nodeTLS() *tls.Config { return nd.c.nodeTLS(nd.ID) }

// nodeTLS is the TLS configuration of a node certificate for id.
func (c *Cluster) nodeTLS(id string) *tls.Config {
	c.t.Helper()
	cert := filepath.Join(c.dir, id+"-node.pem")
	key := filepath.Join(c.dir, id+"-node-key.pem")
	iss, err := c.CA.IssueServer(id, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := iss.Save(cert, key); err != nil {
		c.t.Fatal(err)
	}
	cfg, err := pki.PeerTLSConfig(cert, key, c.caPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// Start opens the node's partition, Raft node and gRPC server; a new node
// (no Raft state yet) bootstraps if it is the first, else joins. It
// returns once the node serves and is a voter (a node joins as a
// non-voter and is promoted once it has caught up).
func (nd *Node) Start() {
	nd.c.t.Helper()
	if nd.Launch() {
		nd.WaitServing(nd.c.t)
		nd.WaitVoter(nd.c.t)
	}
}

// WaitVoter waits until the node is a voter in its own configuration and
// in that of every running node whose configuration names it.
func (nd *Node) WaitVoter(t testing.TB) {
	t.Helper()
	WaitUntil(t, nd.ID+" to be a voter", 30*time.Second, func() bool {
		for _, o := range nd.c.Nodes {
			if !o.running {
				continue
			}
			named, voter := false, false
			for _, s := range o.Raft.Stats().Servers {
				if s.ID == nd.ID {
					named, voter = true, s.Voter
				}
			}
			if (o == nd || named) && !voter {
				return false
			}
		}
		return true
	})
}

// Launch is Start without waiting for the node to serve, for nodes that
// are not to (one removed while it was down, say). It returns false when
// a join error went to OnJoinError, which leaves the node as it says.
func (nd *Node) Launch() bool {
	c := nd.c
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if c.BeforeStart != nil {
		c.BeforeStart(nd)
	}
	cfg := nd.Token.Config()
	cfg.Faults = nd.Faults
	p, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("%s: open partition: %v", nd.ID, err)
	}
	nd.Partition = p
	first := nd.Index == 0
	if first {
		if ok, _ := p.HasDomainKey(ctx); !ok {
			if err := p.CreateDomainKey(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	tlsCfg := nd.nodeTLS()
	raftAddr := nd.raftLis
	if raftAddr == "" {
		raftAddr = "127.0.0.1:0"
	}
	rc := cluster.Config{NodeID: nd.ID, RaftAddr: raftAddr, DataDir: nd.DataDir, Bootstrap: first, TLS: tlsCfg,
		Logger: QuietLogger(), Observer: broker.Observer(p), ReapInterval: 100 * time.Millisecond,
		LinkFilter: c.linkFilter(nd.ID), RaftLogLevel: raftLogLevel()}
	if c.Tune != nil {
		c.Tune(&rc)
	}
	node, err := cluster.Open(rc)
	if err != nil {
		t.Fatalf("%s: open raft: %v", nd.ID, err)
	}
	nd.Raft = node
	nd.raftLis = node.Addr()
	nd.AuditLog = nd.openAuditLog()
	svc, err := broker.New(broker.Config{Node: node, Partition: p, PeerTLS: tlsCfg, Logger: QuietLogger(), RequireCaughtUp: true,
		AuditLog: nd.AuditLog, Peers: c.seeds(nd)})
	if err != nil {
		t.Fatal(err)
	}
	nd.Service = svc
	srv, hs := svc.NewGRPCServer(tlsCfg)
	dm := broker.NewDaemon(svc, broker.DaemonConfig{GRPCAddr: nd.GRPCAddr, Health: hs, HealthInterval: 50 * time.Millisecond,
		HeartbeatCheck: 100 * time.Millisecond, HeartbeatRefresh: cmp.Or(c.HeartbeatRefresh, 10*time.Second), AuditCheckpointInterval: c.AuditCheckpointInterval,
		PromoteCheck: cmp.Or(c.PromoteCheck, 50*time.Millisecond), PromoteSettle: cmp.Or(c.PromoteSettle, 100*time.Millisecond)})
	nd.Daemon = dm
	nd.grpc = srv
	lis := nd.listenGRPC()
	nd.wg.Add(1)
	go func() { defer nd.wg.Done(); _ = srv.Serve(lis) }()
	rctx, rcancel := context.WithCancel(context.Background())
	nd.cancel = rcancel
	nd.running = true

	isNew := !nd.joined && !first
	nd.joined = true
	if first {
		if err := node.WaitForLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if c.Restore != nil {
			b, err := cluster.ReadBackup(c.Restore)
			if err != nil {
				t.Fatalf("%s: restore: %v", nd.ID, err)
			}
			if err := dm.RestoreBackup(ctx, b, c.RestoreAuth); err != nil {
				t.Fatalf("%s: restore: %v", nd.ID, err)
			}
			c.Restore = nil
		}
		if err := dm.EnsureDomainKeyCheck(ctx); err != nil {
			t.Fatalf("%s: domain key check: %v", nd.ID, err)
		}
	} else if isNew {
		tok, err := c.joinToken(ctx, nd.ID)
		if err != nil {
			t.Fatalf("%s: join token: %v", nd.ID, err)
		}
		if err := dm.Join(ctx, broker.JoinConfig{Seeds: c.seeds(nd), Token: tok, GRPCAddr: nd.GRPCAddr}); err != nil {
			if c.OnJoinError != nil {
				c.OnJoinError(nd, err)
				return false
			}
			t.Fatalf("%s: join: %v", nd.ID, err)
		}
	} else if has, err := p.HasDomainKey(ctx); err == nil && !has {
		// A member whose HSM lacks the domain key (its first join stopped
		// after the leader added it) completes the join with a new token,
		// as hsmbrokerd serve does with its join list.
		tok, err := c.joinToken(ctx, nd.ID)
		if err != nil {
			t.Fatalf("%s: join token: %v", nd.ID, err)
		}
		if err := dm.Join(ctx, broker.JoinConfig{Seeds: c.seeds(nd), Token: tok, GRPCAddr: nd.GRPCAddr, Complete: true}); err != nil {
			t.Fatalf("%s: complete the join: %v", nd.ID, err)
		}
	}
	nd.wg.Add(4)
	go func() { defer nd.wg.Done(); dm.WatchHealth(rctx) }()
	go func() { defer nd.wg.Done(); dm.Heartbeat(rctx) }()
	go func() { defer nd.wg.Done(); dm.WatchKMIPActivation(rctx) }()
	go func() { defer nd.wg.Done(); dm.PromoteNonvoters(rctx) }()
	if c.Audit {
		nd.wg.Add(1)
		go func() { defer nd.wg.Done(); dm.CheckpointAudit(rctx) }()
	}
	return true
}

// raftLogLevel hides raft's own error logs, which failover tests provoke
// by design, unless HSMBROKER_TEST_LOG=debug.
func raftLogLevel() slog.Level {
	if os.Getenv("HSMBROKER_TEST_LOG") == "debug" {
		return slog.LevelDebug
	}
	return slog.LevelError + 4
}

// seeds are the gRPC addresses of the running nodes but nd.
func (c *Cluster) seeds(nd *Node) []string {
	var seeds []string
	for _, o := range c.Nodes {
		if o != nd && o.running {
			seeds = append(seeds, o.GRPCAddr)
		}
	}
	return seeds
}

// joinToken asks the cluster (any running node) for a join token as admin,
// bound to the node id that will use it.
func (c *Cluster) joinToken(ctx context.Context, nodeID string) (string, error) {
	for i, nd := range c.Nodes {
		if !nd.running || !nd.joined {
			continue
		}
		conn := c.Dial(i, "admin")
		resp, err := pb.NewClusterServiceClient(conn).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: nodeID})
		if err == nil {
			return resp.GetToken(), nil
		}
	}
	return "", fmt.Errorf("no node issued a join token")
}

// WaitServing waits until the node reports itself ready.
func (nd *Node) WaitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, _ := nd.Service.Healthy(); ok {
			return
		}
		if time.Now().After(deadline) {
			_, why := nd.Service.Healthy()
			t.Fatalf("%s not serving: %s", nd.ID, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the node down cleanly (or, as far as the cluster can tell,
// kills it: its Raft and gRPC stop answering at once).
func (nd *Node) Stop() {
	if !nd.running {
		return
	}
	nd.running = false
	nd.cancel()
	nd.grpc.Stop()
	_ = nd.Raft.Shutdown()
	nd.wg.Wait()
	nd.Service.Close()
	_ = nd.Partition.Close()
}

// Wipe stops the node, empties its data directory and gives it a new
// token, as an operator brings back a removed node: its next Start joins
// the cluster anew, with the same id.
func (nd *Node) Wipe() {
	t := nd.c.t
	t.Helper()
	nd.Stop()
	if err := os.RemoveAll(nd.DataDir); err != nil {
		t.Fatal(err)
	}
	nd.Token = NewToken(t)
	nd.joined = false
}

// StopGRPC stops only the node's gRPC server: its Raft goes on, so the
// others still follow it if it leads, but nothing reaches its API. Stop
// stops the rest.
func (nd *Node) StopGRPC() { nd.grpc.Stop() }

// listenGRPC returns the listener reserved by AddNode on the first start;
// on a restart it listens on GRPCAddr again, retrying for a while if
// something else on the machine (an outgoing connection's port) holds it.
func (nd *Node) listenGRPC() net.Listener {
	t := nd.c.t
	t.Helper()
	if lis := nd.grpcLis; lis != nil {
		nd.grpcLis = nil
		return lis
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		lis, err := net.Listen("tcp", nd.GRPCAddr)
		if err == nil {
			return lis
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("%s: listen %s: %v", nd.ID, nd.GRPCAddr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Running reports whether the node is up.
func (nd *Node) Running() bool { return nd.running }

// StopAll stops every node.
func (c *Cluster) StopAll() {
	for _, nd := range c.Nodes {
		nd.Stop()
	}
}

// Leader waits for a leader among the running nodes and returns it.
func (c *Cluster) Leader(t testing.TB) *Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, nd := range c.Nodes {
			if nd.running && nd.Raft.IsLeader() {
				return nd
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Followers returns the running nodes that are not the leader (Leader),
// in the order of c.Nodes.
func (c *Cluster) Followers(t testing.TB) []*Node {
	t.Helper()
	leader := c.Leader(t)
	var fs []*Node
	for _, nd := range c.Nodes {
		if nd.running && nd != leader {
			fs = append(fs, nd)
		}
	}
	return fs
}

// WaitConverged waits until every running node has the same state digest
// and returns it.
func (c *Cluster) WaitConverged(t testing.TB) [32]byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var first [32]byte
		same, seen := true, false
		for _, nd := range c.Nodes {
			if !nd.running {
				continue
			}
			d := nd.Raft.State().Digest()
			if !seen {
				first, seen = d, true
			} else if d != first {
				same = false
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatal("nodes did not converge to the same state")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
