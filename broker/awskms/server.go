package awskms

import (
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// What a client can hold of the endpoint before it is authenticated is
// bounded at three levels:
//
//   - connections: LimitListener accepts at most ServerLimits.MaxConns at
//     once; further clients wait in the kernel's accept queue, costing the
//     process nothing;
//   - time: NewServer's server closes a connection that takes longer than
//     ReadHeaderTimeout to send its headers, ReadTimeout to send its whole
//     request, WriteTimeout to be answered, or stays idle longer than
//     IdleTimeout;
//   - memory: the Handler checks a request's Authorization header (form,
//     known access key, signing time, signed headers) before reading its
//     body, and holds at most Config.MaxInFlightBodyBytes of bodies across
//     all requests; a request that would exceed it is answered with
//     ThrottlingException without its body being read.

// Defaults of ServerLimits.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConns          = 1024
	DefaultMaxHeaderBytes    = 64 << 10
)

// ServerLimits bound what a client can hold of the endpoint's HTTP server.
// Zero values mean the defaults.
type ServerLimits struct {
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
	// MaxConns bounds the connections served at once (LimitListener).
	MaxConns int
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

func (l ServerLimits) withDefaults() ServerLimits {
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

// NewServer returns an http.Server for h with the limits' timeouts. Serve
// it on a listener wrapped by LimitListener with the same limits.
func NewServer(h http.Handler, l ServerLimits, errorLog *log.Logger) *http.Server {
	l = l.withDefaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes, ErrorLog: errorLog}
}

// LimitListener returns a listener that has at most l.MaxConns of its
// connections open at once: Accept waits while that many are open. Wrap
// the TCP listener, under TLS, so that handshakes are bounded too.
func LimitListener(lis net.Listener, l ServerLimits) net.Listener {
	l = l.withDefaults()
	return &limitListener{Listener: lis, slots: make(chan struct{}, l.MaxConns), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
