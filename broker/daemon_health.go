package broker

import (
	"context"
	"time"
)

// WatchHealth re-checks readiness (Service.Ready) every HealthInterval
// until ctx ends, and keeps the gRPC health service (overall and per
// service) and Healthy in step. From its start, key and crypto calls are
// refused while the node is not ready. A node whose HSM fails reports
// NOT_SERVING and comes back by itself when the HSM does.
func (d *Daemon) WatchHealth(ctx context.Context) {
	s := d.svc
	hs, interval := d.cfg.Health, d.cfg.HealthInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	s.health.mu.Lock()
	s.health.srv = hs
	s.health.mu.Unlock()
	s.gate.Store(true)
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		s.Ready(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
