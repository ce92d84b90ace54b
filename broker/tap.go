package broker

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// What one gRPC caller can make a node hold in memory is bounded before
// any of its messages is read:
//
//   - handshakeTimeout closes a connection that has not finished its TLS
//     and HTTP/2 handshakes in time (grpc-go's default is 120 s, during
//     which a silent connection holds a file descriptor). The daemon
//     bounds the connections open at once (internal/netlimit).
//   - The tap (tapIn) runs for every call, gRPC health and reflection
//     included, when its headers arrive, before a byte of its message is
//     read. It refuses callers without a client certificate, and callers
//     without a role (the cluster's record, else the certificate's):
//     unknown and revoked (role none) principals never get a message
//     decoded. Node certificates pass. A caller with a role the method
//     does not admit is refused by the role gate after its message is
//     read (bounded by maxRecvMsgSize), so that its audit line names the
//     key it asked for. gRPC health Check is open to any certificate of
//     the cluster CA, whatever its role, since load balancers use it;
//     health Watch and reflection need a role other than none. Every
//     refusal of an authenticated caller is audited (an unknown method
//     with its name cut to 200 bytes, which is never a metric label);
//     admitted health and reflection calls are not.
//   - maxRecvMsgSize bounds every message. The largest legitimate one is a
//     node's ForwardCommand carrying a CreateKey: a key blob (at most
//     64 KiB, cluster.maxBlobLen), a 32 KiB policy, an 8 KiB description
//     and 50 tags (19 KiB), about 125 KiB encoded. Client calls need at
//     most 64 KiB (CreateKey: policy, description and tags, about 60 KiB);
//     Encrypt needs 4096 bytes of plaintext and an 8 KiB context. Each
//     operation checks its own fields after decoding.
//   - maxConcurrentStreams bounds the calls of one connection, and
//     maxInflightCalls those of all connections: a call beyond it is
//     refused (ResourceExhausted) at the tap. With maxRecvMsgSize, the
//     messages being read at once take at most maxInflightCalls x 256 KiB.
//     Health and reflection calls count too.
//   - maxInflightPerPrincipal bounds the calls of one principal (over all
//     its connections), so that one principal cannot take every call of
//     the node from the others. Members' node certificates are held to
//     neither bound (their calls count, but are never refused): forwarded
//     calls and reads of the leader's index are the cluster's own work,
//     which clients filling the node must not stop. The last adminReserve
//     of the node's calls are for admins, so that clients filling it
//     cannot keep an admin from reaching it.
//   - firstMessageTimeout ends a call whose request message has not
//     arrived that long after its headers, releasing what it holds. A
//     call that has received its message (a server stream such as Backup
//     or Health.Watch) is not cut by it.
//   - The HTTP/2 flow-control windows are fixed (64 KiB per stream, 1 MiB
//     per connection) instead of grpc-go's dynamic windows, which grow to
//     16 MiB: they bound the bytes a peer may send ahead of what the
//     server has read.
const (
	handshakeTimeout     = 10 * time.Second
	maxRecvMsgSize       = 256 << 10
	maxConcurrentStreams = 128
	maxInflightCalls     = 512
	// maxInflightPerPrincipal is a quarter of the node's calls: a
	// principal that opens calls and never sends their message stops
	// there, leaving the rest to the others.
	maxInflightPerPrincipal = maxInflightCalls / 4
	// adminReserve of the node's calls are taken by admins only.
	adminReserve = maxInflightCalls / 8
	// firstMessageTimeout: a call's request is a message of at most
	// 256 KiB which a client sends right after the headers; 10 s leaves
	// room for a slow link, while a call held open without it (and
	// without a deadline) would hold an in-flight slot for as long as its
	// client likes.
	firstMessageTimeout   = 10 * time.Second
	initialWindowSize     = 64 << 10
	initialConnWindowSize = 1 << 20
	// maxHeaderListSize bounds a call's headers (method name and
	// metadata), which the tap reads and may write to the audit log.
	maxHeaderListSize = 16 << 10
)

var refusedBeforeRead = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "hsmbroker_grpc_refused_before_read_total",
	Help: "gRPC calls refused when their headers arrived, before any message was read, by gRPC code.",
}, []string{"code"})

var firstMessageTimeouts = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "hsmbroker_grpc_first_message_timeouts_total",
	Help: "gRPC calls ended because their request message had not arrived in time after their headers.",
})

func init() { prometheus.MustRegister(refusedBeforeRead, firstMessageTimeouts) }

// limitOptions are the server options that bound what callers can make
// the node hold (see above).
func (s *Service) limitOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.InTapHandle(s.tapIn),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.InitialWindowSize(initialWindowSize),
		grpc.InitialConnWindowSize(initialConnWindowSize),
		grpc.MaxHeaderListSize(maxHeaderListSize),
	}
}

