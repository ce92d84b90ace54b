// Package kmip serves KMIP (TTLV over mutual TLS) from the broker core. It
// is a thin front: it decodes each batch item once, begins one audited
// request in the core for it, calls one method of the core's KMIP type
// (broker.KMIPObjects, broker/kmip_*.go), and encodes the answer in the
// protocol version the request came in.
package kmip

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// DefaultWrappingKey is the alias of the KMS key that seals KMIP objects.
const DefaultWrappingKey = "alias/kmip"

// Config configures a Server.
type Config struct {
	Service *broker.Service
	// WrappingKey names the symmetric KMS key that seals every object's
	// material (DefaultWrappingKey when empty).
	WrappingKey string
	// TLS must require and verify client certificates from the cluster CA
	// (ServerTLS builds one).
	TLS *tls.Config
	Log *slog.Logger
	// MaxMessage bounds a request, header included (ttlv.MaxMessage when 0).
	MaxMessage int
	// IdleTimeout closes a connection that sends nothing for this long
	// (2 minutes when 0); a request must arrive whole within it.
	IdleTimeout time.Duration
	// MaxConns bounds the connections of authenticated clients, those that
	// have completed the TLS handshake with a client certificate (256 when
	// 0). A connection counts against it only once its handshake is done.
	MaxConns int
	// MaxHandshakes bounds the connections still in their TLS handshake
	// (64 when 0). When a new connection finds that many, the one that has
	// waited longest among those of the source address with the most is
	// closed, so that clients that prove nothing cannot keep out the ones
	// that do.
	MaxHandshakes int
	// MaxObjectsPerOwner is the most KMIP objects one client (the
	// principal of its certificate, which owns what it makes) may own
	// (DefaultMaxObjectsPerOwner when 0): Register, Create and Create Key
	// Pair are refused once it owns that many, before anything is made,
	// and again when the object is applied (broker.KMIPObjects.
	// WithOwnerShare), so that one client cannot fill
	// cluster.MaxKMIPObjects alone, not even with concurrent requests.
	MaxObjectsPerOwner int
	// MessageTimeout bounds the time from a request's first byte to its
	// last (DefaultMessageTimeout when 0); the connection is closed after
	// it. IdleTimeout bounds the wait for the first byte.
	MessageTimeout time.Duration
	// MaxConnsPerIdentity bounds the authenticated connections of one
	// principal (that of its client certificate, broker.PrincipalFromCert;
	// MaxConns/4 when 0), so that one client cannot take every one of
	// MaxConns.
	MaxConnsPerIdentity int
}

// Server serves KMIP on listeners.
type Server struct {
	cfg  Config
	core *broker.KMIPObjects
	log  *slog.Logger
	// Lines that a client without a certificate can cause, one a
	// connection, are bounded (netlimit.LogLimiter).
	refusedLog, handshakeLog *netlimit.LogLimiter

	mu    sync.Mutex
	lns   map[net.Listener]struct{}
	conns map[net.Conn]struct{}
	// handshaking holds the connections still in their TLS handshake; a
	// connection leaves it when its handshake ends or when it is closed to
	// make room (MaxHandshakes).
	handshaking map[net.Conn]handshake
	accepted    uint64 // connections accepted, for handshake.seq
	closed      bool
	wg          sync.WaitGroup
	// slots bounds authenticated connections (MaxConns).
	slots chan struct{}
	// perIdentity counts the authenticated connections of each principal
	// (MaxConnsPerIdentity); guarded by mu.
	perIdentity map[string]int
	// held, when set, says why the server cannot act yet (Hold).
	held atomic.Pointer[hold]
}

// hold is a Hold: its reason, and a channel Release closes.
type hold struct {
	reason   string
	released chan struct{}
}

// HoldWait is how long an item waits for Release before it is answered
// General Failure.
const HoldWait = 5 * time.Second

