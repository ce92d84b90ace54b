package kmip

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// silentConns opens n TCP connections to addr from the local address
// local (any when nil) that never start TLS, and closes them when the
// test ends.
func silentConns(t *testing.T, addr string, local net.IP, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("silent connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// closedByServer counts the connections the server has closed within
// wait: a read that ends in EOF or a reset rather than at its deadline.
func closedByServer(conns []net.Conn, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n
}

// queryWithin dials with a client certificate and sends a Query within
// limit; it returns why not.
func (e *env) queryWithin(t *testing.T, principal string, limit time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	d := tls.Dialer{Config: e.c.ClientTLS(principal, authz.RoleUser)}
	nc, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	return query1(nc.(*tls.Conn))
}

// query1 sends one Query on conn and checks that it succeeded.
func query1(conn *tls.Conn) error {
	b, err := request(version{1, 4}, op{opQuery, nil}).Encode()
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	msg, err := ttlv.ReadMessage(conn, 0)
	if err != nil {
		return err
	}
	resp, err := ttlv.Decode(msg)
	if err != nil {
		return err
	}
	bi, _ := resp.Child(tagBatchItem)
	if st, ok := bi.Child(tagResultStatus); !ok || uint32(st.Int) != statusSuccess {
		return errors.New("the Query failed")
	}
	return nil
}

// More plain TCP connections than the bound on connections, none of which
// ever starts TLS, do not keep a client with a certificate out: it
// completes a request within a few seconds. Only MaxHandshakes of them are
// held, the others closed at once.
func TestUnauthenticatedConnectionsDoNotTakeClientSlots(t *testing.T) {
	e := newEnv(t)
	silent := silentConns(t, e.addr, nil, DefaultMaxConns+DefaultMaxHandshakes)

	start := time.Now()
	if err := e.queryWithin(t, "app", 5*time.Second); err != nil {
		t.Fatalf("a client with a certificate, after %d silent connections: %v (after %v)", len(silent), err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("the client was served in %v", time.Since(start).Round(time.Millisecond))

	// At most MaxHandshakes unauthenticated connections are held; the
	// client's own made one more room, so every other one is closed.
	if got := closedByServer(silent, time.Second); got < len(silent)-DefaultMaxHandshakes {
		t.Fatalf("%d of %d silent connections closed, want at least %d", got, len(silent), len(silent)-DefaultMaxHandshakes)
	}
	e.srv.mu.Lock()
	held := len(e.srv.handshaking)
	e.srv.mu.Unlock()
	if held > DefaultMaxHandshakes {
		t.Fatalf("%d connections in their handshake, the bound is %d", held, DefaultMaxHandshakes)
	}
	// Connections that completed their handshake count against MaxConns
	// only: a second client still gets through.
	if err := e.queryWithin(t, "app2", 5*time.Second); err != nil {
		t.Fatalf("a second client: %v", err)
	}
}

// A flood of silent connections from one host closes that host's own
// connections, not a slower handshake from another host.
func TestHandshakeFloodClosesTheFloodersOwn(t *testing.T) {
	e := newEnv(t)
	// The client's connection, silent for now, from 127.0.0.1.
	mine := silentConns(t, e.addr, net.IPv4(127, 0, 0, 1), 1)[0]
	// The flood, from 127.0.0.2 (the loopback network on Linux).
	flood := silentConns(t, e.addr, net.IPv4(127, 0, 0, 2), 3*DefaultMaxHandshakes)
	if got := closedByServer(flood, time.Second); got < len(flood)-DefaultMaxHandshakes {
		t.Fatalf("%d of %d flood connections closed, want at least %d", got, len(flood), len(flood)-DefaultMaxHandshakes)
	}
	_ = mine.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if _, err := mine.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("the other host's connection, during the flood: %v", err)
	}
	_ = mine.SetDeadline(time.Now().Add(5 * time.Second))
	cfg := e.c.ClientTLS("app", authz.RoleUser)
	cfg.ServerName = "127.0.0.1"
	tc := tls.Client(mine, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after the flood: %v", err)
	}
	if err := query1(tc); err != nil {
		t.Fatalf("request after the flood: %v", err)
	}
}
