package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// Client is a connection to a cluster of brokers. Its service clients are
// safe for concurrent use; each call goes to one endpoint, chosen and
// retried as the package doc describes.
type Client struct {
	// Keys creates and manages keys and aliases.
	Keys pb.KeyServiceClient
	// Crypto uses keys: encrypt, decrypt, data keys, sign, MACs, random.
	Crypto pb.CryptoServiceClient
	// Cluster operates the cluster of brokers.
	Cluster pb.ClusterServiceClient
	// Access says who the caller is, manages principals' roles and reads
	// the audit log.
	Access pb.AccessServiceClient
	// TDE manages the keys and tokens of the TDE key endpoint.
	TDE pb.TDEServiceClient
	// Audit lists the checkpoints of the nodes' audit logs.
	Audit pb.AuditServiceClient
	// Raw is raw AES on RAW_ENCRYPT_DECRYPT keys, and DataObjects the
	// PKCS#11 data objects; libhsmbroker-pkcs11.so uses both.
	Raw         pb.RawServiceClient
	DataObjects pb.DataObjectServiceClient

	router *router
}

// Dial makes one gRPC connection per endpoint, authenticated with mutual
// TLS 1.3, and returns a Client over them. Connections are made in the
// background: an unreachable endpoint does not make Dial fail, only calls,
// once every endpoint has been tried. An endpoint that is not host:port
// does (see CheckEndpoint). ctx only cancels Dial itself.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errNoEndpoints
	}
	for _, addr := range cfg.Endpoints {
		if err := CheckEndpoint(addr); err != nil {
			return nil, err
		}
	}
	cfg = cfg.withDefaults()
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	creds := credentials.NewTLS(tlsCfg)
	r := &router{cfg: cfg}
	for _, addr := range cfg.Endpoints {
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
			grpc.WithChainUnaryInterceptor(recordUnary(addr)),
			grpc.WithChainStreamInterceptor(recordStream(addr)),
		)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("client: endpoint %q: %w", addr, err)
		}
		conn.Connect()
		r.endpoints = append(r.endpoints, &endpoint{addr: addr, conn: conn})
	}
	cc := calls{r}
	return &Client{
		Keys:        pb.NewKeyServiceClient(cc),
		Crypto:      pb.NewCryptoServiceClient(cc),
		Cluster:     pb.NewClusterServiceClient(cc),
		Access:      pb.NewAccessServiceClient(cc),
		TDE:         pb.NewTDEServiceClient(cc),
		Audit:       pb.NewAuditServiceClient(cc),
		Raw:         pb.NewRawServiceClient(cc),
		DataObjects: pb.NewDataObjectServiceClient(cc),
		router:      r,
	}, nil
}

// ErrInvalidEndpoint is matched by the error Dial returns for an endpoint
// that CheckEndpoint refuses.
var ErrInvalidEndpoint = errors.New("client: invalid endpoint")

// CheckEndpoint checks that addr is host:port with both parts given, as
// Config.Endpoints wants: without a port, gRPC would quietly dial its
// default, 443. Targets with a gRPC scheme ("dns:///host:port",
// "unix:///path") are left to gRPC; any other scheme ("http://host:port")
// is refused, since gRPC would take the whole of it for a host name.
// Errors match ErrInvalidEndpoint.
func CheckEndpoint(addr string) error {
	if strings.HasPrefix(addr, "unix:") {
		return nil
	}
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		if resolver.Get(strings.ToLower(scheme)) != nil {
			return nil
		}
		example := "127.0.0.1:7400"
		if h, p, err := net.SplitHostPort(strings.TrimSuffix(rest, "/")); err == nil && h != "" && p != "" {
			example = net.JoinHostPort(h, p)
		}
		return fmt.Errorf("%w %q: %s:// is not a gRPC target scheme; give host:port without a scheme, such as %s",
			ErrInvalidEndpoint, addr, scheme, example)
	}
	host, port, err := net.SplitHostPort(addr)
	var problem string
	switch {
	case err != nil && strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "["):
		problem = "an IPv6 address needs brackets and a port, such as [::1]:7400"
	case err != nil && !strings.Contains(addr, ":"):
		problem = fmt.Sprintf("no port; want host:port, such as %s:7400", addr)
	case err != nil:
		problem = "want host:port, such as 127.0.0.1:7400"
	case port == "":
		problem = fmt.Sprintf("no port; want host:port, such as %s7400", addr)
	case host == "":
		problem = fmt.Sprintf("no host; want host:port, such as 127.0.0.1%s", addr)
	default:
		return nil
	}
	return fmt.Errorf("%w %q: %s", ErrInvalidEndpoint, addr, problem)
}

// Close closes every connection. Calls in flight fail with codes.Canceled.
func (c *Client) Close() error {
	return c.router.close()
}