// Hold keeps the server from acting until Release: an item other than
// Query and Discover Versions waits up to HoldWait for Release and is then
// answered General Failure naming reason ("retry"). A node serves KMIP from
// its start, held until it can work (ready, its wrapping key confirmed), so
// that a client that connects early has its handshake done and its
// requests served once the node can, or a clear answer, instead of
// waiting in the listen queue. Hold while held changes nothing.
func (s *Server) Hold(reason string) {
	s.held.CompareAndSwap(nil, &hold{reason: reason, released: make(chan struct{})})
}

// Release ends Hold and lets the items that wait for it go on.
func (s *Server) Release() {
	if h := s.held.Swap(nil); h != nil {
		close(h.released)
	}
}

// waitHeld waits, while the server is held, for Release or HoldWait or
// ctx, and returns the hold's reason if it is still held.
func (s *Server) waitHeld(ctx context.Context) (string, bool) {
	h := s.held.Load()
	if h == nil {
		return "", false
	}
	t := time.NewTimer(HoldWait)
	defer t.Stop()
	select {
	case <-h.released:
		return "", false
	case <-t.C:
	case <-ctx.Done():
	}
	return h.reason, true
}

// handshake is a connection in its TLS handshake: the host it comes from
// and its rank among the accepted connections.
type handshake struct {
	host string
	seq  uint64
}

// ServerTLS is the TLS configuration of a KMIP listener: TLS 1.2 or later,
// a client certificate from the cluster CA required and verified.
func ServerTLS(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}
}

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.TLS == nil {
		return nil, errors.New("kmip: a service and a TLS configuration are required")
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("kmip: the TLS configuration must require and verify client certificates")
	}
	if cfg.WrappingKey == "" {
		cfg.WrappingKey = DefaultWrappingKey
	}
	if cfg.MaxMessage <= 0 || cfg.MaxMessage > ttlv.MaxMessage {
		cfg.MaxMessage = ttlv.MaxMessage
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MessageTimeout <= 0 {
		cfg.MessageTimeout = DefaultMessageTimeout
	}
	if cfg.MaxConnsPerIdentity <= 0 {
		cfg.MaxConnsPerIdentity = max(cfg.MaxConns/4, 1)
	}
	if cfg.MaxObjectsPerOwner <= 0 {
		cfg.MaxObjectsPerOwner = DefaultMaxObjectsPerOwner
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	log := cfg.Log.With("front", "kmip")
	return &Server{cfg: cfg, core: cfg.Service.KMIP().WithOwnerShare(cfg.MaxObjectsPerOwner), log: log,
		refusedLog:   netlimit.NewLogLimiter(log, "KMIP connection refused: too many"),
		handshakeLog: netlimit.NewLogLimiter(log, "KMIP TLS handshake failed"),
		lns:          map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{}, handshaking: map[net.Conn]handshake{}, perIdentity: map[string]int{},
		slots: make(chan struct{}, cfg.MaxConns)}, nil
}

// Defaults of Config's bounds on connections.
const (
	DefaultMaxConns      = 256
	DefaultMaxHandshakes = 64
)

// DefaultMessageTimeout is the default of Config.MessageTimeout. A client
// that sends a message's header announcing a body and then nothing would
// otherwise hold its connection for a whole IdleTimeout; a request of at
// most MaxMessage bytes that takes longer than this from its first byte
// to its last is not a client worth waiting for.
const DefaultMessageTimeout = 10 * time.Second

// DefaultMaxObjectsPerOwner is a client's default share of the cluster's
// KMIP objects: a quarter, so that at least four clients can fill it.
const DefaultMaxObjectsPerOwner = cluster.MaxKMIPObjects / 4

// Serve accepts connections on l (a plain TCP listener; the server does
// TLS) until Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		var evicted net.Conn
		if len(s.handshaking) >= s.cfg.MaxHandshakes {
			evicted = s.evictHandshakeLocked()
		}
		s.accepted++
		s.handshaking[c] = handshake{host: hostOf(c.RemoteAddr()), seq: s.accepted}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		if evicted != nil {
			s.refusedLog.Log(context.Background(), slog.LevelWarn, "too many KMIP TLS handshakes in progress; closing the oldest of the busiest source",
				slog.String("peer", evicted.RemoteAddr().String()), slog.Int("max_handshakes", s.cfg.MaxHandshakes))
		}
		go s.serveConn(c)
	}
}

