package kmip

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// header is a TTLV request header announcing a body of n bytes.
func header(n uint32) []byte {
	h := make([]byte, ttlv.HeaderSize)
	binary.BigEndian.PutUint32(h[0:4], uint32(tagRequestMessage)<<8|uint32(ttlv.TypeStructure))
	binary.BigEndian.PutUint32(h[4:8], n)
	return h
}

// closedWithin reports whether the server closes conn within wait.
func closedWithin(conn net.Conn, wait time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadAll(conn)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A client that sends a request's header and not the body it announces is
// closed MessageTimeout after its first byte, long before IdleTimeout,
// whether the header comes alone or after a whole request in the same
// TLS record; a client that waits before it starts a request, or sends
// one in pieces within the bound, is served.
func TestMessageTimeout(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	e := startKMIPWith(t, hsmtest.NewCluster(t, 1), 0, func(c *Config) {
		c.IdleTimeout, c.MessageTimeout = 30*time.Second, time.Second
	})
	// A header alone.
	c := e.dial(t, "app", authz.RoleUser)
	if _, err := c.conn.Write(header(4096)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !closedWithin(c.conn, 5*time.Second) {
		t.Fatal("a connection that sent only a header is still open after 5s")
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))

	// A whole Query and a header in one write: the header is already read
	// by TLS with the Query when the server waits for the next request.
	c = e.dial(t, "app", authz.RoleUser)
	q, err := request(version{1, 4}, op{opQuery, nil}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(append(q, header(4096)...)); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ttlv.ReadMessage(c.conn, 0); err != nil {
		t.Fatalf("the Query: %v", err)
	}
	if !closedWithin(c.conn, 5*time.Second) {
		t.Fatal("a connection that sent a header after a request is still open after 5s")
	}

	// The start of a TLS record that never ends: the bytes are on the
	// wire, TLS gives the server none of them.
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cfg := e.c.ClientTLS("app", authz.RoleUser)
	cfg.ServerName = "127.0.0.1"
	tc := tls.Client(raw, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := query1(tc); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write([]byte{23, 3, 3, 1, 0, 0}); err != nil { // application data, 256 bytes announced, 1 sent
		t.Fatal(err)
	}
	if !closedWithin(raw, 5*time.Second) {
		t.Fatal("a connection that sent part of a TLS record is still open after 5s")
	}

	// Idle longer than MessageTimeout between requests, then a request in
	// two pieces within it: served.
	c = e.dial(t, "app", authz.RoleUser)
	time.Sleep(1500 * time.Millisecond)
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(q[:ttlv.HeaderSize]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := c.conn.Write(q[ttlv.HeaderSize:]); err != nil {
		t.Fatal(err)
	}
	if _, err := ttlv.ReadMessage(c.conn, 0); err != nil {
		t.Fatalf("a request after an idle wait, in two pieces: %v", err)
	}
}

// One identity holds at most MaxConnsPerIdentity authenticated
// connections: the next is closed after its handshake, while another
// identity still connects, and a closed connection gives its room back.
func TestConnectionsPerIdentity(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	e := startKMIPWith(t, hsmtest.NewCluster(t, 1), 0, func(c *Config) { c.MaxConns = 8 })
	var mine []*tls.Conn
	for i := range 2 {
		c := e.dial(t, "app", authz.RoleUser)
		_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := query1(c.conn); err != nil {
			t.Fatalf("connection %d of app: %v", i, err)
		}
		mine = append(mine, c.conn)
	}
	over := e.dial(t, "app", authz.RoleUser)
	_ = over.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := query1(over.conn); err == nil {
		t.Fatal("a third connection of app was served; the share is 2 of 8")
	}
	if err := e.queryWithin(t, "other", 5*time.Second); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	mine[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := e.queryWithin(t, "app", 5*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one of its connections closed, app still cannot connect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Requests refused below the batch item, which close the connection, are
// audited with the client's principal: a connection past the server's
// bound, a message that is not a structure, one that announces more than
// the server takes, and one begun and not finished in time. A client that
// only waits between requests is not.
func TestConnectionRefusalsAudited(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	e := startKMIPWith(t, c, 0, func(c *Config) {
		c.MaxConns, c.MaxConnsPerIdentity, c.MessageTimeout = 2, 2, 500*time.Millisecond
	})
	refusals := func(principal, op string) int {
		n := 0
		for _, l := range kmipAuditLines(t, c, 0) {
			if l.Principal == principal && l.Operation == op && l.Decision == "deny" {
				n++
			}
		}
		return n
	}
	// Two connections held; a third, of another client, is past the
	// server's bound.
	for range 2 {
		h := e.dial(t, "holder", authz.RoleUser)
		_ = h.conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := query1(h.conn); err != nil {
			t.Fatal(err)
		}
		defer h.conn.Close()
	}
	over := e.dial(t, "late", authz.RoleUser)
	_ = over.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := query1(over.conn); err == nil {
		t.Fatal("a connection past the server's bound was served")
	}
	hsmtest.WaitUntil(t, "the refused connection's audit line", 5*time.Second, func() bool { return refusals("late", "kmip:Connect") == 1 })
	if n := refusals("holder", "kmip:Connect"); n != 0 {
		t.Fatalf("%d connection refusals audited for the client that was served", n)
	}
}

// The same for messages, with room for the connections.
func TestMessageRefusalsAudited(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	e := startKMIPWith(t, c, 0, func(c *Config) { c.MessageTimeout = 500 * time.Millisecond })
	count := func() int {
		n := 0
		for _, l := range kmipAuditLines(t, c, 0) {
			if l.Principal == "app" && l.Operation == "kmip:Message" && l.Decision == "deny" && l.Result == "InvalidMessage" {
				n++
			}
		}
		return n
	}
	notStructure := header(16)
	binary.BigEndian.PutUint32(notStructure[0:4], uint32(tagRequestMessage)<<8|uint32(ttlv.TypeInteger))
	for i, tc := range []struct {
		name string
		send []byte
	}{
		{"not a structure", notStructure},
		{"too large", header(1 << 30)},
		{"a header alone", header(4096)},
	} {
		u := e.dial(t, "app", authz.RoleUser)
		if _, err := u.conn.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		if !closedWithin(u.conn, 5*time.Second) {
			t.Fatalf("%s: the connection is still open", tc.name)
		}
		hsmtest.WaitUntil(t, tc.name+" audited", 5*time.Second, func() bool { return count() == i+1 })
	}
	// A request cut off by the client closing the connection.
	cut := e.dial(t, "app", authz.RoleUser)
	if _, err := cut.conn.Write(append(header(4096), 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	cut.conn.Close()
	hsmtest.WaitUntil(t, "a request cut off audited", 5*time.Second, func() bool { return count() == 4 })
	// Idle past the message timeout, between requests: not a refusal.
	u := e.dial(t, "app", authz.RoleUser)
	_ = u.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := query1(u.conn); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := query1(u.conn); err != nil {
		t.Fatalf("a query after an idle second: %v", err)
	}
	u.conn.Close()
	time.Sleep(200 * time.Millisecond)
	if n := count(); n != 4 {
		t.Fatalf("%d message refusals audited, want 4", n)
	}
}
