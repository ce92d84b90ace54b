package broker

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
)

// Preloader keeps a partition's handle cache warm, so that the first use of
// a key on a node does not pay for unwrapping it into the HSM (C_UnwrapKey:
// about 0.1 ms for an AES key on SoftHSM, over 1 ms for an EC or RSA
// private key). When it starts, and again after a snapshot restore, it
// loads the current version of every enabled key; afterwards it loads each
// key or version as it is created, enabled or rotated. It stops loading
// when the cache is full and never evicts a key that was used, so it is
// worth turning on when the handle cache can hold every key (hsm.cache_size
// at least the number of keys); the HSM must then hold that many session
// objects.
type Preloader struct {
	p     *hsm.Partition
	log   *slog.Logger
	queue chan string
	// rescan asks for a walk over every key: at the start, after a
	// restore, and when the queue overflowed.
	rescan atomic.Bool
	kick   chan struct{}

	loaded atomic.Uint64
}

// NewPreloader returns a Preloader for p. Feed it the cluster's events
// with Observe and start it with Run.
func NewPreloader(p *hsm.Partition, log *slog.Logger) *Preloader {
	if log == nil {
		log = slog.Default()
	}
	pl := &Preloader{p: p, log: log, queue: make(chan string, 4096), kick: make(chan struct{}, 1)}
	pl.rescan.Store(true)
	return pl
}

// Observe takes a cluster event; it never blocks (it runs on Raft's apply
// goroutine). Observer passes the events on; a restore's only after the
// keys loaded before it were dropped.
func (pl *Preloader) Observe(ev cluster.Event) {
	switch ev.Type {
	case cluster.TypeRestore:
		pl.rescan.Store(true)
	case cluster.TypeCreateKey, cluster.TypeAddVersion, cluster.TypeSetKeyState, cluster.TypeCancelDeletion:
		select {
		case pl.queue <- ev.KeyID:
			return
		default:
			pl.rescan.Store(true) // too many at once: walk them all later
		}
	default:
		return
	}
	select {
	case pl.kick <- struct{}{}:
	default:
	}
}

// Loaded is the number of key versions the preloader has loaded.
func (pl *Preloader) Loaded() uint64 { return pl.loaded.Load() }

// Run loads keys of state until ctx ends. It waits for start to return
// true (the node serves: its HSM holds the domain key and its state has
// caught up) before the first walk.
func (pl *Preloader) Run(ctx context.Context, state *cluster.State, start func() bool) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for start != nil && !start() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	// Every rescan request comes with a kick, so nothing needs polling.
	for ctx.Err() == nil {
		if pl.rescan.Swap(false) {
			pl.walk(ctx, state)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case id := <-pl.queue:
			if k, ok := state.Key(id); ok {
				pl.load(ctx, k)
			}
		case <-pl.kick:
		}
	}
}

// walk loads every enabled key's current version, until the cache is full.
func (pl *Preloader) walk(ctx context.Context, state *cluster.State) {
	t0, before := time.Now(), pl.loaded.Load()
	after := ""
	for ctx.Err() == nil {
		page, next := state.KeysPage(after, 1000)
		for _, k := range page {
			if n, _, _ := pl.p.CacheStats(); n >= pl.p.CacheCapacity() {
				pl.log.Info("preload stopped: the handle cache is full", "loaded", pl.loaded.Load()-before,
					"cache_size", pl.p.CacheCapacity(), "elapsed", time.Since(t0).Round(time.Millisecond))
				return
			}
			pl.load(ctx, k)
		}
		if next == "" {
			break
		}
		after = next
	}
	pl.log.Info("preloaded keys into the HSM", "loaded", pl.loaded.Load()-before, "elapsed", time.Since(t0).Round(time.Millisecond))
}

func (pl *Preloader) load(ctx context.Context, k cluster.Key) {
	if k.State != keys.StateEnabled {
		return
	}
	ref, ok := hsmRef(k, k.CurrentVersion)
	if !ok {
		return
	}
	loaded, err := pl.p.Preload(ctx, ref)
	if err != nil {
		if ctx.Err() == nil {
			pl.log.Debug("preload a key", "key_id", k.ID, "version", k.CurrentVersion, "err", err)
		}
		return
	}
	if loaded {
		pl.loaded.Add(1)
	}
}
