package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeTLS issues a node certificate for 127.0.0.1, good for server and
// client authentication, and returns the node's raft TLS configuration.
func (ca *testCA) nodeTLS(t *testing.T, id string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
	}
}

func tlsNode(t *testing.T, id string, bootstrap bool, cfg *tls.Config) *Node {
	t.Helper()
	c := testConfig(t, id, bootstrap)
	c.TLS = cfg
	return openNode(t, c)
}

func TestTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("TLS cluster in -short mode")
	}
	ca := newTestCA(t, "hsmbroker test cluster CA")
	foreign := newTestCA(t, "someone else's CA")

	a := tlsNode(t, "a", true, ca.nodeTLS(t, "a"))
	b := tlsNode(t, "b", false, ca.nodeTLS(t, "b"))
	c := tlsNode(t, "c", false, ca.nodeTLS(t, "c"))
	x := tlsNode(t, "x", false, foreign.nodeTLS(t, "x"))
	waitLeader(t, a)
	ctx := testContext(t, 20*time.Second)
	for _, n := range []*Node{b, c} {
		if err := a.AddVoter(ctx, n.ID(), n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range baseSetup() {
		mustApply(t, a, cmd)
	}
	waitSameDigest(t, a, b, c)

	// The foreign node is let into the configuration (by a majority that
	// does not need it), yet no RPC ever reaches it.
	failed := make(chan raft.Observation, 16)
	obs := raft.NewObserver(failed, false, func(o *raft.Observation) bool {
		f, ok := o.Data.(raft.FailedHeartbeatObservation)
		return ok && f.PeerID == "x"
	})
	a.raft.RegisterObserver(obs)
	defer a.raft.DeregisterObserver(obs)
	if err := a.AddVoter(ctx, "x", x.Addr()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, &SetDomainKeyID{ID: "dk"})
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("leader never failed to reach the foreign node")
	}
	waitSameDigest(t, a, b, c)
	if id, _ := x.Leader(); id != "" {
		t.Fatalf("foreign node knows leader %q", id)
	}
	if len(x.State().Keys()) != 0 || x.State().DomainKeyID() != "" {
		t.Fatal("foreign node received state")
	}
	if err := a.RemoveServer(ctx, "x"); err != nil {
		t.Fatal(err)
	}
}

func TestTLSStreamLayerHandshakes(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	foreign := newTestCA(t, "foreign CA")
	listen := func(cfg *tls.Config) *tlsStreamLayer {
		t.Helper()
		s, err := newTLSStreamLayer("127.0.0.1:0", nil, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		go func() {
			for {
				conn, err := s.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					conn.Write([]byte{1}) // completes the handshake first
				}()
			}
		}()
		return s
	}
	good1, good2 := listen(ca.nodeTLS(t, "1")), listen(ca.nodeTLS(t, "2"))
	bad := listen(foreign.nodeTLS(t, "bad"))
	addr := func(s *tlsStreamLayer) raft.ServerAddress { return raft.ServerAddress(s.Addr().String()) }

	conn, err := good1.Dial(addr(good2), 5*time.Second)
	if err != nil {
		t.Fatalf("member to member: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil {
		t.Fatalf("member to member read: %v", err)
	}
	conn.Close()

	if conn, err := good1.Dial(addr(bad), 5*time.Second); err == nil {
		conn.Close()
		t.Error("member accepted a foreign server certificate")
	}
	// The foreign client rejects the member's certificate, and the member
	// would reject the foreign client's.
	if conn, err := bad.Dial(addr(good1), 5*time.Second); err == nil {
		conn.Close()
		t.Error("foreign node completed a handshake with a member")
	}
	// A client that trusts the cluster CA but holds a foreign certificate
	// is refused by the server. (In TLS 1.3 the client may finish its side
	// of the handshake first; the refusal shows on the first read.)
	spoof := foreign.nodeTLS(t, "spoof")
	spoof.RootCAs = ca.pool
	spoof.MinVersion, spoof.NextProtos = tls.VersionTLS13, []string{RaftALPN}
	if conn, err := tls.Dial("tcp", good1.Addr().String(), spoof); err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, rerr := conn.Read(buf)
		conn.Close()
		if rerr == nil {
			t.Error("server served a client with a foreign certificate")
		}
	}
	// A client with no certificate at all is refused by the server.
	noCert := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13, NextProtos: []string{RaftALPN}}
	if conn, err := tls.Dial("tcp", good1.Addr().String(), noCert); err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, rerr := conn.Read(buf)
		conn.Close()
		if rerr == nil {
			t.Error("server served a client without a certificate")
		}
	}
	// Plain TCP gets nothing.
	if conn, err := net.Dial("tcp", good1.Addr().String()); err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte("hello raft"))
		n, _ := conn.Read(buf)
		conn.Close()
		if n == 1 && buf[0] == 1 {
			t.Error("server answered plain TCP")
		}
	}
}