// evictHandshakeLocked closes the connection in its TLS handshake that has
// waited longest among those of the host with the most, and returns it.
// One source flooding the port so loses its own connections first, and a
// client from another host keeps its handshake. The caller holds s.mu.
func (s *Server) evictHandshakeLocked() net.Conn {
	perHost := map[string]int{}
	for _, h := range s.handshaking {
		perHost[h.host]++
	}
	var victim net.Conn
	var vh handshake
	for c, h := range s.handshaking {
		if victim == nil || perHost[h.host] > perHost[vh.host] || perHost[h.host] == perHost[vh.host] && h.seq < vh.seq {
			victim, vh = c, h
		}
	}
	if victim != nil {
		delete(s.handshaking, victim)
		victim.Close()
	}
	return victim
}

// hostOf is the host part of a connection's remote address, the unit of
// fairness among connections in their handshake.
func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// Close stops the listeners and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.lns {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.refusedLog.Close()
	s.handshakeLog.Close()
	return nil
}

// serveConn answers one client's requests in order until it hangs up,
// stays idle too long, or sends bytes that are not a TTLV message (after
// which the stream cannot be trusted to be in step).
//
// The connection counts against MaxHandshakes until its handshake ends,
// and then, authenticated, against MaxConns; when every authenticated slot
// is taken it is closed.
func (s *Server) serveConn(raw net.Conn) {
	slot := false
	defer func() {
		raw.Close()
		s.mu.Lock()
		delete(s.conns, raw)
		delete(s.handshaking, raw)
		s.mu.Unlock()
		if slot {
			<-s.slots
		}
		s.wg.Done()
	}()
	peer := raw.RemoteAddr().String()
	timed := &messageTimer{Conn: raw, d: s.cfg.MessageTimeout}
	c := tls.Server(timed, s.cfg.TLS)
	_ = c.SetDeadline(time.Now().Add(min(s.cfg.IdleTimeout, handshakeTimeout)))
	err := c.Handshake()
	s.mu.Lock()
	_, mine := s.handshaking[raw]
	delete(s.handshaking, raw)
	closed := s.closed
	s.mu.Unlock()
	if !mine || closed {
		return // closed to make room for another handshake (and logged there), or the server is closing
	}
	if err != nil {
		s.handshakeLog.Log(context.Background(), slog.LevelInfo, "KMIP TLS handshake failed", slog.String("peer", peer), slog.Any("err", err))
		return
	}
	chains := c.ConnectionState().VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return // RequireAndVerifyClientCert makes this unreachable
	}
	cert := chains[0][0]
	principal := broker.PrincipalFromCert(cert)
	s.mu.Lock()
	n := s.perIdentity[principal]
	if n < s.cfg.MaxConnsPerIdentity {
		s.perIdentity[principal] = n + 1
	}
	s.mu.Unlock()
	if n >= s.cfg.MaxConnsPerIdentity {
		s.refusedLog.Log(context.Background(), slog.LevelWarn, "too many KMIP connections of one client; refusing one",
			slog.String("peer", peer), slog.String("principal", principal), slog.Int("max_per_identity", s.cfg.MaxConnsPerIdentity))
		s.auditRefused(context.Background(), cert, peer, "kmip:Connect", &opError{reason: reasonGeneralFailure,
			msg: fmt.Sprintf("the client has %d KMIP connections, the most one client may have", n)})
		return
	}
	defer func() {
		s.mu.Lock()
		if s.perIdentity[principal]--; s.perIdentity[principal] <= 0 {
			delete(s.perIdentity, principal)
		}
		s.mu.Unlock()
	}()
	select {
	case s.slots <- struct{}{}:
		slot = true
	default:
		s.refusedLog.Log(context.Background(), slog.LevelWarn, "too many KMIP connections; refusing one",
			slog.String("peer", peer), slog.Int("max", s.cfg.MaxConns))
		s.auditRefused(context.Background(), cert, peer, "kmip:Connect", &opError{reason: reasonGeneralFailure,
			msg: fmt.Sprintf("the server has %d KMIP connections, its most", s.cfg.MaxConns)})
		return
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		timed.arm()
		msg, err := ttlv.ReadMessage(&firstByte{r: c, t: timed}, s.cfg.MaxMessage)
		started := !timed.armed // a byte of a request arrived
		timed.disarm()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Info("KMIP connection closed", "peer", peer, "err", err)
			}
			if refused := messageRefused(err, started, s.cfg.MessageTimeout); refused != nil {
				s.auditRefused(context.Background(), cert, peer, "kmip:Message", refused)
			}
			return
		}
		resp := s.Handle(context.Background(), cert, peer, msg)
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		_, err = c.Write(resp)
		clear(resp) // it may carry key material (Get)
		if err != nil {
			return
		}
	}
}

