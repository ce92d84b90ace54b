package hsmtest

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/hsmbroker/hsmbroker/cluster"
)

// ClosedAddr is a loopback address where nothing listens: a connection to
// it is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// SilentRaftListener listens on a loopback port as node id's Raft listener
// would up to the end of the TLS handshake (id's node certificate of the
// cluster CA, the Raft ALPN), and then reads what it is sent and never
// answers: a hung node's Raft port, as a leader sees it. It returns the
// address; the listener and its connections close when the test ends.
func (c *Cluster) SilentRaftListener(id string) string {
	c.t.Helper()
	cfg := c.nodeTLS(id).Clone()
	cfg.NextProtos = []string{cluster.RaftALPN}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	var wg sync.WaitGroup
	c.t.Cleanup(func() { _ = lis.Close(); wg.Wait() })
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, conn := range conns {
				_ = conn.Close()
			}
		}()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn)
			tc := tls.Server(conn, cfg)
			wg.Go(func() { _, _ = io.Copy(io.Discard, tc) })
		}
	})
	return lis.Addr().String()
}
