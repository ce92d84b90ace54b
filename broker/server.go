package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"runtime"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
)

// NewGRPCServer assembles the gRPC server: mutual TLS (tlsConfig must
// require and verify client certificates; nil serves plaintext, where
// every call is refused for want of a certificate unless the service was
// made with Config.InsecureNoClientAuth, for tests only), the interceptor
// chains (the same checks for unary and streaming
// calls), the services (the Service itself and the adapters of its TDE,
// raw AES and data object cores), gRPC health and reflection. The health status
// follows the partition and the cluster; see WatchHealth.
func (s *Service) NewGRPCServer(tlsConfig *tls.Config) (*grpc.Server, *health.Server) {
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.metricsInterceptor, s.unaryInterceptor, s.accessInterceptor),
		// Streaming calls (ClusterService.Backup) get the same checks.
		grpc.ChainStreamInterceptor(s.metricsStreamInterceptor, s.streamInterceptor, s.accessStreamInterceptor),
		// Calls run on long-lived workers rather than a new goroutine
		// each: a new goroutine grows its stack through the interceptors,
		// TLS and the PKCS#11 call on every request (measured: about 8% of
		// the broker's CPU per P-256 Sign). Beyond the workers, grpc-go
		// starts goroutines as before.
		grpc.NumStreamWorkers(uint32(max(16, 8*runtime.GOMAXPROCS(0)))),
		// Requests that do not decode are InvalidArgument (codec.go).
		grpc.ForceServerCodecV2(newRequestCodec()),
	}
	opts = append(opts, s.limitOptions()...)
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	g := grpc.NewServer(opts...)
	pb.RegisterKeyServiceServer(g, keyServiceServer{s})
	pb.RegisterCryptoServiceServer(g, s)
	pb.RegisterClusterServiceServer(g, s)
	pb.RegisterAccessServiceServer(g, s)
	pb.RegisterTDEServiceServer(g, tdeServer{core: s.TDE()})
	pb.RegisterAuditServiceServer(g, s)
	pb.RegisterRawServiceServer(g, rawServer{core: s.Raw()})
	pb.RegisterDataObjectServiceServer(g, dataObjectServer{core: s.DataObjects()})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	return g, hs
}

type ctxKey int

const (
	principalKey ctxKey = iota
	requestIDKey
)

// Principal is the authenticated caller of a request: from the client
// certificate (URI SAN, else common name) on gRPC, or the access key on
// the AWS endpoint.
func Principal(ctx context.Context) string {
	p, _ := ctx.Value(principalKey).(string)
	return p
}

// WithPrincipal returns ctx carrying an authenticated principal; fronts
// other than gRPC (the AWS endpoint) use it.
func WithPrincipal(ctx context.Context, principal string) context.Context {
	if rq := requestOf(ctx); rq != nil {
		rq.setPrincipal(principal) // for the request's audit line
	}
	return context.WithValue(ctx, principalKey, principal)
}

// RequestID is the request's id: the caller's x-request-id metadata if it
// sent one, else a fresh random id.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// PrincipalFromCert names the holder of a client certificate: the first
// URI SAN (e.g. spiffe://..., hsmbroker:user/NAME), else the subject's
// common name.
func PrincipalFromCert(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.CommonName
}

func peerPrincipal(ctx context.Context) (string, string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", ""
	}
	addr := ""
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", addr
	}
	return PrincipalFromCert(ti.State.VerifiedChains[0][0]), addr
}

// unaryInterceptor authenticates, tags the request with an id, logs it and
// turns its error into a status.
func (s *Service) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	undecoded := takeUndecoded(req) // first, so that it is always taken
	messageArrived(ctx)             // the request is read: the tap's timer stops
	ctx, c, err := s.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if undecoded != nil {
		return nil, s.finish(ctx, c, undecoded)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-request-id", c.requestID))
	resp, err := handler(ctx, req)
	if err := s.finish(ctx, c, err); err != nil {
		return nil, err
	}
	return resp, nil
}

