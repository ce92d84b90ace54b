package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// RaftALPN is the application protocol raft connections negotiate, so that
// a raft port answering a gRPC client (or the reverse) fails the handshake
// instead of exchanging garbage.
const RaftALPN = "hsmbroker-raft/1"

// What a client without a node certificate can hold of the raft port:
// at most maxRaftConns connections at once (more wait in the kernel's
// accept queue; a cluster of five nodes uses a few dozen), each for at
// most raftHandshakeTimeout before its handshake has proved a node
// certificate. raft reads an accepted connection without a deadline, so
// before these bounds a silent TCP connection held a file descriptor for
// as long as the client kept it open.
const (
	maxRaftConns         = 256
	raftHandshakeTimeout = 10 * time.Second
)

// tlsStreamLayer is a raft.StreamLayer over mutually authenticated TLS 1.3.
// Both ends present a certificate from the cluster CA and verify the other's
// against it: a peer without one cannot send or receive raft RPCs.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	client    *tls.Config
	filter    LinkFilter
	// admit decides whether an accepted connection's peer may speak Raft
	// to this node (Node.admitsRaftPeer); nil admits every node
	// certificate.
	admit LinkFilter
	// handshakeTimeout bounds an accepted connection's handshake
	// (raftHandshakeTimeout; tests shorten it before the first Accept).
	handshakeTimeout time.Duration
	// handshakeLog writes, within bounds, why an accepted connection's
	// handshake failed. raft would log each at ERROR ("failed to decode
	// incoming command"), one line for every connection anyone makes.
	handshakeLog *netlimit.LogLimiter
	// removedLog logs the refused connections of removed nodes.
	removedLog *removedRefusals
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// raftTLSConfigs derives the listener and dialer configurations from the
// node's tls.Config, which must hold the node certificate (usable for both
// server and client authentication), ClientCAs and RootCAs.
func raftTLSConfigs(cfg *tls.Config) (server, client *tls.Config, err error) {
	if len(cfg.Certificates) == 0 && (cfg.GetCertificate == nil || cfg.GetClientCertificate == nil) {
		return nil, nil, errors.New("cluster: raft TLS config has no certificate")
	}
	if cfg.ClientCAs == nil {
		return nil, nil, errors.New("cluster: raft TLS config has no ClientCAs; peers must be verified")
	}
	if cfg.RootCAs == nil {
		// Without it the system roots would be trusted: any public CA
		// could mint a cluster member.
		return nil, nil, errors.New("cluster: raft TLS config has no RootCAs")
	}
	if cfg.InsecureSkipVerify {
		return nil, nil, errors.New("cluster: raft TLS config must verify peers")
	}
	server = cfg.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.MinVersion = tls.VersionTLS13
	server.NextProtos = []string{RaftALPN}
	server.VerifyConnection = requireNodeCertificate(server.VerifyConnection)
	client = cfg.Clone()
	client.MinVersion = tls.VersionTLS13
	client.NextProtos = []string{RaftALPN}
	return server, client, nil
}

