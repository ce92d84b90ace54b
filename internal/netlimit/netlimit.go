// Package netlimit bounds what a client that has not yet authenticated can
// hold of the daemon's network servers (gRPC, Raft, KMIP, the AWS KMS
// endpoint, the TDE key endpoint, metrics and health), and what it can
// make them write to the log:
//
//   - connections: Listener holds at most Limits.MaxConns at once (and
//     one more it accepted while it waits for a slot); further clients
//     wait in the kernel's accept queue, costing the process nothing. With
//     every slot held, a new client's arrival closes the HTTP connection
//     idle between requests the longest, so idle keep-alive connections
//     cannot hold every slot; MaxConnsPerSource keeps one address from
//     holding them all. Wrap the TCP listener under TLS, so that handshakes
//     count too. Without it every connection holds a file descriptor, and
//     a node out of descriptors refuses every client, on every port;
//   - time: NewHTTPServer's server closes a connection that takes longer
//     than ReadHeaderTimeout to send its headers (or finish its TLS
//     handshake), ReadTimeout to send its whole request, WriteTimeout to be
//     answered, or stays idle longer than IdleTimeout (the gRPC server has
//     its own: broker.NewGRPCServer bounds the handshake);
//   - header bytes: MaxHeaderBytes;
//   - log lines: LogLimiter bounds the lines of events anyone can cause
//     without authenticating (failed handshakes, refused connections and
//     requests); NewHTTPServer puts net/http's own through one.
//
// Bodies are the handlers' to bound: each knows what its requests hold.
// The package uses the standard library only.
package netlimit

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Limits.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConns          = 1024
	DefaultMaxHeaderBytes    = 64 << 10
)

// Limits bound what a client can hold of a server. Zero values mean the
// defaults.
type Limits struct {
	// ReadHeaderTimeout bounds the time to read a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to read a whole request, body included.
	// At the default a 1 MiB body needs at least 35 KiB/s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of a request's headers to
	// the end of its answer; it must leave room for ReadTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once (Listener).
	MaxConns int
	// MaxConnsPerSource bounds the connections of one source address
	// among them (0: none beyond MaxConns): a connection from a source
	// that holds this many is closed as soon as it is accepted, without
	// taking a slot. On a server where a client that has not proved who
	// it is can hold a connection for long (the AWS endpoint reads a body
	// for up to ReadTimeout once the headers name a known access key),
	// it keeps one address from taking every slot.
	MaxConnsPerSource int
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

// WithDefaults returns l with every zero field set to its default, and a
// WriteTimeout shorter than ReadTimeout raised to leave room for an
// answer.
func (l Limits) WithDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultReadTimeout)
	def(&l.WriteTimeout, DefaultWriteTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	if l.WriteTimeout < l.ReadTimeout {
		l.WriteTimeout = l.ReadTimeout + DefaultWriteTimeout - DefaultReadTimeout
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return l
}

// NewHTTPServer returns a server for h with the limits' timeouts and
// header bound. Serve it on a listener wrapped by Listener with the same
// limits. What net/http logs of a connection before any handler runs (a
// failed TLS handshake, one line a connection) goes to log at Warn through
// a LogLimiter, whose pending summary Shutdown writes.
func NewHTTPServer(h http.Handler, l Limits, log *slog.Logger) *Server {
	l = l.WithDefaults()
	lim := NewLogLimiter(log, "HTTP connection error")
	srv := &Server{Server: &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes,
		ErrorLog: lim.ErrorLog(slog.LevelWarn), ConnState: trackIdle,
		// "OPTIONS *" goes to the handler too, which answers it in its
		// front's error format and audits it, as it does every request;
		// net/http would answer 200 itself, unseen.
		DisableGeneralOptionsHandler: true}}
	srv.OnShutdown(lim.Close)
	return srv
}

// DropUnreadBody has the server close w's connection after the answer
// without reading the rest of the request body. Even with "Connection:
// close", net/http reads up to 256 KiB of a body the handler left unread
// after the answer, which a client sending a byte a second stretches to
// the read timeout, holding a connection slot; a read deadline already
// passed ends that read at once. Call it once the handler will read no
// more of the body.
func DropUnreadBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// Server is an http.Server whose Shutdown, once the server has stopped,
// runs the functions given to OnShutdown before it returns (net/http's own
// RegisterOnShutdown starts them in goroutines, which a process on its way
// out may never run): the summaries of lines its limiters left out.
type Server struct {
	*http.Server
	onShutdown []func()
}

