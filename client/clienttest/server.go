// Package clienttest runs fake brokers for testing code that uses the
// client package, as net/http/httptest does for HTTP: a gRPC server on the
// loopback interface, with mutual TLS from a throwaway CA, serving an
// in-memory Fake of the key and crypto services.
//
// The Fake keeps keys in process memory, in software, and checks no
// permissions: it is a test double for the API, not an HSM and not a
// security boundary. Its request checks, limits and messages come from the
// broker's package keys, and TestBroker, the conformance suite that
// the Fake and a real broker both pass, holds it to the broker's answers.
// Tests that need the real broker use hsmtest.
package clienttest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Hook runs before every call a Server receives; a non-nil error fails the
// call with it instead of serving it. It may block, for example until ctx
// is done to provoke a client timeout.
type Hook func(ctx context.Context, method string) error

// Call is a call a Server received.
type Call struct {
	Method    string // full method name, "/hsmbroker.v1.KeyService/CreateKey"
	RequestID string // its x-request-id metadata
}

// Server is a gRPC server on 127.0.0.1 serving a Fake over mutual TLS.
type Server struct {
	// Addr is the host:port the server listens on.
	Addr string
	// PKI holds the CA and client certificate files that reach it.
	PKI *PKI
	// Fake is the state it serves; servers sharing one act as one cluster.
	Fake *Fake

	srv *grpc.Server
	lis net.Listener

	mu    sync.Mutex
	hook  Hook
	calls []Call
}

// NewServer starts a server with its own PKI and Fake, stopped by
// t.Cleanup.
func NewServer(t testing.TB) *Server {
	t.Helper()
	return Start(t, NewPKI(t), NewFake())
}

// Start starts a server for fake, with the certificates of pki, stopped by
// t.Cleanup. Servers started with the same pki and fake form a cluster a
// client can fail over between.
func Start(t testing.TB, pki *PKI, fake *Fake) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: lis.Addr().String(), PKI: pki, Fake: fake, lis: lis}
	s.srv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(pki.ServerTLS())),
		grpc.UnaryInterceptor(s.intercept),
		grpc.StreamInterceptor(s.interceptStream),
	)
	pb.RegisterKeyServiceServer(s.srv, fake)
	pb.RegisterCryptoServiceServer(s.srv, fake)
	pb.RegisterClusterServiceServer(s.srv, fake)
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop closes the listener and every connection at once; calls in flight
// fail. Stopping twice is harmless.
func (s *Server) Stop() { s.srv.Stop() }

// SetHook installs h (nil removes it).
func (s *Server) SetHook(h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

// FailNext makes the next n calls of method (a full method name, or "" for
// any) fail with err.
func (s *Server) FailNext(method string, n int, err error) {
	var mu sync.Mutex
	s.SetHook(func(_ context.Context, m string) error {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 && (method == "" || m == method) {
			n--
			return err
		}
		return nil
	})
}

// Calls returns the calls received so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.received(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) interceptStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.received(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// received records a call and runs the hook on it.
func (s *Server) received(ctx context.Context, method string) error {
	var id string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-request-id"); len(v) > 0 {
			id = v[0]
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, Call{Method: method, RequestID: id})
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		return hook(ctx, method)
	}
	return nil
}

// Error returns a broker-style error: a status with code and message and a
// google.rpc.ErrorInfo detail in the "hsmbroker" domain whose reason is the
// AWS KMS exception name.
func Error(code codes.Code, exception, format string, args ...any) error {
	return withInfo(code, &errdetails.ErrorInfo{Domain: "hsmbroker", Reason: exception}, fmt.Sprintf(format, args...))
}

// NotCarriedOutError is Error, marked the way a broker marks an error it
// gave before doing anything for the request (client.MetaNotCarriedOut).
func NotCarriedOutError(code codes.Code, exception, format string, args ...any) error {
	info := &errdetails.ErrorInfo{Domain: "hsmbroker", Reason: exception, Metadata: map[string]string{"not_carried_out": "true"}}
	return withInfo(code, info, fmt.Sprintf(format, args...))
}

func withInfo(code codes.Code, info *errdetails.ErrorInfo, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(info); err == nil {
		st = d
	}
	return st.Err()
}