// messageTimer is a connection under TLS that, while armed (the server
// waits for a request), moves the read deadline to MessageTimeout from
// the first byte that arrives, and disarms. Bytes count whether they
// arrive on the wire (a TLS record that is never finished) or from what
// TLS has already read of an earlier record (firstByte): either way the
// request must be whole within MessageTimeout. Only the goroutine that
// serves the connection reads it, so it needs no lock.
type messageTimer struct {
	net.Conn
	d     time.Duration
	armed bool
}

func (m *messageTimer) arm()    { m.armed = true }
func (m *messageTimer) disarm() { m.armed = false }

// started is called when a byte of a request arrives.
func (m *messageTimer) started() {
	if m.armed {
		m.armed = false
		_ = m.Conn.SetReadDeadline(time.Now().Add(m.d))
	}
}

func (m *messageTimer) Read(p []byte) (int, error) {
	n, err := m.Conn.Read(p)
	if n > 0 {
		m.started()
	}
	return n, err
}

// firstByte is the reader of a request above TLS: the first byte it gives
// starts the request's timer.
type firstByte struct {
	r io.Reader
	t *messageTimer
}

func (f *firstByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 {
		f.t.started()
	}
	return n, err
}

// version is a KMIP protocol version.
type version struct{ major, minor int }

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// supported lists the versions served, most preferred first.
var supported = []version{{2, 0}, {1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}}

func (v version) ok() bool {
	for _, s := range supported {
		if s == v {
			return true
		}
	}
	return false
}

func (v version) item() ttlv.Item {
	return ttlv.Struct(tagProtocolVersion, ttlv.Int(tagProtocolVersionMajor, int32(v.major)), ttlv.Int(tagProtocolVersionMinor, int32(v.minor)))
}

func parseVersion(it ttlv.Item) (version, error) {
	maj, ok1 := it.Child(tagProtocolVersionMajor)
	min, ok2 := it.Child(tagProtocolVersionMinor)
	if it.Type != ttlv.TypeStructure || !ok1 || !ok2 || maj.Type != ttlv.TypeInteger || min.Type != ttlv.TypeInteger {
		return version{}, invalidMessage("Protocol Version needs an Integer major and minor")
	}
	return version{int(maj.Int), int(min.Int)}, nil
}

