package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"time"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// NewGRPCServer assembles the gRPC server: mutual TLS (tlsConfig must
// require and verify client certificates; nil serves plaintext, for tests
// only), the interceptor chain, the three services, gRPC health and
// reflection. The health status follows the partition and the cluster; see
// WatchHealth.
func (s *Service) NewGRPCServer(tlsConfig *tls.Config) (*grpc.Server, *health.Server) {
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.metricsInterceptor, s.unaryInterceptor, s.accessInterceptor),
		grpc.MaxRecvMsgSize(8 << 20),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
		s.requireClientCert = true
	}
	g := grpc.NewServer(opts...)
	pb.RegisterKeyServiceServer(g, s)
	pb.RegisterCryptoServiceServer(g, s)
	pb.RegisterClusterServiceServer(g, s)
	pb.RegisterAccessServiceServer(g, s)
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
	start := time.Now()
	reqID := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-request-id"); len(v) > 0 && len(v[0]) <= 64 {
			reqID = v[0]
		}
	}
	if reqID == "" {
		reqID = newRequestID()
	}
	ctx = context.WithValue(ctx, requestIDKey, reqID)
	principal, addr := peerPrincipal(ctx)
	if principal == "" && !isHealthOrReflection(info.FullMethod) && s.requireClientCert {
		return nil, status.Error(codes.Unauthenticated, "a client certificate from the cluster CA is required")
	}
	ctx = WithPrincipal(ctx, principal)
	if s.gate.Load() && servesState(info.FullMethod) {
		if ok, why := s.Healthy(); !ok {
			return nil, toStatus(newError(codes.Unavailable, ExcDependencyTimeout, "node %s is not ready (%s); use another node", s.node.ID(), why)).Err()
		}
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-request-id", reqID))
	resp, err := handler(ctx, req)
	st := toStatus(err)
	s.log.LogAttrs(ctx, levelFor(st.Code()), "request",
		slog.String("method", info.FullMethod), slog.String("principal", principal),
		slog.String("peer", addr), slog.String("request_id", reqID),
		slog.String("code", st.Code().String()), slog.Duration("took", time.Since(start)))
	if err != nil {
		return nil, st.Err()
	}
	return resp, nil
}

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
	return hasPrefix(method, "/hsmbroker.v1.KeyService/") || hasPrefix(method, "/hsmbroker.v1.CryptoService/")
}

func isHealthOrReflection(method string) bool {
	return len(method) > 0 && (hasPrefix(method, "/grpc.health.") || hasPrefix(method, "/grpc.reflection."))
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
