package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"google.golang.org/grpc/health"
)

// DaemonConfig wires a Daemon. Zero values of optional fields mean their
// defaults.
type DaemonConfig struct {
	// GRPCAddr is the gRPC address other nodes and clients reach this node
	// at: the node's record in the replicated state carries it, and a join
	// sends it to the leader.
	GRPCAddr string
	// Join, when set, makes Run join an existing cluster through its seeds
	// before anything else (its GRPCAddr is taken from the field above).
	Join *JoinConfig
	// Health is the gRPC health service WatchHealth keeps in step with the
	// node's readiness (nil: none).
	Health *health.Server
	// Preloader, when set, is run by Run once the node is ready (see
	// Preloader.Run). Feed it the cluster's events with PreloadingObserver.
	Preloader *Preloader
	// HealthInterval is how often WatchHealth re-checks readiness
	// (default 2s).
	HealthInterval time.Duration
	// HeartbeatCheck is how often Heartbeat checks this node's record
	// (default 2s); HeartbeatRefresh how often it rewrites the record when
	// nothing changed (default DefaultHeartbeatRefresh).
	HeartbeatCheck   time.Duration
	HeartbeatRefresh time.Duration
	// RotationInterval is how often WatchRotation looks for keys due for
	// automatic rotation, whose period is a year (default 1h).
	RotationInterval time.Duration
	// KMIPActivationCheck is the longest WatchKMIPActivation waits before
	// it looks again for KMIP objects whose Activation Date has come
	// (default 1s); it also wakes at the next date it knows.
	KMIPActivationCheck time.Duration
	// AuditCheckpointInterval is how often CheckpointAudit records the
	// audit chain's head while lines were written (default
	// AuditCheckpointInterval).
	AuditCheckpointInterval time.Duration
	// PromoteCheck is how often PromoteNonvoters looks, while this node
	// leads, for non-voters that have caught up (default
	// DefaultPromoteCheck).
	PromoteCheck time.Duration
	// PromoteSettle is how long a non-voter must stay ready for promotion
	// (caught up, its own record healthy) in every check before the
	// leader makes it a voter (default DefaultPromoteSettle).
	PromoteSettle time.Duration
}

// Daemon is a node's own work beside the request path: bringing the node
// into its cluster (join, the domain key check, a backup's restore) and
// the loops that keep it serving (readiness, heartbeat, automatic
// rotation, KMIP activation dates, audit checkpoints, preloading) and the
// leader's promotion of caught-up non-voters. It
// serves no request; every change it makes carries Internal(ctx, task), so
// that each is a request of its own with its intent and outcome audit
// lines (heartbeats and checkpoints write none, see applyInternal). Its
// loops run until their context ends; each may run once at a time.
type Daemon struct {
	svc *Service
	cfg DaemonConfig
}

// DefaultHeartbeatRefresh is how often a node rewrites its record when
// nothing in it changed. Other nodes take a record older than
// recordStaleRefreshes of these for a node they have not heard from.
const DefaultHeartbeatRefresh = 10 * time.Second

// recordStaleRefreshes is how many refreshes a node's record may miss
// before cluster status (and XKS GetHealthStatus) report the node
// unhealthy.
const recordStaleRefreshes = 3

// NewDaemon returns the Daemon of svc's node.
func NewDaemon(svc *Service, cfg DaemonConfig) *Daemon {
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.HeartbeatCheck <= 0 {
		cfg.HeartbeatCheck = 2 * time.Second
	}
	if cfg.HeartbeatRefresh <= 0 {
		cfg.HeartbeatRefresh = DefaultHeartbeatRefresh
	}
	svc.recordRefresh.Store(int64(cfg.HeartbeatRefresh))
	if cfg.RotationInterval <= 0 {
		cfg.RotationInterval = time.Hour
	}
	if cfg.KMIPActivationCheck <= 0 {
		cfg.KMIPActivationCheck = time.Second
	}
	if cfg.AuditCheckpointInterval <= 0 {
		cfg.AuditCheckpointInterval = AuditCheckpointInterval
	}
	if cfg.PromoteCheck <= 0 {
		cfg.PromoteCheck = DefaultPromoteCheck
	}
	if cfg.PromoteSettle <= 0 {
		cfg.PromoteSettle = DefaultPromoteSettle
	}
	return &Daemon{svc: svc, cfg: cfg}
}

// Run does all of the node's own work until ctx ends: it watches readiness
// and preloads keys from the start; it joins the cluster when told to,
// waits for a leader and checks that this node's HSM holds the cluster's
// domain key (recording the check blob when the node founded the
// cluster), then keeps the node's record current, rotates keys,
// activates KMIP objects that are due and promotes caught-up non-voters
// while it leads, and checkpoints the audit log. It returns nil when
// ctx ends, and earlier only with an error that makes serving wrong (the
// join failed, or the HSM holds another domain key); the rest is retried.
// Every loop has stopped when Run returns.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	spawn := func(fn func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx) }()
	}
	spawn(d.WatchHealth)
	if pl := d.cfg.Preloader; pl != nil {
		spawn(func(ctx context.Context) {
			pl.Run(ctx, d.svc.node.State(), func() bool { ok, _ := d.svc.Ready(ctx); return ok })
		})
	}
	if err := d.startMembership(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	spawn(d.Heartbeat)
	spawn(d.WatchRotation)
	spawn(d.WatchKMIPActivation)
	spawn(d.PromoteNonvoters)
	spawn(d.CheckpointAudit)
	<-ctx.Done()
	return nil
}

// startMembership joins when told to and checks the domain key, as Run
// describes. It returns nil when ctx ends first.
func (d *Daemon) startMembership(ctx context.Context) error {
	s := d.svc
	if d.cfg.Join != nil {
		jc := *d.cfg.Join
		jc.GRPCAddr = d.cfg.GRPCAddr
		if !jc.Complete {
			s.log.Info("joining the cluster", "seeds", jc.Seeds)
		}
		if err := d.Join(ctx, jc); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("join the cluster: %w", err)
		}
	}
	if err := s.node.WaitForLeader(ctx); err != nil {
		return nil // shutting down
	}
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		err := d.EnsureDomainKeyCheck(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, hsm.ErrWrongDomainKey) {
			return fmt.Errorf("this node's HSM holds a domain key other than the cluster's; it must not serve: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("domain key check failed; retrying", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