// streamInterceptor does for a streaming call what unaryInterceptor does
// for a unary one. gRPC health (Watch) and reflection streams pass through
// untouched (the tap admitted them: health for any certificate of the
// cluster CA, reflection for a caller with a role), and they last as long
// as the client's interest, so they are not requests to log.
func (s *Service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ss = decodeCheckedStream{ss}
	if isHealthOrReflection(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, c, err := s.admit(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	_ = ss.SetHeader(metadata.Pairs("x-request-id", c.requestID))
	return s.finish(ctx, c, handler(srv, &contextStream{ServerStream: ss, ctx: ctx}))
}

// call is what admit learns about a request, for its log line.
type call struct {
	start                              time.Time
	method, principal, peer, requestID string
}

// admit is the start of every call, unary or streaming: it gives the
// request its id (the caller's x-request-id, else a fresh one),
// authenticates the caller and refuses key and crypto calls while the node
// is not ready. An error is the status to answer with; such a refusal is
// not logged.
func (s *Service) admit(ctx context.Context, method string) (context.Context, *call, error) {
	c := &call{start: time.Now(), method: method}
	// ValueFromIncomingContext reads the one key without copying the
	// call's whole metadata, as FromIncomingContext does.
	if v := metadata.ValueFromIncomingContext(ctx, "x-request-id"); len(v) > 0 && len(v[0]) <= 64 {
		c.requestID = v[0]
	}
	if c.requestID == "" {
		c.requestID = newRequestID()
	}
	ctx = context.WithValue(ctx, requestIDKey, c.requestID)
	c.principal, c.peer = peerPrincipal(ctx)
	if c.principal == "" && !isHealthOrReflection(method) && !s.cfg.InsecureNoClientAuth {
		return ctx, c, errNoClientCert
	}
	ctx = WithPrincipal(ctx, c.principal)
	if servesState(method) {
		if err := s.refuseIfNotReady(); err != nil {
			return ctx, c, toStatus(err).Err()
		}
	}
	return ctx, c, nil
}

// maxCause is the most bytes of an internal error's cause a log line
// carries.
const maxCause = 1024

// finish logs a call admit let through and turns its error into a status.
func (s *Service) finish(ctx context.Context, c *call, err error) error {
	var st *status.Status
	code := codes.OK
	if err != nil {
		st = toStatus(err)
		code = st.Code()
	}
	// Checked here, not only inside LogAttrs: the attributes would be
	// built (and allocated) for every call, logged or not.
	if level := levelFor(code); s.log.Enabled(ctx, level) {
		attrs := []slog.Attr{slog.String("method", c.method), slog.String("principal", c.principal),
			slog.String("peer", c.peer), slog.String("request_id", c.requestID),
			slog.String("code", code.String()), slog.Duration("took", time.Since(c.start))}
		if code == codes.Internal {
			// The caller is told only "internal error"; the cause is
			// here, for the operator (cut, as any error may quote input).
			attrs = append(attrs, slog.String("cause", netlimit.Truncate(err.Error(), maxCause)))
		}
		s.log.LogAttrs(ctx, level, "request", attrs...)
	}
	if err != nil {
		return st.Err()
	}
	return nil
}

// contextStream is a server stream whose handler sees ctx, the stream's
// context with what the interceptors added (request id, principal,
// request).
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }

func levelFor(c codes.Code) slog.Level {
	switch c {
	case codes.OK:
		return slog.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return slog.LevelError
	case codes.Unavailable, codes.ResourceExhausted:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// servesState: key and crypto calls answer from this node's state and HSM,
// so a node that is not ready must not take them. Cluster calls stay open:
// an operator must be able to ask a sick node what is wrong.
func servesState(method string) bool {
	return hasPrefix(method, "/hsmbroker.v1.KeyService/") || hasPrefix(method, "/hsmbroker.v1.CryptoService/") ||
		hasPrefix(method, "/hsmbroker.v1.TDEService/") ||
		hasPrefix(method, "/hsmbroker.v1.RawService/") || hasPrefix(method, "/hsmbroker.v1.DataObjectService/")
}

// servedMethods are the full names of the broker's own gRPC methods, those
// of the services NewGRPCServer registers. A name that pairs one of these
// services with another's method ("/hsmbroker.v1.AuditService/Backup") is
// not among them: the tap refuses it as an unknown method.
var servedMethods = func() map[string]bool {
	m := map[string]bool{}
	for _, d := range []*grpc.ServiceDesc{&pb.KeyService_ServiceDesc, &pb.CryptoService_ServiceDesc,
		&pb.ClusterService_ServiceDesc, &pb.AccessService_ServiceDesc, &pb.TDEService_ServiceDesc,
		&pb.AuditService_ServiceDesc, &pb.RawService_ServiceDesc, &pb.DataObjectService_ServiceDesc} {
		for _, md := range d.Methods {
			m["/"+d.ServiceName+"/"+md.MethodName] = true
		}
		for _, sd := range d.Streams {
			m["/"+d.ServiceName+"/"+sd.StreamName] = true
		}
	}
	return m
}()

// isHealthOrReflection reports whether method is one of the gRPC health
// and reflection methods the server registers: by exact name, so that any
// other name under /grpc.health. or /grpc.reflection. is an unknown method,
// refused and audited as one (tapAdmit).
func isHealthOrReflection(method string) bool {
	switch method {
	case healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName, healthpb.Health_List_FullMethodName,
		reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName,
		reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName:
		return true
	}
	return false
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