// messageRefused is the refusal of a request that could not be read whole,
// to audit before the connection is closed: one whose header is not a
// structure or announces more than the server takes, or one begun and not
// finished within the message timeout. A client that closed or went idle
// between requests made none (nil).
func messageRefused(err error, started bool, timeout time.Duration) error {
	var ne net.Error
	switch {
	case errors.Is(err, ttlv.ErrMalformed), errors.Is(err, ttlv.ErrTooLarge):
		return invalidMessage("%v; the connection is closed", err)
	case started && errors.As(err, &ne) && ne.Timeout():
		return invalidMessage("the request did not arrive whole within %s of its first byte; the connection is closed", timeout)
	case started && errors.Is(err, io.ErrUnexpectedEOF):
		return invalidMessage("the client closed the connection inside a request")
	}
	return nil
}

// handshakeTimeout bounds the TLS handshake, so that a client that stalls
// in it does not hold a handshake slot (MaxHandshakes) for a whole idle
// timeout.
const handshakeTimeout = 10 * time.Second

// MaxBatch is the most batch items one request may carry.
const MaxBatch = 64

// Handle answers one encoded request message with an encoded response. A
// message that does not decode, or has no usable header, gets a response
// with one failed item (Invalid Message) in version 1.0, or the version
// its header names if that much could be read.
func (s *Server) Handle(ctx context.Context, cert *x509.Certificate, peer string, msg []byte) []byte {
	v := version{1, 0}
	req, err := ttlv.Decode(msg)
	var items []ttlv.Item
	stop, maxResp := true, 0
	if err != nil {
		err = invalidMessage("the message does not decode: %v", err)
	} else {
		v, items, stop, maxResp, err = parseRequest(req)
	}
	if err != nil {
		s.auditRefused(ctx, cert, peer, "kmip:Message", err)
		return s.encodeResponse(v, []ttlv.Item{failedItem(0, nil, err)})
	}
	// The response is bounded like a request (MaxMessage), or by the
	// client's Maximum Response Size if smaller: one small request of
	// many Locate or Get items could otherwise ask for megabytes. Room is
	// kept for the answer of every item that may follow (of the next one
	// only, with Stop): an item that does not fit answers Response Too
	// Large, and one that finds too little room is not run.
	limit := s.cfg.MaxMessage
	if maxResp > 0 && maxResp < limit {
		limit = maxResp
	}
	heads := make([]itemHead, len(items))
	notRun := make([]ttlv.Item, len(items))
	reserve := make([]int, len(items)+1) // reserve[i]: room kept for the items from i on
	for i := len(items) - 1; i >= 0; i-- {
		heads[i] = readItem(items[i])
		notRun[i] = failedItem(heads[i].op, heads[i].batchID, errSkipped)
		reserve[i] = notRun[i].Size()
		if !stop {
			reserve[i] += reserve[i+1]
		}
	}
	used := response(v, nil).Size()
	if used+reserve[0] > limit {
		err := &opError{reason: reasonResponseTooLarge, msg: fmt.Sprintf("a response to %d batch items needs more than %d bytes (Maximum Response Size, or this server's limit)", len(items), limit)}
		s.auditRefused(ctx, cert, peer, "kmip:Message", err)
		return s.encodeResponse(v, []ttlv.Item{failedItem(0, nil, err)})
	}
	env := &batchEnv{}
	var out []ttlv.Item
	for i, h := range heads {
		env.room = limit - used - reserve[i+1]
		var (
			res    ttlv.Item
			failed bool
		)
		if env.room < reserveFor(v, h.op) {
			s.auditRefused(ctx, cert, peer, h.action, errSkipped)
			res, failed = notRun[i], true
		} else {
			res, failed = s.handleItem(ctx, cert, peer, v, h, env)
		}
		if failed {
			// An item that failed produced no object: the next one must
			// not act on what an earlier one left in the placeholder.
			env.clearPlaceholder("an item before it failed")
		}
		used += res.Size()
		out = append(out, res)
		if failed && stop {
			break
		}
	}
	return s.encodeResponse(v, out)
}