// OnShutdown adds f to what Shutdown runs.
func (s *Server) OnShutdown(f func()) { s.onShutdown = append(s.onShutdown, f) }

// Shutdown shuts the server down as http.Server.Shutdown does, then runs
// the OnShutdown functions in the order given.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.Server.Shutdown(ctx)
	for _, f := range s.onShutdown {
		f()
	}
	return err
}

// Listener returns a listener that has at most l.MaxConns of its
// connections open at once: Accept waits while that many are open, and a
// connection's slot is freed when it is closed. With l.MaxConnsPerSource
// set, a connection from an address that holds that many is closed as
// soon as it is accepted.
func Listener(lis net.Listener, l Limits) net.Listener {
	l = l.WithDefaults()
	return &limitListener{Listener: lis, slots: make(chan struct{}, l.MaxConns), done: make(chan struct{}),
		conns: map[*limitConn]struct{}{}, perSource: l.MaxConnsPerSource, sources: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	perSource int // Limits.MaxConnsPerSource
	mu        sync.Mutex
	conns     map[*limitConn]struct{} // open, for closeLongestIdle
	sources   map[netip.Addr]int      // open connections by source, while MaxConnsPerSource is set
}

// admitSource counts a new connection of src, unless src holds
// MaxConnsPerSource already.
func (l *limitListener) admitSource(src netip.Addr) bool {
	if l.perSource <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources[src] >= l.perSource {
		return false
	}
	l.sources[src]++
	return true
}

// sourceOf is the address c comes from; one that is not TCP counts as the
// zero address.
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Accept takes the next connection once it has a slot for it. With every
// slot held, it first closes the connection that has been idle between two
// requests the longest, if any is (an HTTP keep-alive connection; see
// NewHTTPServer): otherwise anyone who sent one request on each of
// MaxConns connections would hold every slot for IdleTimeout, and could
// renew them. A client reopens a closed idle connection, as HTTP allows a
// server to close one at any time. So the listener holds at most MaxConns
// connections, and one more accepted while it waits for a slot.
func (l *limitListener) Accept() (net.Conn, error) {
	var c net.Conn
	var src netip.Addr
	for {
		var err error
		if c, err = l.Listener.Accept(); err != nil {
			return nil, err
		}
		if src = sourceOf(c); l.admitSource(src) {
			break
		}
		_ = c.Close() // its source holds MaxConnsPerSource already
	}
	select {
	case l.slots <- struct{}{}:
	default:
		l.closeLongestIdle()
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			l.releaseSource(src)
			_ = c.Close()
			return nil, net.ErrClosed
		}
	}
	lc := &limitConn{Conn: c, l: l, src: src}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
}

// closeLongestIdle closes the connection idle between requests the
// longest, if one is.
func (l *limitListener) closeLongestIdle() {
	l.mu.Lock()
	var oldest *limitConn
	var since int64
	for c := range l.conns {
		if t := c.idleSince.Load(); t != 0 && (oldest == nil || t < since) {
			oldest, since = c, t
		}
	}
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Close()
	}
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// releaseSource uncounts a connection of src.
func (l *limitListener) releaseSource(src netip.Addr) {
	if l.perSource <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources[src] <= 1 {
		delete(l.sources, src)
	} else {
		l.sources[src]--
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	src  netip.Addr
	once sync.Once
	// idleSince is when the HTTP server last saw the connection go idle
	// between requests (UnixNano), 0 while it is not (trackIdle).
	idleSince atomic.Int64
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.releaseSource(c.src)
		<-c.l.slots
	})
	return err
}

// trackIdle is an http.Server's ConnState hook: it marks the listener's
// connections idle between requests, so that Accept can close one when
// every slot is held. A TLS connection is followed to the one it wraps.
func trackIdle(c net.Conn, state http.ConnState) {
	for {
		if lc, ok := c.(*limitConn); ok {
			if state == http.StateIdle {
				lc.idleSince.Store(time.Now().UnixNano())
			} else {
				lc.idleSince.Store(0)
			}
			return
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = w.NetConn()
	}
}