// RefusedBeforeRead is the number of gRPC calls this service's servers
// refused before reading their message.
func (s *Service) RefusedBeforeRead() uint64 { return s.tapRefused.Load() }

// tapIn is the gRPC tap: it runs for every call when its headers arrive.
// An admitted call holds a slot of maxInflightCalls (and of its
// principal's maxInflightPerPrincipal) until it ends, and its context is
// cancelled if its first message does not arrive in firstMessageTimeout.
func (s *Service) tapIn(ctx context.Context, info *tap.Info) (context.Context, error) {
	id, known, err := s.tapAdmit(ctx, info)
	principal := ""
	if err == nil {
		if id.Role != authz.RoleNode {
			principal = id.Principal
		}
		if err = s.takeSlot(principal, id.Role); err != nil && id.Principal != "" {
			action := grpcAction(info.FullMethodName)
			if !known {
				action = boundMethod(info.FullMethodName)
			}
			err = s.auditTapRefusal(ctx, info, id, action, "throttled: "+status.Convert(err).Message(), err)
		}
	}
	if err != nil {
		s.tapRefused.Add(1)
		st := status.Convert(err)
		refusedBeforeRead.WithLabelValues(st.Code().String()).Inc()
		if known { // an attacker's method names are no label values
			service, method := splitMethod(info.FullMethodName)
			requestsTotal.WithLabelValues(service, method, st.Code().String(), exceptionOf(st)).Inc()
		}
		return ctx, err
	}
	c := &tapCall{s: s, principal: principal}
	ctx, c.cancel = context.WithCancel(ctx)
	wait := time.Duration(s.firstMessageWait.Load())
	if wait <= 0 {
		wait = firstMessageTimeout
	}
	c.timer = time.AfterFunc(wait, c.expire)
	ctx = context.WithValue(ctx, tapCallKey{}, c)
	// The stream's context ends when the call does, however it ends.
	context.AfterFunc(ctx, c.end)
	return ctx, nil
}

// tapCall is what the tap keeps of a call it admitted.
type tapCall struct {
	s         *Service
	principal string // "" when not counted for a principal
	cancel    context.CancelFunc
	timer     *time.Timer
	state     atomic.Uint32 // callWaiting, callArrived or callExpired
}

type tapCallKey struct{}

const (
	callWaiting = iota
	callArrived
	callExpired
)

// expire ends the call, which got no message in time.
func (c *tapCall) expire() {
	if c.state.CompareAndSwap(callWaiting, callExpired) {
		firstMessageTimeouts.Inc()
		c.cancel()
	}
}

// arrived records that the call's first message arrived.
func (c *tapCall) arrived() {
	if c.state.Load() == callWaiting && c.state.CompareAndSwap(callWaiting, callArrived) {
		c.timer.Stop()
	}
}

// end releases the call's slots when it ends.
func (c *tapCall) end() {
	c.timer.Stop()
	c.s.releaseSlot(c.principal)
}

// messageArrived tells the tap that the call of ctx received a message:
// the interceptors call it once a unary call's request is read, and on
// each message a stream receives.
func messageArrived(ctx context.Context) {
	if c, ok := ctx.Value(tapCallKey{}).(*tapCall); ok {
		c.arrived()
	}
}

// principalCalls counts the calls in flight of each principal.
type principalCalls struct {
	mu sync.Mutex
	n  map[string]int32
}

// takeSlot counts a call in flight, for principal too unless it is "",
// or refuses it (ResourceExhausted) when a bound is reached. A member's
// call (role node) is counted but never refused: forwarded writes, reads
// of the leader's index and joins are the cluster's own work, which
// clients filling the node must not stop; each member bounds its own
// callers. The last adminReserve of the node's calls are for admins, so
// that principals filling the node with their shares cannot keep an admin
// from reaching it, to revoke them among other things.
func (s *Service) takeSlot(principal string, role authz.Role) error {
	node := role == authz.RoleNode
	limit := maxInflightCalls
	if role != authz.RoleAdmin {
		limit -= adminReserve
	}
	if principal != "" {
		p := &s.byPrincipal
		p.mu.Lock()
		if p.n == nil {
			p.n = make(map[string]int32)
		}
		if p.n[principal] >= maxInflightPerPrincipal {
			p.mu.Unlock()
			return toStatus(newError(codes.ResourceExhausted, ExcThrottling,
				"principal %.200s has %d calls in progress on node %s, its limit; retry later",
				principal, maxInflightPerPrincipal, s.cfg.NodeID)).Err()
		}
		p.n[principal]++
		p.mu.Unlock()
	}
	if s.inflight.Add(1) > int64(limit) && !node {
		s.releaseSlot(principal)
		return toStatus(newError(codes.ResourceExhausted, ExcThrottling,
			"node %s is handling %d calls; retry later", s.cfg.NodeID, limit)).Err()
	}
	return nil
}