// requireNodeCertificate refuses raft peers that present a client
// certificate of the cluster CA rather than a node certificate: the CA also
// issues certificates to users, who must not be able to speak raft (and so
// rewrite the replicated state). Node certificates, unlike client ones,
// are valid for server authentication. next, if set, runs too.
func requireNodeCertificate(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("cluster: raft peer presented no certificate")
		}
		node := false
		for _, u := range cs.PeerCertificates[0].ExtKeyUsage {
			node = node || u == x509.ExtKeyUsageServerAuth
		}
		if !node {
			return fmt.Errorf("cluster: raft peer %q presented a client certificate; only node certificates may join raft",
				cs.PeerCertificates[0].Subject.CommonName)
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

// newTLSStreamLayer listens on bind. advertise, if not nil, is the address
// given to peers; otherwise the listener's own address, which must then be
// a specific IP.
func newTLSStreamLayer(bind string, advertise net.Addr, cfg *tls.Config, log *slog.Logger) (*tlsStreamLayer, error) {
	server, client, err := raftTLSConfigs(cfg)
	if err != nil {
		return nil, err
	}
	tcp, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen on %s: %w", bind, err)
	}
	// Bounded before TLS, so that handshakes count too.
	ln := tls.NewListener(netlimit.Listener(tcp, netlimit.Limits{MaxConns: maxRaftConns}), server)
	s := &tlsStreamLayer{ln: ln, advertise: advertise, client: client, handshakeTimeout: raftHandshakeTimeout,
		handshakeLog: netlimit.NewLogLimiter(log, "Raft TLS handshake failed"),
		removedLog:   newRemovedRefusals(log)}
	if err := checkAdvertisable(s.Addr()); err != nil {
		ln.Close()
		return nil, err
	}
	return s, nil
}

// checkAdvertisable refuses addresses peers could not dial, as raft's own
// TCP transport does.
func checkAdvertisable(a net.Addr) error {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("cluster: raft address %s is not a TCP address", a)
	}
	if ta.IP == nil || ta.IP.IsUnspecified() {
		return fmt.Errorf("cluster: raft address %s is not advertisable; set AdvertiseAddr", a)
	}
	return nil
}

// Dial connects and completes the handshake within timeout. The server's
// certificate is verified against RootCAs and the host in address (or
// ServerName, when the configuration sets one that every node certificate
// carries).
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(address), s.client)
	if err != nil {
		return nil, err
	}
	if err := speaksRaft(conn, string(address)); err != nil {
		conn.Close()
		return nil, err
	}
	if s.filter != nil {
		rc := &raftConn{Conn: conn, allow: s.filter, dialed: true, peer: peerNodeID(conn)}
		if err := rc.check(); err != nil {
			return nil, err
		}
		return rc, nil
	}
	return conn, nil
}

// speaksRaft refuses a connection that did not negotiate the Raft ALPN.
func speaksRaft(conn *tls.Conn, address string) error {
	if p := conn.ConnectionState().NegotiatedProtocol; p != RaftALPN {
		return fmt.Errorf("cluster: %s speaks %q, not raft", address, p)
	}
	return nil
}

// probe dials address as Dial does, within ctx, and checks that the node
// answering presents the node certificate of id.
func (s *tlsStreamLayer) probe(ctx context.Context, id string, address string) error {
	d := tls.Dialer{Config: s.client}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return err
	}
	defer c.Close()
	conn := c.(*tls.Conn)
	if err := speaksRaft(conn, address); err != nil {
		return err
	}
	if got := peerNodeID(conn); got != id {
		return fmt.Errorf("%w: it presents the node certificate of %.64q, not of %q", ErrPeerIdentity, got, id)
	}
	return nil
}

// Accept returns the next connection. Its handshake happens on first use,
// in raft's per-connection goroutine, so a slow or hostile client cannot
// stall the accept loop, and within raftHandshakeTimeout.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &raftConn{Conn: c.(*tls.Conn), allow: s.filter, admit: s.admit, timeout: s.handshakeTimeout, log: s.handshakeLog,
		removedLog: s.removedLog}, nil
}

// Close stops listening.
func (s *tlsStreamLayer) Close() error {
	s.handshakeLog.Close()
	return s.ln.Close()
}