// TestRaftPortBoundsUnprovenConnections: a connection that has not
// proved a node certificate is closed after the handshake timeout, and at
// most maxRaftConns are accepted at once; a member still gets through once
// the silent ones are gone.
func TestRaftPortBoundsUnprovenConnections(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "cluster CA")
	s, err := newTLSStreamLayer("127.0.0.1:0", nil, ca.nodeTLS(t, "1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.handshakeTimeout = 4 * time.Second
	var accepted, failed atomic.Int64
	go func() {
		for {
			conn, err := s.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { // as raft's handleConn: read until an error, then close
				defer conn.Close()
				// A failed handshake reads as io.EOF, which raft does not log.
				if _, err := io.Copy(io.Discard, conn); err == nil {
					failed.Add(1)
				}
			}()
		}
	}()
	addr := s.Addr().String()
	var silent []net.Conn
	for range maxRaftConns + 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		silent = append(silent, c)
	}
	waitFor(t, 30*time.Second, "the bound's worth of connections to be accepted", func() bool { return accepted.Load() == maxRaftConns })
	// The ten beyond the bound wait in the kernel's queue until the first
	// handshakes time out, seconds from now.
	time.Sleep(200 * time.Millisecond)
	if n := accepted.Load(); n != maxRaftConns {
		t.Fatalf("%d connections accepted at once, want at most %d", n, maxRaftConns)
	}
	// Every one of them is closed by the server, the ten that waited too.
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("silent connection %d not closed by the server: %v", i, err)
		}
	}
	waitFor(t, 30*time.Second, "the handshakes to fail", func() bool { return failed.Load() == maxRaftConns+10 })
	if n := accepted.Load(); n != maxRaftConns+10 {
		t.Fatalf("%d connections accepted, want %d", n, maxRaftConns+10)
	}
	// A member's connection, accepted now, is served past the timeout.
	member, err := newTLSStreamLayer("127.0.0.1:0", nil, ca.nodeTLS(t, "2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { member.Close() })
	conn, err := member.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatalf("member after the silent connections: %v", err)
	}
	defer conn.Close()
	time.Sleep(s.handshakeTimeout + 500*time.Millisecond)
	if _, err := conn.Write([]byte("still here")); err != nil {
		t.Fatalf("member's connection after the handshake timeout: %v", err)
	}
	if n := failed.Load(); n != maxRaftConns+10 {
		t.Fatalf("%d connections failed, want %d: the member's was closed", n, maxRaftConns+10)
	}
}