// reserveFor is the room an item of operation op needs before it runs in
// version v: the largest failure answer (failedItem bounds its message),
// and, for an operation that changes something, the largest answer it can
// produce, so that no change is made whose answer would be dropped. The
// figures are the encoder's sizes of the largest values the limits allow
// (maxFailAnswer, maxChangeAnswer, maxAttrChangeAnswer), not a guess.
func reserveFor(v version, op uint32) int {
	switch op {
	case opAddAttribute, opModifyAttribute:
		if v.major < 2 {
			return max(maxFailAnswer, maxAttrChangeAnswer) // 1.x echoes the attribute
		}
		return max(maxFailAnswer, maxChangeAnswer)
	case opRegister, opCreate, opCreateKeyPair, opActivate, opRevoke, opDestroy, opSetAttribute, opDeleteAttribute:
		return max(maxFailAnswer, maxChangeAnswer)
	}
	return maxFailAnswer
}

var (
	// maxFailAnswer is the largest failed batch item: an operation, a
	// Unique Batch Item ID of 64 bytes, status, reason and a Result
	// Message of maxResultMessage bytes.
	maxFailAnswer = func() int {
		id := ttlv.Bytes(tagUniqueBatchItemID, make([]byte, 64))
		return failedItem(opGet, &id, &opError{reason: reasonGeneralFailure, msg: strings.Repeat("m", maxResultMessage)}).Size()
	}()
	// maxChangeAnswer is the largest answer of a change but a 1.x Add or
	// Modify Attribute: around its payload (itemOverhead), an Object Type
	// and two identifiers of maxUniqueIDLen bytes (Create's type and id, Create
	// Key Pair's two ids, or the one id of the others).
	maxChangeAnswer = itemOverhead + ttlv.Struct(tagResponsePayload, ttlv.Enum(tagObjectType, 0),
		ttlv.Text(tagUniqueIdentifier, strings.Repeat("i", maxUniqueIDLen)), ttlv.Text(tagUniqueIdentifier, strings.Repeat("i", maxUniqueIDLen))).Size()
	// maxAttrChangeAnswer is the largest answer of a 1.x Add or Modify
	// Attribute, which echoes the attribute: the id and the largest
	// attribute a client may set, a custom one with a name and a value as
	// long as the replicated state allows (a Name or Object Group is
	// smaller).
	maxAttrChangeAnswer = itemOverhead + idPayload(strings.Repeat("i", maxUniqueIDLen)).Size() +
		encodedAttrSize(version{1, 4}, attrValue{name: strings.Repeat("x", cluster.MaxKMIPTextLen),
			value: ttlv.Text(tagAttributeValue, strings.Repeat("v", cluster.MaxKMIPCustomValue))})
)

// errSkipped answers an item that finds the response full.
var errSkipped = &opError{reason: reasonResponseTooLarge, msg: "not run: the response is full"}

