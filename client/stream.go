package client

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// NewStream opens a stream, with a request id, on the preferred healthy
// endpoint. A stream's lifetime is the caller's: it has no deadline of its
// own once it is flowing.
//
// An idempotent server-streaming call (ClusterService.Backup) is retried
// like an idempotent unary call, but only until its first message arrives:
// each attempt must deliver one within Config.Timeout, or it fails with
// DeadlineExceeded and the next endpoint is tried. Once a message has
// arrived, a failure ends the stream, because the caller may already have
// used what came before it. Other streams get one attempt, as there is
// then no telling whether the broker acted on what was sent.
func (r *router) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, id := withRequestID(ctx)
	s := &stream{r: r, ctx: ctx, desc: desc, method: method, opts: opts, id: id,
		retry: desc.ServerStreams && !desc.ClientStreams && idempotentMethods[method],
		tried: make([]bool, len(r.endpoints))}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// stream is a client stream over one endpoint at a time. It is meant for
// the generated code's use: SendMsg and CloseSend before the first RecvMsg
// for a server-streaming call.
type stream struct {
	r      *router
	ctx    context.Context // the caller's, with the request id
	desc   *grpc.StreamDesc
	method string
	opts   []grpc.CallOption
	id     string
	// retry: the stream may move to another endpoint until its first
	// message arrives.
	retry    bool
	tried    []bool
	attempts int
	sent     []any // the messages sent, replayed by a new attempt (retry only)
	closed   bool  // CloseSend was called
	received bool  // a message arrived: no more attempts

	mu  sync.Mutex
	cur *attempt
}

// attempt is the stream on one endpoint.
type attempt struct {
	cs     grpc.ClientStream
	i      int // the endpoint's index
	cancel context.CancelFunc
	// timer ends the attempt if no message arrives within Config.Timeout
	// (retry only); timedOut says it did.
	timer    *time.Timer
	timedOut atomic.Bool
}

func (a *attempt) stop() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.cancel()
}

func (s *stream) current() *attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// open starts an attempt on the next endpoint, replaying what was sent,
// and moves on while the retry rule allows.
func (s *stream) open() error {
	for {
		i := s.r.pick(s.tried)
		s.tried[i] = true
		s.attempts++
		actx, cancel := context.WithCancel(s.ctx)
		a := &attempt{i: i, cancel: cancel}
		if s.retry {
			a.timer = time.AfterFunc(s.r.cfg.Timeout, func() {
				a.timedOut.Store(true)
				cancel()
			})
		}
		cs, err := s.r.endpoints[i].conn.NewStream(actx, s.desc, s.method, s.opts...)
		if err == nil {
			a.cs = cs
			err = s.replay(cs)
		}
		if err == nil {
			s.mu.Lock()
			s.cur = a
			s.mu.Unlock()
			return nil
		}
		a.stop()
		if err := s.next(a, err); err != nil {
			return err
		}
	}
}

// replay sends a new attempt what the caller sent the failed one. io.EOF
// from SendMsg means the attempt has already failed; its RecvMsg tells
// why.
func (s *stream) replay(cs grpc.ClientStream) error {
	for _, m := range s.sent {
		if err := cs.SendMsg(m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
	if s.closed {
		return cs.CloseSend()
	}
	return nil
}

// next decides, after attempt a failed with err before any message
// arrived, whether to try another endpoint: nil after the backoff if so,
// else the error to return.
func (s *stream) next(a *attempt, err error) error {
	err = s.attemptErr(a, err)
	e := s.r.endpoints[a.i]
	if s.ctx.Err() != nil {
		return s.fail(a, err) // the caller gave up; that says nothing about the endpoint
	}
	if !failover(err) {
		s.r.answered(a.i)
		return s.fail(a, err)
	}
	s.r.failed(e)
	if !s.retry || s.attempts > s.r.cfg.Retries {
		return s.fail(a, err)
	}
	if serr := sleep(s.ctx, backoff(s.attempts)); serr != nil {
		return s.fail(a, err) // the caller gave up: report the last failure
	}
	return nil
}

// attemptErr is err, or DeadlineExceeded if a's timer ended it.
func (s *stream) attemptErr(a *attempt, err error) error {
	if a.timedOut.Load() && s.ctx.Err() == nil {
		return status.Error(codes.DeadlineExceeded, fmt.Sprintf("no message from the broker within %v", s.r.cfg.Timeout))
	}
	return err
}

func (s *stream) fail(a *attempt, err error) error {
	return &callError{err: err, requestID: s.id, endpoint: s.r.endpoints[a.i].addr}
}

func (s *stream) SendMsg(m any) error {
	if s.retry && !s.received {
		s.sent = append(s.sent, m)
	}
	err := s.current().cs.SendMsg(m)
	if err == io.EOF && s.retry && !s.received {
		return nil // the attempt failed; RecvMsg finds out why and moves on
	}
	return err
}

func (s *stream) CloseSend() error {
	s.closed = true
	return s.current().cs.CloseSend()
}

func (s *stream) RecvMsg(m any) error {
	for {
		a := s.current()
		err := a.cs.RecvMsg(m)
		if err == nil {
			if !s.received {
				s.received = true
				if a.timer != nil {
					a.timer.Stop()
				}
				s.r.answered(a.i)
			}
			return nil
		}
		a.stop()
		if err == io.EOF {
			if !s.received {
				s.r.answered(a.i) // an empty stream, ended well
			}
			return io.EOF
		}
		if s.received {
			// Mid-stream: never retried.
			return s.fail(a, s.attemptErr(a, err))
		}
		if err := s.next(a, err); err != nil {
			return err
		}
		if err := s.open(); err != nil {
			return err
		}
	}
}

func (s *stream) Header() (metadata.MD, error) { return s.current().cs.Header() }
func (s *stream) Trailer() metadata.MD         { return s.current().cs.Trailer() }
func (s *stream) Context() context.Context     { return s.current().cs.Context() }