func TestRaftTLSConfigChecks(t *testing.T) {
	ca := newTestCA(t, "ca")
	good := ca.nodeTLS(t, "n")
	for name, mutate := range map[string]func(*tls.Config){
		"no certificate": func(c *tls.Config) { c.Certificates = nil },
		"no client CAs":  func(c *tls.Config) { c.ClientCAs = nil },
		"no root CAs":    func(c *tls.Config) { c.RootCAs = nil },
		"skip verify":    func(c *tls.Config) { c.InsecureSkipVerify = true },
	} {
		c := good.Clone()
		mutate(c)
		if _, _, err := raftTLSConfigs(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	server, client, err := raftTLSConfigs(good)
	if err != nil {
		t.Fatal(err)
	}
	if server.ClientAuth != tls.RequireAndVerifyClientCert || server.MinVersion != tls.VersionTLS13 || client.MinVersion != tls.VersionTLS13 {
		t.Fatalf("server %v/%x client %x", server.ClientAuth, server.MinVersion, client.MinVersion)
	}
	if good.ClientAuth != tls.NoClientCert {
		t.Fatal("caller's config was modified")
	}
}

// A node removed from the cluster keeps a valid certificate, but no node
// takes Raft traffic from it any more: a removed node that sends a
// follower an AppendEntries of a higher term (as a leader would, or as an
// attacker holding its certificate could, to take over the log) is cut
// off, and the follower's term and leader do not move. A node admitted
// again through a join is taken back.
func TestRemovedNodeCannotSpeakRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("TLS cluster in -short mode")
	}
	ca := newTestCA(t, "hsmbroker test cluster CA")
	a := tlsNode(t, "a", true, ca.nodeTLS(t, "a"))
	b := tlsNode(t, "b", false, ca.nodeTLS(t, "b"))
	c := tlsNode(t, "c", false, ca.nodeTLS(t, "c"))
	waitLeader(t, a)
	ctx := testContext(t, 20*time.Second)
	for _, n := range []*Node{b, c} {
		if err := a.AddVoter(ctx, n.ID(), n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	mustApply(t, a, &SetDomainKeyID{ID: "dk"})
	waitSameDigest(t, a, b, c)

	// asC is a Raft transport with c's certificate, as anyone holding it
	// could run; appendAs sends b an AppendEntries of term (its current
	// one and 10 if 0).
	asC := func() (*raft.NetworkTransport, net.Addr) {
		t.Helper()
		stream, err := newTLSStreamLayer("127.0.0.1:0", nil, ca.nodeTLS(t, "c"), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 1, Timeout: 2 * time.Second,
			Logger: hclog.NewNullLogger()})
		t.Cleanup(func() { _ = trans.Close() })
		return trans, stream.Addr()
	}
	appendAs := func(trans *raft.NetworkTransport, self net.Addr, term uint64) (uint64, error) {
		t.Helper()
		if term == 0 {
			term = b.raft.CurrentTerm() + 10
		}
		var resp raft.AppendEntriesResponse
		err := trans.AppendEntries("b", raft.ServerAddress(b.Addr()), &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ID: []byte("c"), Addr: []byte(self.String())}, Term: term}, &resp)
		return term, err
	}
	appendAsC := func() (uint64, error) {
		t.Helper()
		trans, self := asC()
		return appendAs(trans, self, 0)
	}
	// A connection opened while c is a member, left idle in b's read
	// (an AppendEntries of an old term changes nothing on b).
	open, openAddr := asC()
	if _, err := appendAs(open, openAddr, 1); err != nil {
		t.Fatalf("c, still a member: %v", err)
	}
	if err := a.RemoveServer(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, &RemoveNode{ID: "c"})
	waitSameDigest(t, a, b)
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	termBefore := b.raft.CurrentTerm()
	if term, err := appendAsC(); err == nil {
		t.Fatalf("b took an AppendEntries of term %d from the removed node c", term)
	}
	if got := b.raft.CurrentTerm(); got != termBefore {
		t.Fatalf("b's term moved from %d to %d", termBefore, got)
	}
	if id, _ := b.Leader(); id != "a" {
		t.Fatalf("b follows %q, want a", id)
	}
	// The connection opened before the removal is cut too.
	if term, err := appendAs(open, openAddr, 0); err == nil {
		t.Fatalf("b took an AppendEntries of term %d from the removed node c on a connection opened before", term)
	}
	if got := b.raft.CurrentTerm(); got != termBefore {
		t.Fatalf("b's term moved from %d to %d through the connection opened before the removal", termBefore, got)
	}

	// Admitted again (what the leader applies when c joins anew), c's
	// certificate is taken again.
	mustApply(t, a, &UpsertNode{Node: NodeInfo{ID: "c", RaftAddr: "127.0.0.1:1"}, Admit: true})
	waitSameDigest(t, a, b)
	if _, err := appendAsC(); err != nil {
		t.Fatalf("b refused the readmitted node c: %v", err)
	}
}

// A removed node that keeps opening Raft connections gets one log line at
// once and then one a minute, with the count, per node: not a line for
// each connection on every member for as long as it runs.
func TestRemovedRefusalsLoggedOnceAMinute(t *testing.T) {
	var lb logBuffer
	r := newRemovedRefusals(slog.New(slog.NewTextHandler(&lb, nil)))
	r.limit.window = 300 * time.Millisecond // a minute, in the daemon
	for range 90 {
		r.refused("c", "127.0.0.1:1")
	}
	r.refused("d", "127.0.0.1:2")
	lines := func() []string { return strings.Split(strings.TrimSpace(lb.String()), "\n") }
	if got := lines(); len(got) != 2 || !strings.Contains(got[0], "peer_node=c refused=1") || !strings.Contains(got[1], "peer_node=d refused=1") {
		t.Fatalf("want c's and d's first refusals at once, and nothing more:\n%s", lb.String())
	}
	// When the window ends, c's other 89 are counted in one line, though
	// c tries no more.
	deadline := time.Now().Add(10 * time.Second)
	for len(lines()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no line for the refusals held back:\n%s", lb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * r.limit.window)
	got := lines()
	if len(got) != 3 || !strings.Contains(got[2], "peer_node=c refused=89 within=300ms") {
		t.Fatalf("want one line counting c's 89 other refusals:\n%s", lb.String())
	}
}
