package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	// healthInterval is how often the gRPC health status is re-checked.
	healthInterval = 2 * time.Second
	// healthCheckTimeout bounds one check; a token slower than this to
	// answer counts as unhealthy.
	healthCheckTimeout = 1500 * time.Millisecond
)

// healthServices are the names the gRPC health server reports on: the
// server as a whole ("") and each API service.
var healthServices = []string{
	"",
	pb.KeyService_ServiceDesc.ServiceName,
	pb.CryptoService_ServiceDesc.ServiceName,
	pb.ClusterService_ServiceDesc.ServiceName,
}

// healthReporter turns the partition's and the node's condition into the
// gRPC health status and the HTTP probes. A node is ready when its HSM
// answers and it knows a Raft leader: then it can serve cryptographic
// requests and route writes.
type healthReporter struct {
	p    *hsm.Partition
	node *cluster.Node
	hs   *health.Server
	log  *slog.Logger

	mu     sync.Mutex
	known  bool  // set has run once
	served bool  // the node has been serving at least once
	reason error // last verdict; nil when serving
}

func newHealthReporter(p *hsm.Partition, node *cluster.Node, hs *health.Server, log *slog.Logger) *healthReporter {
	return &healthReporter{p: p, node: node, hs: hs, log: log}
}

// check returns nil when the node is ready, else why not.
func (h *healthReporter) check(ctx context.Context) error {
	if err := h.p.Healthy(ctx); err != nil {
		return fmt.Errorf("HSM partition: %w", err)
	}
	if id, _ := h.node.Leader(); id == "" {
		return errors.New("no Raft leader known")
	}
	return nil
}

// set publishes a verdict on the gRPC health server and logs changes.
func (h *healthReporter) set(reason error) {
	st := healthpb.HealthCheckResponse_SERVING
	if reason != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, s := range healthServices {
		h.hs.SetServingStatus(s, st)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := !h.known || (reason == nil) != (h.reason == nil) ||
		(reason != nil && h.reason != nil && reason.Error() != h.reason.Error())
	switch {
	case !changed || !h.known:
	case reason == nil:
		h.log.Info("health: serving")
	case !h.served:
		// Start-up: the first election is still running.
		h.log.Debug("health: not serving yet", "reason", reason.Error())
	default:
		h.log.Warn("health: not serving", "reason", reason.Error())
	}
	h.known, h.reason = true, reason
	h.served = h.served || reason == nil
}

// update checks now and publishes the verdict.
func (h *healthReporter) update(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
	defer cancel()
	err := h.check(cctx)
	if ctx.Err() != nil {
		return // shutting down: the verdict says nothing about the node
	}
	h.set(err)
}

// watch re-checks every healthInterval until ctx ends.
func (h *healthReporter) watch(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		h.update(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serveLive answers /healthz: the process is up and serving HTTP.
func (h *healthReporter) serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// serveReady answers /readyz from a fresh check, so that a load balancer
// sees a failed HSM at once rather than up to healthInterval later.
func (h *healthReporter) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthCheckTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.check(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ready")
}
