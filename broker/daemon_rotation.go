package broker

import (
	"context"
	"errors"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
)

// RotateDue rotates every enabled key whose automatic rotation is on and
// whose current version is at least a rotation period old, and returns how
// many it rotated. Only the leader rotates: a follower returns at once, so
// every node may run it. It is the node's own work (Internal "rotation"),
// audited as such.
func (d *Daemon) RotateDue(ctx context.Context) (int, error) {
	s := d.svc
	if !s.node.IsLeader() {
		return 0, nil
	}
	ctx = Internal(ctx, "rotation")
	now := s.now()
	n := 0
	var errs []error
	for _, k := range s.node.State().Keys() {
		if !k.RotationEnabled || k.State != keys.StateEnabled || k.Spec != keys.SpecSymmetricDefault || now.Before(nextRotation(k)) {
			continue
		}
		if _, err := s.RotateKey(ctx, RotateKeyRequest{KeyRef: k.ID}); err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		n++
		s.log.Info("rotated key at the end of its rotation period", "key", k.ID)
	}
	return n, errors.Join(errs...)
}

// WatchRotation runs RotateDue every RotationInterval until ctx ends; every
// node may run it, as only the leader rotates.
func (d *Daemon) WatchRotation(ctx context.Context) {
	s := d.svc
	repeat(ctx, d.cfg.RotationInterval, func() time.Duration {
		if _, err := d.RotateDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("automatic key rotation failed; will retry", "err", err)
		}
		return d.cfg.RotationInterval
	})
}