// Endpoints returns the configured endpoints, in configuration order.
func (c *Client) Endpoints() []string {
	out := make([]string, len(c.router.endpoints))
	for i, e := range c.router.endpoints {
		out[i] = e.addr
	}
	return out
}

// PreferredEndpoint returns the endpoint the next call tries first: the last
// one that answered.
func (c *Client) PreferredEndpoint() string {
	return c.router.endpoints[c.router.preferred.Load()].addr
}

type endpoint struct {
	addr string
	conn *grpc.ClientConn
	// downUntil is when, in Unix nanoseconds, a failed endpoint becomes a
	// candidate again ahead of the others.
	downUntil atomic.Int64
	// failures counts consecutive failures, to lengthen downUntil.
	failures atomic.Int32
}

// EndpointError is how one endpoint failed an attempt of a call.
type EndpointError struct {
	Endpoint string
	Err      error
}

// AttemptErrors returns, for the error of a failed call, the last failure
// of each endpoint the call tried, in the order they were first tried: so
// that a caller can say why every endpoint failed, not only the last.
// It returns nil for nil, and for errors that did not come from a call.
func AttemptErrors(err error) []EndpointError {
	var ae *attemptsError
	if errors.As(err, &ae) {
		return ae.attempts
	}
	return nil
}

// calls is what the service clients call through: the router, with the
// failures of each call's attempts, as the connections' interceptors see
// them, kept with the call's error for AttemptErrors.
type calls struct{ r *router }

func (c calls) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, log := withAttemptLog(ctx)
	if err := c.r.Invoke(ctx, method, args, reply, opts...); err != nil {
		return log.wrap(err)
	}
	return nil
}

func (c calls) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, log := withAttemptLog(ctx)
	s, err := c.r.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, log.wrap(err)
	}
	return &loggedStream{ClientStream: s, log: log}, nil
}

// loggedStream adds the attempts' failures to the errors of RecvMsg, where
// a retried stream makes its later attempts.
type loggedStream struct {
	grpc.ClientStream
	log *attemptLog
}

func (s *loggedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || err == io.EOF {
		return err
	}
	return s.log.wrap(err)
}

// attemptLog collects the failures of one call's attempts, by endpoint.
type attemptLog struct {
	mu       sync.Mutex
	attempts []EndpointError
}

type attemptLogKey struct{}

func withAttemptLog(ctx context.Context) (context.Context, *attemptLog) {
	log := &attemptLog{}
	return context.WithValue(ctx, attemptLogKey{}, log), log
}

// addAttempt records err as endpoint's failure in the call of ctx, if
// any. A canceled attempt is not a failure of the endpoint: the caller
// gave up, or a stream's own timer ended it (and the stream reports that).
func addAttempt(ctx context.Context, endpoint string, err error) {
	log, ok := ctx.Value(attemptLogKey{}).(*attemptLog)
	if !ok || err == nil || err == io.EOF || status.Code(err) == codes.Canceled {
		return
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	log.set(endpoint, err)
}

// set records err as endpoint's last failure; l.mu is held.
func (l *attemptLog) set(endpoint string, err error) {
	for i := range l.attempts {
		if l.attempts[i].Endpoint == endpoint {
			l.attempts[i].Err = err
			return
		}
	}
	l.attempts = append(l.attempts, EndpointError{Endpoint: endpoint, Err: err})
}

// wrap returns a call's error err with the failures recorded, the last
// attempt's being err itself; or err alone when it names no endpoint.
func (l *attemptLog) wrap(err error) error {
	var ce *callError
	if !errors.As(err, &ce) || ce.endpoint == "" {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.set(ce.endpoint, ce.err)
	return &attemptsError{err: err, attempts: append([]EndpointError(nil), l.attempts...)}
}

// attemptsError is a failed call's error with its attempts' failures. It
// reads as err, and has err's status.
type attemptsError struct {
	err      error
	attempts []EndpointError
}

func (e *attemptsError) Error() string              { return e.err.Error() }
func (e *attemptsError) Unwrap() error              { return e.err }
func (e *attemptsError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// recordUnary and recordStream are the interceptors of endpoint's
// connection: they note its failures in the call's attemptLog.
func recordUnary(endpoint string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		addAttempt(ctx, endpoint, err)
		return err
	}
}

func recordStream(endpoint string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			addAttempt(ctx, endpoint, err)
			return nil, err
		}
		return &recordedStream{ClientStream: s, ctx: ctx, endpoint: endpoint}, nil
	}
}

type recordedStream struct {
	grpc.ClientStream
	ctx      context.Context
	endpoint string
}

func (s *recordedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	addAttempt(s.ctx, s.endpoint, err)
	return err
}

func (r *router) close() error {
	var errs []error
	for _, e := range r.endpoints {
		errs = append(errs, e.conn.Close())
	}
	return errors.Join(errs...)
}
