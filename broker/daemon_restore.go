package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
)

// RestoreAuth says how a restore knows a backup is one a cluster with this
// domain key made.
type RestoreAuth struct {
	// Authenticator is the backup's authenticator, from the Backup
	// stream's closing message ('hsmctl cluster backup' writes it to
	// FILE.auth).
	Authenticator []byte
	// Unauthenticated restores a backup that has no authenticator (one
	// made before backups had them, or whose authenticator was lost),
	// trusting that no one changed it where it was kept. The restore's
	// audit lines then name the operation internal:restore-unauthenticated.
	// It cannot be combined with an Authenticator.
	Unauthenticated bool
}

// RestoreBackup brings a destroyed cluster back from a Backup snapshot. It
// is for a NEW cluster: a freshly bootstrapped single node, leading, whose
// HSM holds the domain key the backup's blobs are wrapped under. Before
// anything is restored, the backup's domain key check must pass on this
// node's HSM, its authenticator must match its bytes under the same
// domain key (so a backup edited where it was kept, its SHA-256
// recomputed, is refused: roles, policies, grants, aliases, states and
// which blob is which key's are all covered), and every version of every
// key must unwrap in the HSM, so that a backup with a damaged key blob is
// refused instead of restoring keys that fail when used. Without an
// authenticator (auth.Unauthenticated) only the blobs are checked.
// Records of the old members are dropped, so that new nodes (even with the
// old ids) can join.
//
// With an audit log, the restore is audited as internal:restore (or
// internal:restore-unauthenticated): an intent line (synced) before
// anything is checked or restored, and an outcome line when it ends,
// whether it succeeded or not; dropping each old member's record is a
// change with lines of its own.
func (d *Daemon) RestoreBackup(ctx context.Context, b *cluster.Backup, auth RestoreAuth) (err error) {
	s := d.svc
	task := "restore"
	if auth.Unauthenticated {
		task = "restore-unauthenticated"
	}
	ctx = Internal(ctx, task)
	rq := requestOf(ctx)
	if err := s.auditAhead(rq); err != nil {
		return err
	}
	// The intent is written: a failed outcome line is logged, and verify
	// reports the intent without outcome.
	defer func() { _ = s.endGRPC(rq, err) }()
	if auth.Unauthenticated && auth.Authenticator != nil {
		return errInvalidArg(ExcValidation, "a restore either checks the backup's authenticator or is unauthenticated, not both")
	}
	if !auth.Unauthenticated && len(auth.Authenticator) == 0 {
		rq.deny("the backup has no authenticator")
		return errInvalidArg(ExcValidation, "the backup has no authenticator; a backup without one is restored only when that is asked for explicitly (unauthenticated), trusting that no one changed it where it was kept")
	}
	if err := s.hsm.VerifyDomainKey(ctx, b.DomainKeyCheck()); err != nil {
		if errors.Is(err, hsm.ErrWrongDomainKey) {
			return fmt.Errorf("the backup's keys are wrapped under another domain key than this HSM's: %w", err)
		}
		return fmt.Errorf("nothing shows the backup's keys are wrapped under this HSM's domain key: %w", err)
	}
	if !auth.Unauthenticated {
		sum := b.SHA256()
		if err := s.hsm.VerifyBackupAuthenticator(ctx, sum[:], auth.Authenticator); err != nil {
			if errors.Is(err, hsm.ErrNotAuthentic) {
				rq.deny("the backup does not match its authenticator")
				e := errInvalidArg(ExcValidation, "the backup does not match its authenticator: it was changed after it was made, or the authenticator is another backup's")
				e.Err = err
				return e
			}
			return fmt.Errorf("checking the backup's authenticator in the HSM: %w", err)
		}
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