// releaseSlot undoes takeSlot.
func (s *Service) releaseSlot(principal string) {
	s.inflight.Add(-1)
	if principal == "" {
		return
	}
	p := &s.byPrincipal
	p.mu.Lock()
	if p.n[principal] <= 1 {
		delete(p.n, principal) // the map holds only principals with calls
	} else {
		p.n[principal]--
	}
	p.mu.Unlock()
}

// tapAdmit admits a call from its headers alone: the method must be one
// the broker serves (known), the caller authenticated and holding a role;
// gRPC health and reflection are admitted by tapAdmitOpen. A refusal of an
// authenticated caller is audited, as the interceptors would have audited
// it, without anything of the message, which was not read.
func (s *Service) tapAdmit(ctx context.Context, info *tap.Info) (id authz.Caller, known bool, err error) {
	method := info.FullMethodName
	if isHealthOrReflection(method) {
		id, err = s.tapAdmitOpen(ctx, info)
		return id, false, err
	}
	action := grpcAction(method)
	known = servedMethods[method] && authz.Known(action)
	var c *x509.Certificate
	if !s.cfg.InsecureNoClientAuth {
		c = peerCert(ctx)
	}
	if !known {
		err = status.Errorf(codes.Unimplemented, "unknown method %.200q", method)
		if c == nil {
			return id, false, err
		}
		id = s.certIdentity(c)
		return id, false, s.auditTapRefusal(ctx, info, id, boundMethod(method), "unknown method", err)
	}
	if s.cfg.InsecureNoClientAuth {
		return id, true, nil
	}
	if c == nil {
		return id, true, errNoClientCert
	}
	id = s.certIdentity(c)
	if hasRole(id) {
		return id, true, nil
	}
	rq := s.tapRequest(ctx, info)
	err = s.roleGate(rq, id, action, RequestContexts{})
	if aerr := s.endGRPC(rq, err); aerr != nil {
		return id, true, toStatus(aerr).Err()
	}
	return id, true, toStatus(err).Err()
}

// tapAdmitOpen admits a gRPC health or reflection call: a health Check
// from any certificate of the cluster CA (load balancers and probes use
// it, whatever their role), a health Watch and reflection from a caller
// with a role other than none. A Watch lasts as long as its client likes,
// so a revoked certificate holding them would keep its share of the
// node's calls for good.
func (s *Service) tapAdmitOpen(ctx context.Context, info *tap.Info) (authz.Caller, error) {
	if s.cfg.InsecureNoClientAuth {
		return authz.Caller{}, nil
	}
	c := peerCert(ctx)
	if c == nil {
		return authz.Caller{}, errNoClientCert
	}
	id := s.certIdentity(c)
	if info.FullMethodName == "/grpc.health.v1.Health/Check" || hasRole(id) {
		return id, nil
	}
	what := "gRPC reflection"
	if hasPrefix(info.FullMethodName, "/grpc.health.") {
		what = "gRPC health Watch and List (Check is open to every certificate)"
	}
	err := toStatus(newError(codes.PermissionDenied, ExcAccessDenied,
		"%.200s (role %s) may not use %s", id.Principal, id.Role.Name(), what)).Err()
	return id, s.auditTapRefusal(ctx, info, id, boundMethod(info.FullMethodName),
		"role "+id.Role.Name()+" may not use "+what, err)
}

// hasRole reports whether id is a principal with a role that may do
// something: not unknown, not role-less, not revoked (role none).
func hasRole(id authz.Caller) bool {
	return id.Principal != "" && id.Role != "" && id.Role != authz.RoleNone
}

// errNoClientCert is the tap's answer to a call without a client
// certificate.
var errNoClientCert = status.Error(codes.Unauthenticated, "a client certificate from the cluster CA is required")

// tapRequest is the request of a call the tap refuses, for its audit line.
func (s *Service) tapRequest(ctx context.Context, info *tap.Info) *request {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	requestID := newRequestID()
	if v := info.Header.Get("x-request-id"); len(v) > 0 && len(v[0]) <= 64 {
		requestID = v[0]
	}
	return &request{front: FrontGRPC, requestID: requestID, peer: addr}
}

// auditTapRefusal audits the tap's refusal (err) of id's call, as action,
// for reason, and returns the answer to give: err, or the audit log's
// failure.
func (s *Service) auditTapRefusal(ctx context.Context, info *tap.Info, id authz.Caller, action, reason string, err error) error {
	rq := s.tapRequest(ctx, info)
	rq.id, rq.identified, rq.action, rq.denied = id, true, action, reason
	if aerr := s.endGRPC(rq, err); aerr != nil {
		return toStatus(aerr).Err()
	}
	return err
}

// boundMethod is a method name a caller sent, for an audit line: at most
// 200 bytes, valid UTF-8.
func boundMethod(m string) string {
	if len(m) > 200 {
		m = m[:200]
	}
	return strings.ToValidUTF8(m, "\uFFFD")
}
