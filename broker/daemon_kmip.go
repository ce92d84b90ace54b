package broker

import (
	"context"
	"errors"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc/codes"
)

// errNotDue ends an activation that another change made moot.
var errNotDue = errors.New("not due")

// ActivateDue makes Active every Pre-Active KMIP object whose Activation
// Date has come, as KMIP's state model has it, keeping that date. It
// returns how many it activated and the next Activation Date to come
// (zero when none). Only the leader activates: a follower returns at once,
// so every node may run it. It is the node's own work (Internal
// "kmip-activation"), audited as such.
func (d *Daemon) ActivateDue(ctx context.Context) (int, time.Time, error) {
	s := d.svc
	if !s.node.IsLeader() {
		return 0, time.Time{}, nil
	}
	ctx = Internal(ctx, "kmip-activation")
	now := s.now()
	due, next := s.node.State().KMIPActivationsDue(now)
	n := 0
	var errs []error
	for _, id := range due {
		_, err := s.KMIP().update(ctx, id, func(o *cluster.KMIPObject) error {
			if !o.ActivationDue(now) {
				return errNotDue
			}
			o.State = cluster.KMIPActive
			return nil
		})
		switch code, _, _ := Classify(err); {
		case err == nil:
			n++
			s.log.Info("activated a KMIP object at its Activation Date", "object", id)
		case errors.Is(err, errNotDue) || code == codes.NotFound:
		case ctx.Err() != nil:
			return n, next, ctx.Err()
		default:
			errs = append(errs, err)
		}
	}
	return n, next, errors.Join(errs...)
}

// WatchKMIPActivation runs ActivateDue when the next Activation Date comes
// and at least every KMIPActivationCheck (a date set since, or a new
// leader), until ctx ends; every node may run it, as only the leader
// activates.
func (d *Daemon) WatchKMIPActivation(ctx context.Context) {
	s := d.svc
	repeat(ctx, 0, func() time.Duration {
		_, next, err := d.ActivateDue(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("activating KMIP objects at their Activation Date failed; will retry", "err", err)
		}
		wait := d.cfg.KMIPActivationCheck
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(s.cfg.Now()), 0))
		}
		return wait
	})
}

// repeat runs step after first and then after each wait step returns,
// until ctx ends.
func repeat(ctx context.Context, first time.Duration, step func() time.Duration) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(step())
	}
}