// parseRequest checks a request message's structure and header. It
// returns the version, the batch items, whether to stop at the first
// failed item, and the Maximum Response Size (0 if none).
func parseRequest(req ttlv.Item) (version, []ttlv.Item, bool, int, error) {
	v := version{1, 0}
	if req.Tag != tagRequestMessage || req.Type != ttlv.TypeStructure {
		return v, nil, true, 0, invalidMessage("not a Request Message")
	}
	hdr, ok := req.Child(tagRequestHeader)
	if !ok || hdr.Type != ttlv.TypeStructure {
		return v, nil, true, 0, invalidMessage("the Request Header is missing")
	}
	pv, ok := hdr.Child(tagProtocolVersion)
	if !ok {
		return v, nil, true, 0, invalidMessage("the Protocol Version is missing")
	}
	got, err := parseVersion(pv)
	if err != nil {
		return v, nil, true, 0, err
	}
	if !got.ok() {
		return v, nil, true, 0, &opError{reason: reasonInvalidMessage, msg: fmt.Sprintf("protocol version %s is not supported; this server speaks 1.0 to 1.4 and 2.0", got)}
	}
	v = got
	items := req.ChildrenOf(tagBatchItem)
	bc, ok := hdr.Child(tagBatchCount)
	if !ok || bc.Type != ttlv.TypeInteger || int(bc.Int) != len(items) {
		return v, nil, true, 0, invalidMessage("Batch Count must be an Integer equal to the number of batch items (%d)", len(items))
	}
	if len(items) == 0 || len(items) > MaxBatch {
		return v, nil, true, 0, invalidMessage("a request carries 1 to %d batch items, got %d", MaxBatch, len(items))
	}
	stop := true
	if o, ok := hdr.Child(tagBatchErrorContinuation); ok {
		if o.Type != ttlv.TypeEnumeration || o.Int < 1 || o.Int > 3 {
			return v, nil, true, 0, invalidMessage("Batch Error Continuation Option must be Continue, Stop or Undo")
		}
		stop = o.Int != 1
	}
	maxResp := 0
	if m, ok := hdr.Child(tagMaximumResponseSize); ok {
		if m.Type != ttlv.TypeInteger || m.Int <= 0 {
			return v, nil, true, 0, invalidMessage("Maximum Response Size must be a positive Integer")
		}
		maxResp = int(m.Int)
	}
	return v, items, stop, maxResp, nil
}

// response is the response message of version v answering items.
func response(v version, items []ttlv.Item) ttlv.Item {
	hdr := ttlv.Struct(tagResponseHeader, v.item(), ttlv.DateTime(tagTimeStamp, time.Now()), ttlv.Int(tagBatchCount, int32(len(items))))
	return ttlv.Struct(tagResponseMessage, append([]ttlv.Item{hdr}, items...)...)
}

func (s *Server) encodeResponse(v version, items []ttlv.Item) []byte {
	b, err := response(v, items).Encode()
	if err != nil {
		s.log.Error("encode a KMIP response", "err", err)
		b, _ = ttlv.Struct(tagResponseMessage, ttlv.Struct(tagResponseHeader, v.item(), ttlv.DateTime(tagTimeStamp, time.Now()), ttlv.Int(tagBatchCount, 1)),
			failedItem(0, nil, &opError{reason: reasonGeneralFailure, msg: "the response could not be encoded"})).Encode()
	}
	return b
}

// failedItem is a batch item answering a failure.
func failedItem(op uint32, batchID *ttlv.Item, err error) ttlv.Item {
	oe := asOpError(err)
	it := ttlv.Struct(tagBatchItem)
	if op != 0 {
		it.Children = append(it.Children, ttlv.Enum(tagOperation, op))
	}
	if batchID != nil {
		it.Children = append(it.Children, *batchID)
	}
	it.Children = append(it.Children, ttlv.Enum(tagResultStatus, statusOperationFailed), ttlv.Enum(tagResultReason, oe.reason), ttlv.Text(tagResultMessage, resultMessage(oe.msg)))
	return it
}

// maxResultMessage bounds a Result Message, in bytes.
const maxResultMessage = 512

// resultMessage is msg as a Result Message: valid UTF-8 (a message may
// quote what the client sent, such as an identifier that is not) and at
// most maxResultMessage bytes.
func resultMessage(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= maxResultMessage {
		return msg
	}
	cut := maxResultMessage - len("...")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "..."
}

// opError is a failure with its KMIP result reason.
type opError struct {
	reason uint32
	msg    string
}

func (e *opError) Error() string { return e.msg }

func invalidMessage(format string, args ...any) error {
	return &opError{reason: reasonInvalidMessage, msg: fmt.Sprintf(format, args...)}
}

func invalidField(format string, args ...any) error {
	return &opError{reason: reasonInvalidField, msg: fmt.Sprintf(format, args...)}
}

func featureNotSupported(format string, args ...any) error {
	return &opError{reason: reasonFeatureNotSupported, msg: fmt.Sprintf(format, args...)}
}

