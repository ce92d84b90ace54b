package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
)

// RestoreBackup brings a destroyed cluster back from a Backup snapshot. It
// is for a NEW cluster: a freshly bootstrapped single node, leading, whose
// HSM holds the domain key the backup's blobs are wrapped under. Before
// anything is restored, the backup's domain key check must pass on this
// node's HSM and every version of every key must unwrap in it, so that a
// backup with a damaged key blob is refused instead of restoring keys that
// fail when used. Nothing else in the backup is checked here: roles,
// policies, grants, aliases and key states, and a blob moved to another
// key's entry (it still unwraps), are protected only by the backup's
// SHA-256 (docs/OPERATIONS.md).
// Records of the old members are dropped, so that new nodes (even with the
// old ids) can join.
//
// With an audit log, the restore is audited as internal:restore: an intent
// line (synced) before anything is checked or restored, and an outcome
// line when it ends, whether it succeeded or not; dropping each old
// member's record is a change with lines of its own.
func (d *Daemon) RestoreBackup(ctx context.Context, b *cluster.Backup) (err error) {
	s := d.svc
	ctx = Internal(ctx, "restore")
	task := requestOf(ctx)
	if err := s.auditAhead(task); err != nil {
		return err
	}
	// The intent is written: a failed outcome line is logged, and verify
	// reports the intent without outcome.
	defer func() { _ = s.endGRPC(task, err) }()
	if err := s.hsm.VerifyDomainKey(ctx, b.DomainKeyCheck()); err != nil {
		if errors.Is(err, hsm.ErrWrongDomainKey) {
			return fmt.Errorf("the backup's keys are wrapped under another domain key than this HSM's: %w", err)
		}
		return fmt.Errorf("nothing shows the backup's keys are wrapped under this HSM's domain key: %w", err)
	}
	if err := d.checkBackupKeys(ctx, b); err != nil {
		return err
	}
	if err := s.node.RestoreFromBackup(ctx, b); err != nil {
		return err
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

// checkBackupKeys unwraps every version of every key of b in the HSM. The
// blobs that do not unwrap are all named (up to a few); an HSM that fails
// stops the check at once.
func (d *Daemon) checkBackupKeys(ctx context.Context, b *cluster.Backup) error {
	const named = 5
	var bad []string
	n, versions := 0, 0
	for _, k := range b.Keys() {
		for _, v := range k.Versions {
			ref, _ := hsmRef(k, v.Number)
			err := d.svc.hsm.CheckUnwraps(ctx, ref)
			switch {
			case err == nil:
			case errors.Is(err, hsm.ErrWrongDomainKey), errors.Is(err, hsm.ErrInvalidInput):
				n++
				if len(bad) < named {
					bad = append(bad, fmt.Sprintf("%s version %d", k.ID, v.Number))
				}
			default:
				return fmt.Errorf("checking the backup's key %s version %d in the HSM: %w", k.ID, v.Number, err)
			}
			if versions++; versions%10000 == 0 {
				d.svc.log.Info("restore: checking the backup's keys in the HSM", "key versions checked", versions)
			}
		}
	}
	if n > 0 {
		more := ""
		if n > len(bad) {
			more = fmt.Sprintf(" and %d more", n-len(bad))
		}
		return fmt.Errorf("%d of the backup's %d key versions do not unwrap under this HSM's domain key (%s%s): the backup is damaged or was edited; restore an intact copy", n, versions, strings.Join(bad, ", "), more)
	}
	return nil
}
