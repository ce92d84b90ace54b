package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// readyCheckTimeout bounds one /readyz check; a token slower than this to
// answer counts as not ready.
const readyCheckTimeout = 1500 * time.Millisecond

// setNotServing marks the server and each API service NOT_SERVING. The
// gRPC health server starts out saying SERVING for "", which would be a lie
// until broker's WatchHealth has checked the node.
func setNotServing(hs *health.Server) {
	for _, s := range []string{"", pb.KeyService_ServiceDesc.ServiceName, pb.CryptoService_ServiceDesc.ServiceName,
		pb.ClusterService_ServiceDesc.ServiceName} {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// serveLive answers /healthz: the process is up and serving HTTP.
func serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyHandler answers /readyz from a fresh check (HSM answers and holds
// the domain key, a leader is known), so that a load balancer sees a failed
// HSM at once rather than at the next health watch.
func readyHandler(svc *broker.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyCheckTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ok, reason := svc.Ready(ctx); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}
