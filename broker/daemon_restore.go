package broker

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
)

// RestoreBackup brings a destroyed cluster back from a Backup snapshot. It
// is for a NEW cluster: a freshly bootstrapped single node, leading, whose
// HSM holds the domain key the backup's blobs are wrapped under. After the
// restore the backup's domain key check must pass on this node's HSM, or
// the node refuses to serve; records of the old members are dropped, so
// that new nodes (even with the old ids) can join.
func (d *Daemon) RestoreBackup(ctx context.Context, r io.Reader) error {
	s := d.svc
	ctx = Internal(ctx, "restore")
	if err := s.node.RestoreFromBackup(ctx, r); err != nil {
		return err
	}
	if err := s.hsm.VerifyDomainKey(ctx, s.node.State().DomainKeyCheck()); err != nil {
		if errors.Is(err, hsm.ErrWrongDomainKey) {
			return fmt.Errorf("the backup's keys are wrapped under another domain key than this HSM's: %w", err)
		}
		return fmt.Errorf("nothing shows the backup's keys are wrapped under this HSM's domain key: %w", err)
	}
	members := map[string]bool{}
	for _, srv := range s.node.Stats().Servers {
		members[srv.ID] = true
	}
	for _, n := range s.node.State().Nodes() {
		if !members[n.ID] {
			if _, err := s.apply(ctx, &cluster.RemoveNode{ID: n.ID}); err != nil {
				return err
			}
		}
	}
	return nil
}
