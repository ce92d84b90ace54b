package netlimit_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// serve serves h on a loopback listener wrapped by Listener with l, and
// returns its address and the number of connections accepted so far.
func serve(t *testing.T, l netlimit.Limits) (string, *atomic.Int64) {
	addr, accepted, _ := serveCounting(t, l)
	return addr, accepted
}

// serveCounting is serve that also counts the times a connection went idle
// between requests, as the listener sees it.
func serveCounting(t *testing.T, l netlimit.Limits) (string, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted, idle atomic.Int64
	srv := netlimit.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }), l, nil)
	track := srv.ConnState // NewHTTPServer's own, which the listener needs
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		track(c, s)
		switch s {
		case http.StateNew:
			accepted.Add(1)
		case http.StateIdle:
			idle.Add(1)
		}
	}
	lis := netlimit.Listener(tcp, l)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String(), &accepted, &idle
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// get sends one keep-alive GET on c and reads its answer within d.
func get(c net.Conn, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestListenerBoundsConnections: with MaxConns connections open and none
// idle between requests (here, none has sent a request yet), the next
// client is not served (it waits, unaccepted or held by Accept) until one of
// them closes.
func TestListenerBoundsConnections(t *testing.T) {
	t.Parallel()
	addr, accepted := serve(t, netlimit.Limits{MaxConns: 3, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute})
	held := []net.Conn{dial(t, addr), dial(t, addr), dial(t, addr)}
	waitUntil(t, "three connections to be accepted", func() bool { return accepted.Load() == 3 })
	waiting := dial(t, addr) // the kernel completes the TCP handshake
	if err := get(waiting, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a fourth connection was served while three were open: %v", err)
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections served, want 3", n)
	}
	// The client closes one: its slot goes to the waiting connection.
	_ = held[0].Close()
	waitUntil(t, "the waiting connection to be served", func() bool { return accepted.Load() == 4 })
}

// TestIdleConnectionsYieldTheirSlots: a keep-alive connection idle between
// requests holds its slot only while no one else needs it. With every slot
// held by one, a new client's request is served at once, and the
// connection idle the longest is closed. Before, one request on each of
// MaxConns connections held every slot for IdleTimeout (2 minutes in the
// daemon), and a MariaDB could not reach its key endpoint.
func TestIdleConnectionsYieldTheirSlots(t *testing.T) {
	t.Parallel()
	addr, _, idle := serveCounting(t, netlimit.Limits{MaxConns: 2, IdleTimeout: time.Minute})
	first, second := dial(t, addr), dial(t, addr)
	for i, c := range []net.Conn{first, second} {
		if err := get(c, 10*time.Second); err != nil {
			t.Fatalf("connection %d within the bound: %v", i, err)
		}
		// The client has its answer before the server marks the
		// connection idle: wait for that, so that first is idle longest.
		waitUntil(t, "the connection to go idle", func() bool { return idle.Load() == int64(i+1) })
	}
	if err := get(dial(t, addr), 10*time.Second); err != nil {
		t.Fatalf("a third client while two connections idle: %v", err)
	}
	_ = first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the connection idle the longest was not closed: %v", err)
	}
	if err := get(second, 10*time.Second); err != nil {
		t.Fatalf("the connection idle the shorter time: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestServerClosesSilentAndIdleConnections: a connection that sends no
// headers is closed after ReadHeaderTimeout, an idle keep-alive after
// IdleTimeout, and each frees its slot.
func TestServerClosesSilentAndIdleConnections(t *testing.T) {
	t.Parallel()
	addr, accepted := serve(t, netlimit.Limits{MaxConns: 2, ReadHeaderTimeout: 200 * time.Millisecond,
		IdleTimeout: 200 * time.Millisecond})
	silent := dial(t, addr)
	idle := dial(t, addr)
	if err := get(idle, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "idle": idle} {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("the %s connection was not closed by the server: %v", name, err)
		}
	}
	// Both slots are free again.
	for i := range 2 {
		if err := get(dial(t, addr), 10*time.Second); err != nil {
			t.Fatalf("connection %d after the slots were freed: %v", i, err)
		}
	}
	if n := accepted.Load(); n != 4 {
		t.Fatalf("%d connections accepted, want 4", n)
	}
}

// TestListenerClose: Close ends an Accept that is waiting for a slot.
func TestListenerClose(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := netlimit.Listener(tcp, netlimit.Limits{MaxConns: 1})
	dial(t, lis.Addr().String())
	first, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	done := make(chan error, 1)
	go func() { _, err := lis.Accept(); done <- err }()
	_ = lis.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Accept still waiting for a slot after Close")
	}
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	d := netlimit.Limits{}.WithDefaults()
	want := netlimit.Limits{ReadHeaderTimeout: netlimit.DefaultReadHeaderTimeout, ReadTimeout: netlimit.DefaultReadTimeout,
		WriteTimeout: netlimit.DefaultWriteTimeout, IdleTimeout: netlimit.DefaultIdleTimeout, MaxConns: netlimit.DefaultMaxConns,
		MaxHeaderBytes: netlimit.DefaultMaxHeaderBytes}
	if d != want {
		t.Fatalf("zero Limits with defaults: %+v, want %+v", d, want)
	}
	// A write timeout shorter than the read timeout leaves no time to
	// answer a request read at the last moment: it is raised.
	l := netlimit.Limits{ReadTimeout: 90 * time.Second, WriteTimeout: time.Second}.WithDefaults()
	if l.WriteTimeout <= l.ReadTimeout {
		t.Fatalf("WriteTimeout %v not raised above ReadTimeout %v", l.WriteTimeout, l.ReadTimeout)
	}
	if s := netlimit.NewHTTPServer(nil, netlimit.Limits{MaxHeaderBytes: 100}, nil); s.MaxHeaderBytes != 100 || s.IdleTimeout != netlimit.DefaultIdleTimeout {
		t.Fatalf("NewHTTPServer: MaxHeaderBytes %d, IdleTimeout %v", s.MaxHeaderBytes, s.IdleTimeout)
	}
}

// TestOptionsStarReachesTheHandler: net/http answers "OPTIONS *" with 200
// itself unless told not to; a front's handler must see it, to answer it in
// its own format and audit it.
func TestOptionsStarReachesTheHandler(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := netlimit.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(r.Method + " " + r.RequestURI))
	}), netlimit.Limits{}, nil)
	go func() { _ = srv.Serve(tcp) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := dial(t, tcp.Addr().String())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || string(b) != "OPTIONS *" {
		t.Fatalf("OPTIONS *: %d %q, want the handler's 404 \"OPTIONS *\"", resp.StatusCode, b)
	}
}