// Addr is the advertised address.
func (s *tlsStreamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// LinkFilter says whether this node may exchange Raft traffic with the
// peer whose certificate names peerID (its common name, the node id). It is
// consulted on every read and write, so flipping it cuts live connections
// as well as new ones: tests use it to partition the network. nil allows
// every link.
type LinkFilter func(peerID string) bool

// removedRefusals logs the Raft connections refused because their node
// was removed: a node's first at once, then at most one line a minute per
// node, with the count of the minute, written when the minute ends. A
// removed node that keeps campaigning opens a connection to every member
// about once a second for as long as it runs; a line for each is noise.
// Only removed ids reach it, so it tracks at most MaxRemovedNodes nodes.
type removedRefusals struct {
	log   *slog.Logger
	limit *repeatLimiter[string]
}

// removedRefusalEvery is how often a line per removed node may be written.
const removedRefusalEvery = time.Minute

func newRemovedRefusals(log *slog.Logger) *removedRefusals {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &removedRefusals{log: log, limit: newRepeatLimiter[string](removedRefusalEvery, 1, MaxRemovedNodes)}
}

func (r *removedRefusals) refused(node, addr string) {
	line := func(n int) {
		r.log.Warn("Raft connection refused: the peer's node was removed from the cluster",
			"peer", addr, "peer_node", node, "refused", n, "within", r.limit.window.String())
	}
	if r.limit.allow(node, line) {
		line(1)
	}
}

// errLinkDown is what a filtered connection reports.
var errLinkDown = errors.New("cluster: link to peer is down (filtered)")

// raftConn is one raft connection: every accepted one, and a dialed one
// when a LinkFilter is set. An accepted connection completes its handshake
// on first use, within timeout. With a LinkFilter, every read and write
// asks it about the peer, known once the handshake has run; so does, on an
// accepted connection, admit.
type raftConn struct {
	*tls.Conn
	allow LinkFilter // nil allows every peer
	admit LinkFilter // accepted connections: nil admits every peer
	peer  string     // the peer's node id, once the handshake has run
	// dialed: the handshake ran in Dial, and raft sets the connection's
	// deadlines itself from then on.
	dialed  bool
	timeout time.Duration
	log     *netlimit.LogLimiter // of an accepted connection's failed handshake
	// removedLog: of an accepted connection refused for a removed peer.
	removedLog *removedRefusals
	once       sync.Once
	err        error
}

// handshake completes an accepted connection's handshake once, within
// timeout; raft sets no deadline on accepted connections, so clearing it
// afterwards takes none of raft's away. A failed handshake reads as
// io.EOF from then on.
func (c *raftConn) handshake() error {
	if c.dialed {
		return nil
	}
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(c.timeout))
		err := c.Conn.Handshake()
		_ = c.Conn.SetDeadline(time.Time{})
		if err != nil {
			// Logged here, within bounds; raft logs nothing of io.EOF.
			c.log.Log(context.Background(), slog.LevelWarn, "Raft connection refused: TLS handshake failed",
				slog.String("peer", c.Conn.RemoteAddr().String()), slog.Any("err", err))
			c.err = io.EOF
			return
		}
		c.peer = peerNodeID(c.Conn)
	})
	return c.err
}

// peerNodeID is the node id of a connection's verified peer: its node
// certificate's common name.
func peerNodeID(c *tls.Conn) string {
	if st := c.ConnectionState(); len(st.PeerCertificates) > 0 {
		return st.PeerCertificates[0].Subject.CommonName
	}
	return ""
}

func (c *raftConn) check() error {
	if err := c.handshake(); err != nil {
		return err
	}
	if c.allow != nil && !c.allow(c.peer) {
		_ = c.Conn.Close()
		return errLinkDown
	}
	if c.admit != nil && !c.admit(c.peer) {
		// Logged here, within bounds; like a failed handshake it reads as
		// io.EOF, of which raft logs nothing.
		c.removedLog.refused(c.peer, c.Conn.RemoteAddr().String())
		_ = c.Conn.Close()
		return io.EOF
	}
	return nil
}

// Read checks the peer before it reads and again once bytes came: a read
// that was already waiting when the peer was removed must not hand raft
// what the removed node sent after.
func (c *raftConn) Read(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if cerr := c.check(); cerr != nil {
			return 0, cerr
		}
	}
	return n, err
}

func (c *raftConn) Write(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
