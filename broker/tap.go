package broker

import (
	"context"
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
//   - The tap (tapIn) runs when a call's headers arrive, before a byte of
//     its message is read. It refuses callers without a client
//     certificate, and callers without a role (the cluster's record, else
//     the certificate's): unknown and revoked (role none) principals never
//     get a message decoded. Node certificates pass. A caller with a role
//     the method does not admit is refused by the role gate after its
//     message is read (bounded by maxRecvMsgSize), so that its audit line
//     names the key it asked for.
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
//   - The HTTP/2 flow-control windows are fixed (64 KiB per stream, 1 MiB
//     per connection) instead of grpc-go's dynamic windows, which grow to
//     16 MiB: they bound the bytes a peer may send ahead of what the
//     server has read.
const (
	handshakeTimeout      = 10 * time.Second
	maxRecvMsgSize        = 256 << 10
	maxConcurrentStreams  = 128
	maxInflightCalls      = 512
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

func init() { prometheus.MustRegister(refusedBeforeRead) }

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
func (s *Service) tapIn(ctx context.Context, info *tap.Info) (context.Context, error) {
	if isHealthOrReflection(info.FullMethodName) {
		return ctx, nil
	}
	known, err := s.tapAdmit(ctx, info)
	if err == nil && s.inflight.Add(1) > maxInflightCalls {
		s.inflight.Add(-1)
		err = toStatus(newError(codes.ResourceExhausted, ExcThrottling,
			"node %s is handling %d calls; retry later", s.cfg.NodeID, maxInflightCalls)).Err()
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
	// The stream's context ends when the call does, however it ends.
	context.AfterFunc(ctx, func() { s.inflight.Add(-1) })
	return ctx, nil
}

// tapAdmit admits a call from its headers alone: the method must be one
// the broker serves (known), the caller authenticated and holding a role.
// A refusal of an authenticated caller is audited, as the interceptors
// would have audited it, without anything of the message, which was not
// read.
func (s *Service) tapAdmit(ctx context.Context, info *tap.Info) (known bool, err error) {
	action := grpcAction(info.FullMethodName)
	if !authz.Known(action) {
		return false, status.Errorf(codes.Unimplemented, "unknown method %.200q", info.FullMethodName)
	}
	if s.cfg.InsecureNoClientAuth {
		return true, nil
	}
	c := peerCert(ctx)
	if c == nil {
		return true, status.Error(codes.Unauthenticated, "a client certificate from the cluster CA is required")
	}
	id := s.certIdentity(c)
	if id.Principal != "" && id.Role != "" && id.Role != authz.RoleNone {
		return true, nil
	}
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	requestID := newRequestID()
	if v := info.Header.Get("x-request-id"); len(v) > 0 && len(v[0]) <= 64 {
		requestID = v[0]
	}
	rq := &request{front: FrontGRPC, requestID: requestID, peer: addr}
	err = s.roleGate(rq, id, action, RequestContexts{})
	if aerr := s.endGRPC(rq, err); aerr != nil {
		return true, toStatus(aerr).Err()
	}
	return true, toStatus(err).Err()
}
