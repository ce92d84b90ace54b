package broker

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLeaderError: what a follower makes of a forwarded write that failed
// at the leader. The leader's own refusal keeps its code and exception; a
// call that broke off after it was sent (the leader died) is Unavailable
// and says the write may or may not have been applied, on every front
// (Classify), never an internal error.
func TestLeaderError(t *testing.T) {
	s := &Service{log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	refused, err := status.New(codes.FailedPrecondition, "key 1234 is pending deletion").
		WithDetails(&errdetails.ErrorInfo{Reason: ExcInvalidState, Domain: ErrorDomain})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		st        *status.Status
		code      codes.Code
		exception string
		says      string
	}{
		{"the leader's refusal", refused, codes.FailedPrecondition, ExcInvalidState, "pending deletion"},
		{"the leader died", status.New(codes.Unavailable, "error reading from server: EOF"), codes.Unavailable, ExcDependencyTimeout, "may or may not have been applied"},
		{"the stream was reset", status.New(codes.Internal, "stream terminated by RST_STREAM"), codes.Unavailable, ExcDependencyTimeout, "re-read before retrying"},
		{"a detail of another domain", status.New(codes.Unknown, "x"), codes.Unavailable, ExcDependencyTimeout, "may or may not"},
	} {
		code, exc, msg := Classify(s.leaderError(ctx, c.st))
		if code != c.code || exc != c.exception || !strings.Contains(msg, c.says) {
			t.Errorf("%s: %s %s %q; want %s %s mentioning %q", c.name, code, exc, msg, c.code, c.exception, c.says)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if code, _, _ := Classify(s.leaderError(canceled, status.New(codes.Canceled, "context canceled"))); code != codes.Canceled {
		t.Errorf("the caller gave up: %s, want Canceled", code)
	}
}
