package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// waitFor polls cond until it holds, failing the test after 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	hsmtest.WaitUntil(t, what, 20*time.Second, cond)
}

// TestDaemonRunBringsTheNodeUp: Run does what the daemon does at start: a
// node that must catch up serves only once Run's heartbeat has been
// applied; the domain key check is recorded (audited as internal work),
// the node's record carries its address and health (no audit line), the
// audit log is anchored and checkpointed, the preloader loads the keys
// once the node is ready, and Run returns when its context ends.
func TestDaemonRunBringsTheNodeUp(t *testing.T) {
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	p := hsmtest.NewPartition(t)
	node, svc := newBareNode(t, "node1", p, broker.Config{RequireCaughtUp: true, AuditLog: audit.New(lb, audit.Options{})})
	ctx := ctxT(t)
	if _, err := svc.CreateKey(broker.Internal(ctx, "test"), broker.CreateKeyRequest{Alias: "alias/preloaded"}); err != nil {
		t.Fatal(err)
	}
	p.EvictAll(ctx) // as on a node that has just started: nothing loaded
	if ok, reason := svc.Ready(ctx); ok || !strings.Contains(reason, "catching up") {
		t.Fatalf("before Run: ready %v (%q), want not ready while catching up", ok, reason)
	}

	hs := health.NewServer()
	pl := broker.NewPreloader(p, hsmtest.QuietLogger())
	dm := broker.NewDaemon(svc, broker.DaemonConfig{GRPCAddr: "127.0.0.1:1", Health: hs, Preloader: pl,
		HealthInterval: 20 * time.Millisecond, HeartbeatCheck: 50 * time.Millisecond, AuditCheckpointInterval: 50 * time.Millisecond})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- dm.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	waitFor(t, "node serving", func() bool { ok, _ := svc.Healthy(); return ok })
	r, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.CryptoService_ServiceDesc.ServiceName})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health of CryptoService: %v %v, want SERVING", r, err)
	}
	if len(node.State().DomainKeyCheck()) == 0 {
		t.Fatal("no domain key check recorded")
	}
	rec, ok := node.State().Node("node1")
	if !ok || rec.GRPCAddr != "127.0.0.1:1" || rec.Partition.Health != "ok" || !rec.Partition.DomainKeyPresent {
		t.Fatalf("node record %+v (present %v), want address 127.0.0.1:1 and a healthy partition holding the domain key", rec, ok)
	}
	waitFor(t, "audit checkpoint", func() bool { return len(node.State().AuditHeads("node1")) > 0 })
	waitFor(t, "preload", func() bool { n, _, _ := p.CacheStats(); return pl.Loaded() == 1 && n == 1 })

	lines := lb.String()
	if !strings.Contains(lines, `"internal:domain-key-check"`) {
		t.Errorf("the domain key check is not audited as internal work:\n%s", lines)
	}
	for _, quiet := range []string{"internal:heartbeat", "internal:audit-checkpoint"} {
		if strings.Contains(lines, quiet) {
			t.Errorf("%s wrote audit lines:\n%s", quiet, lines)
		}
	}

	stop()
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run at the end of its context: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestDaemonRunRefusesAForeignDomainKey: a node whose HSM holds a domain
// key other than the cluster's must not serve; Run returns that error
// instead of retrying, and the node never becomes ready.
func TestDaemonRunRefusesAForeignDomainKey(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	open := func(p *hsm.Partition) (*cluster.Node, *broker.Service) {
		t.Helper()
		node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: dir, Bootstrap: true,
			Logger: hsmtest.QuietLogger(), Observer: broker.Observer(p)})
		if err != nil {
			t.Fatal(err)
		}
		if err := node.WaitForLeader(ctx); err != nil {
			t.Fatal(err)
		}
		svc, err := broker.New(broker.Config{Node: node, Partition: p, Logger: hsmtest.QuietLogger(), RequireCaughtUp: true})
		if err != nil {
			t.Fatal(err)
		}
		return node, svc
	}
	// The cluster records the check blob of its first HSM's domain key.
	node, svc := open(hsmtest.NewPartition(t))
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	if err := node.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// The same node restarts over an HSM with another domain key.
	node, svc = open(hsmtest.NewPartition(t))
	t.Cleanup(func() { svc.Close(); _ = node.Shutdown() })
	dm := broker.NewDaemon(svc, broker.DaemonConfig{GRPCAddr: "127.0.0.1:1", HealthInterval: 20 * time.Millisecond})
	runCtx, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	err := dm.Run(runCtx)
	if !errors.Is(err, hsm.ErrWrongDomainKey) || !strings.Contains(err.Error(), "other than the cluster's") || runCtx.Err() != nil {
		t.Fatalf("Run over a foreign domain key: %v (context %v), want the wrong domain key refused at once", err, runCtx.Err())
	}
	if ok, reason := svc.Healthy(); ok {
		t.Fatalf("the node reports itself ready (%q) over a foreign domain key", reason)
	}
}

// TestCheckpointAfterRestartIsQuiet: a checkpointer that starts again (as
// on a restart) on a log whose head the cluster has a checkpoint of
// already does not propose it again, which the cluster would refuse and
// the node log as a failure to retry.
func TestCheckpointAfterRestartIsQuiet(t *testing.T) {
	ctx := ctxT(t)
	p := hsmtest.NewPartition(t)
	node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true,
		Logger: hsmtest.QuietLogger(), Observer: broker.Observer(p)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	if err := node.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{b: &bytes.Buffer{}}
	alog := audit.New(&lockedBuffer{b: &bytes.Buffer{}}, audit.Options{})
	svc, err := broker.New(broker.Config{NodeID: "node1", Node: node, Partition: p, AuditLog: alog,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if _, err := svc.CreateKey(broker.Internal(ctx, "test"), broker.CreateKeyRequest{Alias: "alias/checkpointed"}); err != nil {
		t.Fatal(err)
	}
	dm := broker.NewDaemon(svc, broker.DaemonConfig{AuditCheckpointInterval: 20 * time.Millisecond})
	checkpointed := func() bool {
		_, seq, _ := alog.Head()
		for _, h := range node.State().AuditHeads("node1") {
			if h.Last.Seq == seq {
				return true
			}
		}
		return false
	}
	for run := 1; run <= 2; run++ {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { dm.CheckpointAudit(runCtx); close(done) }()
		waitFor(t, fmt.Sprintf("run %d: the head checkpointed", run), checkpointed)
		time.Sleep(100 * time.Millisecond) // several more intervals
		stop()
		<-done
	}
	if strings.Contains(logs.String(), "not recorded") {
		t.Errorf("the second run proposed a checkpoint the cluster has:\n%s", logs.String())
	}
}