// TestListenerBoundsConnectionsPerSource: with MaxConnsPerSource set, an
// address that holds that many connections has its next one closed at
// once, without a slot; other addresses are served meanwhile, and the
// address is served again once one of its connections closes.
func TestListenerBoundsConnectionsPerSource(t *testing.T) {
	t.Parallel()
	addr, accepted := serve(t, netlimit.Limits{MaxConns: 8, MaxConnsPerSource: 2})
	from := func(local string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a1, a2 := from("127.0.0.1"), from("127.0.0.1")
	for i, c := range []net.Conn{a1, a2} {
		if err := get(c, 10*time.Second); err != nil {
			t.Fatalf("connection %d of 127.0.0.1: %v", i+1, err)
		}
	}
	if err := get(from("127.0.0.1"), 10*time.Second); err == nil {
		t.Fatal("a third connection of 127.0.0.1 was served with MaxConnsPerSource 2")
	}
	if err := get(from("127.0.0.2"), 10*time.Second); err != nil {
		t.Fatalf("127.0.0.2 while 127.0.0.1 holds its share: %v", err)
	}
	_ = a1.Close()
	waitUntil(t, "127.0.0.1 served again after one of its connections closed", func() bool {
		return get(from("127.0.0.1"), 10*time.Second) == nil
	})
	if n := accepted.Load(); n < 4 {
		t.Fatalf("%d connections reached the server, want at least 4", n)
	}
}