func missingData(format string, args ...any) error {
	return &opError{reason: reasonMissingData, msg: fmt.Sprintf(format, args...)}
}

// asOpError gives every error a KMIP result reason: the front's own, or
// the core's classification.
func asOpError(err error) *opError {
	var oe *opError
	if errors.As(err, &oe) {
		return oe
	}
	if errors.Is(err, broker.ErrKMIPObjectLimit) {
		// KMIP has no result reason for a resource limit. Permission
		// Denied would tell the client that its credentials lack a right
		// (and Wrong Key Lifecycle State that the object is at fault);
		// neither is so, and retrying after objects are destroyed can
		// succeed. General Failure with a message naming the limit is
		// the reason KMIP leaves for what the others do not cover.
		_, _, msg := broker.Classify(err)
		return &opError{reason: reasonGeneralFailure, msg: msg}
	}
	if errors.Is(err, broker.ErrKMIPAttributeExists) {
		_, _, msg := broker.Classify(err)
		return &opError{reason: reasonIllegalOperation, msg: msg}
	}
	code, exc, msg := broker.Classify(err)
	r := reasonGeneralFailure
	switch code.String() {
	case "NotFound":
		r = reasonItemNotFound
	case "PermissionDenied", "Unauthenticated":
		r = reasonPermissionDenied
	case "InvalidArgument", "AlreadyExists", "OutOfRange":
		r = reasonInvalidField
	case "FailedPrecondition":
		r = reasonWrongLifecycleState
	}
	switch exc {
	case broker.ExcInvalidCiphertext:
		r = reasonCryptographicFailure
	case broker.ExcUnsupportedOperation:
		r = reasonOperationNotSupported
	}
	return &opError{reason: r, msg: msg}
}

// auditRefused writes the audit line of a request refused before it
// named an operation the core serves (a message that does not decode, a
// batch item without an operation, an operation not served). A refusal of
// what named no operation at all, a connection or a message or a batch
// item that could not be read (kmip:Connect, kmip:Message), is audited as
// denied, with its message as the reason.
func (s *Server) auditRefused(ctx context.Context, cert *x509.Certificate, peer, action string, err error) {
	oe := asOpError(err)
	ctx = s.cfg.Service.BeginRequest(ctx, broker.Call{Front: broker.FrontKMIP, Action: action, RequestID: newRequestID(), Peer: peer})
	ctx = broker.KMIPPrincipal(ctx, cert)
	if action == "kmip:Connect" || action == "kmip:Message" {
		s.cfg.Service.RefuseRequest(ctx, oe.msg)
	}
	if aerr := s.cfg.Service.EndRequest(ctx, reasonName(oe.reason), "OperationFailed"); aerr != nil {
		s.log.Error("audit a refused KMIP request", "peer", peer, "err", aerr)
	}
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func opString(op uint32) string { return fmt.Sprintf("0x%02x", op) }

var reasonNames = map[uint32]string{
	reasonItemNotFound: "ItemNotFound", reasonResponseTooLarge: "ResponseTooLarge", reasonAuthenticationFailed: "AuthenticationNotSuccessful",
	reasonInvalidMessage: "InvalidMessage", reasonOperationNotSupported: "OperationNotSupported", reasonMissingData: "MissingData",
	reasonInvalidField: "InvalidField", reasonFeatureNotSupported: "FeatureNotSupported", reasonCryptographicFailure: "CryptographicFailure",
	reasonIllegalOperation: "IllegalOperation", reasonPermissionDenied: "PermissionDenied", reasonIndexOutOfBounds: "IndexOutOfBounds",
	reasonKeyFormatNotSupported: "KeyFormatTypeNotSupported", reasonGeneralFailure: "GeneralFailure", reasonWrongLifecycleState: "WrongKeyLifecycleState",
}

func reasonName(r uint32) string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Reason(0x%x)", r)
}
