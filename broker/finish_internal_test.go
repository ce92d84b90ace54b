package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFinishLogsTheCauseOfInternalErrors: the caller of a call that fails
// with an internal error is told only "internal error"; the request's log
// line carries the cause, cut to maxCause bytes. Other errors' lines do
// not (their message is the caller's answer).
func TestFinishLogsTheCauseOfInternalErrors(t *testing.T) {
	var buf bytes.Buffer
	s := &Service{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	c := &call{start: time.Now(), method: "/hsmbroker.v1.ClusterService/JoinCluster", principal: "node4", requestID: "r1"}
	err := s.finish(context.Background(), c, errors.New("add voter node4: raft: configuration changed since 41 (latest is 44)"))
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "raft") {
		t.Fatalf("the caller's error: %v", err)
	}
	if !strings.Contains(buf.String(), `"cause":"add voter node4: raft: configuration changed since 41 (latest is 44)"`) {
		t.Fatalf("log line without the cause: %s", buf.String())
	}
	buf.Reset()
	_ = s.finish(context.Background(), c, errors.New(strings.Repeat("x", 5000)))
	if n := strings.Count(buf.String(), "x"); n < maxCause || n > maxCause+10 {
		t.Fatalf("a cause of 5000 bytes logged with %d of them", n)
	}
	buf.Reset()
	_ = s.finish(context.Background(), c, errInvalidArg(ExcValidation, "invalid NodeId"))
	if strings.Contains(buf.String(), "cause") {
		t.Fatalf("a validation error's line carries a cause: %s", buf.String())
	}
}

// TestServedMethodsAreTheRegisteredOnes: the tap's list of the broker's
// methods is exactly what the gRPC server serves, health and reflection
// aside.
func TestServedMethodsAreTheRegisteredOnes(t *testing.T) {
	g, _ := (&Service{}).NewGRPCServer(nil)
	registered := map[string]bool{}
	for name, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			if !isHealthOrReflection(full) {
				registered[full] = true
			}
		}
	}
	if len(registered) != len(servedMethods) {
		t.Errorf("%d methods registered, %d in servedMethods", len(registered), len(servedMethods))
	}
	for m := range registered {
		if !servedMethods[m] {
			t.Errorf("%s is served but not in servedMethods", m)
		}
	}
}
