package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// RequestIDHeader is the gRPC metadata key that carries a call's request id.
// The broker writes it to its audit log, so a failed call can be found there.
const RequestIDHeader = "x-request-id"

// Backoff between attempts: full jitter over an exponentially growing window.
const (
	backoffBase = 50 * time.Millisecond
	backoffMax  = 2 * time.Second
)

// How long a failed endpoint is passed over while others remain: downBase,
// doubling with each consecutive failure, at most downMax.
const (
	downBase = 500 * time.Millisecond
	downMax  = 30 * time.Second
)

// router is the grpc.ClientConnInterface behind the Client's service
// clients: the one place where endpoints are chosen, deadlines set, request
// ids attached and failures retried.
type router struct {
	cfg       Config
	endpoints []*endpoint
	preferred atomic.Int32 // index of the endpoint that last answered
}

// Invoke runs a unary call: on the preferred healthy endpoint first, then
// on the next ones as the retry rule allows (see the package doc).
func (r *router) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, id := withRequestID(ctx)
	idempotent := idempotentMethods[method]
	tried := make([]bool, len(r.endpoints))
	var lastErr error
	var lastEndpoint string
	for attempt := 0; attempt <= r.cfg.Retries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				break // the caller gave up: report the last failure
			}
			if m, ok := reply.(proto.Message); ok {
				proto.Reset(m)
			}
		}
		i := r.pick(tried)
		e := r.endpoints[i]
		tried[i] = true
		var p peer.Peer
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		err := e.conn.Invoke(actx, method, args, reply, append(opts[:len(opts):len(opts)], grpc.Peer(&p))...)
		cancel()
		if err == nil {
			r.answered(i)
			return nil
		}
		lastErr, lastEndpoint = err, e.addr
		if ctx.Err() != nil {
			break // the caller gave up; that says nothing about the endpoint
		}
		// An empty peer means no stream was opened on any connection: the
		// request never left this process.
		sent := p.Addr != nil
		if !failover(err) {
			// The broker answered (NotFound, InvalidArgument...): it works.
			r.answered(i)
			break
		}
		r.failed(e)
		if !retryable(err, idempotent, sent) {
			break
		}
	}
	return &callError{err: lastErr, requestID: id, endpoint: lastEndpoint}
}

// pick returns the index of the endpoint for the next attempt: starting at
// the preferred one, the first not yet tried in this call that is healthy,
// else the first not yet tried, else (every endpoint tried) the first
// healthy one, else the preferred one. It marks nothing.
func (r *router) pick(tried []bool) int {
	n := len(r.endpoints)
	start := int(r.preferred.Load())
	now := time.Now().UnixNano()
	healthy := func(i int) bool {
		e := r.endpoints[i]
		return e.downUntil.Load() <= now && e.conn.GetState() != connectivity.TransientFailure
	}
	for _, want := range []func(int) bool{
		func(i int) bool { return !tried[i] && healthy(i) },
		func(i int) bool { return !tried[i] },
		healthy,
	} {
		for k := range n {
			if i := (start + k) % n; want(i) {
				return i
			}
		}
	}
	return start
}

// answered records that endpoint i served a call.
func (r *router) answered(i int) {
	e := r.endpoints[i]
	e.failures.Store(0)
	e.downUntil.Store(0)
	r.preferred.Store(int32(i))
}

// failed passes over e for a while that grows with its consecutive failures.
func (r *router) failed(e *endpoint) {
	f := e.failures.Add(1)
	d := downMax
	if f < 16 {
		d = min(downBase<<(f-1), downMax)
	}
	e.downUntil.Store(time.Now().Add(d).UnixNano())
}

// backoff is the wait before retry attempt n (n >= 1): uniformly random in
// [0, min(backoffMax, backoffBase*2^(n-1))].
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffBase<<(n-1), backoffMax)
	}
	return mrand.N(d + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WithRequestID returns a context whose calls carry id as their request id,
// for callers that correlate calls with their own traces. Without it, each
// call gets a fresh random id, kept across its retries.
func WithRequestID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id)
}

func withRequestID(ctx context.Context) (context.Context, string) {
	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) > 0 && v[0] != "" {
			return ctx, v[0]
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	id := hex.EncodeToString(b[:])
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id), id
}
