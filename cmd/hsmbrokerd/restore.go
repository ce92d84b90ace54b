package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/fsutil"
	"github.com/spf13/cobra"
)

func newRestoreCommand(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var configFile, backupFile, sum, authFile string
	var unauthenticated bool
	cmd := &cobra.Command{
		Use:   "restore --config FILE --backup FILE [--sha256 HEX] [--auth FILE | --unauthenticated]",
		Short: "Bring a destroyed cluster back from a backup, on an HSM that holds its domain key",
		Long: `restore founds a new cluster from a backup made by 'hsmctl cluster backup':
keys (their versions wrapped under the domain key), aliases, states, tags,
policies, grants, principal roles, TDE keys and tokens, KMIP objects and
PKCS#11 data objects come back exactly as they were when the backup was
taken.

Run it once, on the node that will found the new cluster, with that node's
serve configuration. Its Raft directory must be empty and its HSM must hold
the domain key the backup's keys are wrapped under (an HSM of the old
cluster, or one restored from the HSM vendor's own backup); restore checks
the backup's domain key check against it and refuses otherwise.

restore then recomputes the backup's authenticator in the HSM (from the
file's SHA-256, under the domain key) and refuses a backup that does not
match the one 'hsmctl cluster backup' wrote to FILE.auth: a backup changed
where it was kept (a principal made admin, a policy or grant edited, one
key's blob moved to another's entry) is refused even if its .sha256 was
recomputed, since only an HSM holding the domain key can make an
authenticator. A backup made before authenticators, or whose .auth file is
lost, is restored only with --unauthenticated, which trusts that no one
changed it; the restore's audit lines then say
internal:restore-unauthenticated. Finally it unwraps every version of every
key in the HSM once and refuses a backup with a blob that does not unwrap
(a damaged key blob). Records of
the old members are dropped. A restore that fails leaves the Raft
directory as it found it. While it works, data_dir holds the file
RESTORE-IN-PROGRESS: a restore that was stopped before it finished
(killed, power loss) leaves it there, serve then refuses to start, and
running restore again removes the partial Raft state and starts over.
The restore is written to the node's audit log (operation
internal:restore, an intent and an outcome line), which serve continues. Then start the node with 'hsmbrokerd serve'
and let the other nodes join with join tokens, as for a new cluster: their
HSMs receive the domain key HSM-to-HSM.`,
		Example: `  hsmctl cluster backup /backup/hsmbroker-2026-11-27.snap      # earlier, on the old cluster
  hsmbrokerd restore --config /etc/hsmbroker/node1.yaml \
      --backup /backup/hsmbroker-2026-11-27.snap      # with .sha256 and .auth beside it
  hsmbrokerd serve --config /etc/hsmbroker/node1.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(configFile)
			if err != nil {
				return err
			}
			log, err := newLogger(stderr, firstSet(g.logLevel, c.Log.Level), firstSet(g.logFormat, "text"))
			if err != nil {
				return err
			}
			backup, err := os.ReadFile(backupFile)
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			got := sha256.Sum256(backup)
			want, from, err := expectedSum(sum, backupFile)
			if err != nil {
				return err
			}
			if want == "" {
				log.Warn("the backup's SHA-256 is not checked: give --sha256, or keep the .sha256 file 'hsmctl cluster backup' writes beside it", "backup", backupFile)
			} else if !strings.EqualFold(want, hex.EncodeToString(got[:])) {
				return fmt.Errorf("backup %s has SHA-256 %x, not %s (%s): refusing a damaged or different file", backupFile, got, want, from)
			}
			auth, err := backupAuth(authFile, backupFile, unauthenticated)
			if err != nil {
				return err
			}
			if auth.Unauthenticated {
				log.Warn("restoring a backup without checking its authenticator: nothing shows it was not changed where it was kept", "backup", backupFile)
				if _, err := os.Lstat(backupFile + ".auth"); err == nil {
					log.Warn("an authenticator file lies beside the backup and is not checked (--unauthenticated); without --unauthenticated, restore checks it", "auth", backupFile+".auth")
				}
			}
			// Decoded and checked before anything is made from it.
			b, err := cluster.ReadBackupHashed(backup, got)
			if err != nil {
				return fmt.Errorf("backup %s cannot be restored: %w", backupFile, err)
			}
			// Raft state beside the marker of a restore that did not
			// finish is that restore's own partial work (restore never
			// starts over state it did not make, and serve refuses to
			// run on it): it is removed and the restore starts over.
			// HasState still runs, so that a restore or serve still
			// running on this directory (raft.db locked) is refused, not
			// pulled from under it.
			what, unfinished, err := unfinishedRestore(c)
			if err != nil {
				return err
			}
			has, err := cluster.HasState(c.RaftDir())
			if err != nil && (!unfinished || errors.Is(err, cluster.ErrDataDirInUse)) {
				// A partial raft.db that does not open is cleared below.
				return fmt.Errorf("data_dir: %w", err)
			}
			if unfinished {
				log.Warn("a restore into this data_dir did not finish; removing its partial Raft state and starting over", "marker", restoreMarkerPath(c), "was", what)
				if err := clearRaftState(c.RaftDir()); err != nil {
					return fmt.Errorf("remove the unfinished restore's Raft state in %s: %w", c.RaftDir(), err)
				}
				has = false
			}
			if has {
				return fmt.Errorf("%s already holds Raft state; restore founds a new cluster and needs an empty Raft directory", c.RaftDir())
			}
			d, err := prepareServe(log, c)
			if err != nil {
				return err
			}
			// From here until the restore finished, a stop leaves a
			// founded cluster with part of the backup: the marker makes
			// serve refuse it and the next restore start over.
			if err := writeRestoreMarker(c, backupFile); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			n, err := restoreBackup(ctx, log, d, b, auth)
			if err != nil {
				// Leave the Raft directory as it was found, so that the
				// next attempt (or serve) does not find a founded, empty
				// cluster there. The marker stays if that fails.
				if rerr := clearRaftState(c.RaftDir()); rerr != nil {
					log.Error("the failed restore's Raft state could not be removed; run the restore again, which removes it", "dir", c.RaftDir(), "err", rerr)
				} else if rerr := removeRestoreMarker(c); rerr != nil {
					log.Error("remove the restore marker", "err", rerr)
				}
				return err
			}
			if err := removeRestoreMarker(c); err != nil {
				return fmt.Errorf("the restore finished, but %w; serve refuses to start until it is removed", err)
			}
			noun := "keys"
			if n == 1 {
				noun = "key"
			}
			fmt.Fprintf(stdout, "restored %d %s from %s (SHA-256 %x) into a new cluster founded by %s\n", n, noun, backupFile, got, c.NodeID)
			fmt.Fprintf(stdout, "next: hsmbrokerd serve --config %s, then join the other nodes with join tokens\n", configFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "the founding node's serve configuration (required)")
	cmd.Flags().StringVar(&backupFile, "backup", "", "the backup file from 'hsmctl cluster backup' (required)")
	cmd.Flags().StringVar(&sum, "sha256", "", "the backup's SHA-256 as 'hsmctl cluster backup' printed it (default: read from FILE.sha256 beside the backup, if there)")
	cmd.Flags().StringVar(&authFile, "auth", "", "the backup's authenticator file from 'hsmctl cluster backup' (default: FILE.auth beside the backup)")
	cmd.Flags().BoolVar(&unauthenticated, "unauthenticated", false, "restore a backup that has no authenticator (made before authenticators, or its .auth file lost), trusting that no one changed it")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("backup")
	return cmd
}

// restoreBackup opens the partition and a freshly bootstrapped single-node
// cluster, restores the backup into it and shuts down again.
//
// The restore is audited in the node's audit log, opened as serve opens
// it (and refused as serve refuses it when its chain is broken), so that
// the log the node then continues shows the restore.
func restoreBackup(ctx context.Context, log *slog.Logger, d daemon, backup *cluster.Backup, auth broker.RestoreAuth) (n int, err error) {
	auditLog, err := audit.Open(d.auditFile, audit.Options{CheckpointEvery: broker.AuditCheckpointLines, Logger: log})
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := auditLog.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close the audit log: %w", cerr)
		}
	}()
	p, err := hsm.Open(d.hsm)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if ok, err := p.HasDomainKey(ctx); err != nil {
		return 0, err
	} else if !ok {
		return 0, fmt.Errorf("the HSM token holds no domain key; restore needs an HSM that holds the domain key the backup's keys are wrapped under")
	}
	cc := d.cluster
	cc.Bootstrap = true
	node, err := cluster.Open(cc)
	if err != nil {
		return 0, err
	}
	defer func() { _ = node.Shutdown() }()
	if err := node.WaitForLeader(ctx); err != nil {
		return 0, err
	}
	svc, err := broker.New(broker.Config{NodeID: cc.NodeID, Node: node, Partition: p, PeerTLS: d.peerTLS, Logger: log, AuditLog: auditLog})
	if err != nil {
		return 0, err
	}
	defer svc.Close()
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).RestoreBackup(ctx, backup, auth); err != nil {
		return 0, err
	}
	return len(node.State().Keys()), nil
}

// backupAuth is how the restore checks the backup: with the authenticator
// in authFile (default: FILE.auth beside the backup), or, only when
// unauthenticated is asked for, without one.
func backupAuth(authFile, backupFile string, unauthenticated bool) (broker.RestoreAuth, error) {
	if unauthenticated {
		if authFile != "" {
			return broker.RestoreAuth{}, errors.New("--auth and --unauthenticated exclude each other")
		}
		return broker.RestoreAuth{Unauthenticated: true}, nil
	}
	given := authFile != ""
	if !given {
		authFile = backupFile + ".auth"
	}
	a, err := client.ReadBackupAuth(authFile)
	if errors.Is(err, os.ErrNotExist) && !given {
		return broker.RestoreAuth{}, fmt.Errorf("backup %s has no authenticator beside it (%s, which 'hsmctl cluster backup' writes): give --auth FILE, or --unauthenticated for a backup made before authenticators, trusting that no one changed it", backupFile, authFile)
	}
	if err != nil {
		return broker.RestoreAuth{}, fmt.Errorf("backup authenticator: %w", err)
	}
	return broker.RestoreAuth{Authenticator: a}, nil
}

// expectedSum is the SHA-256 the backup must have: the one given, else the
// one in FILE.sha256 beside it ('hsmctl cluster backup' writes it, in
// sha256sum's format), else none. from says where it came from.
func expectedSum(given, backupFile string) (sum, from string, err error) {
	if given != "" {
		return given, "--sha256", nil
	}
	side := backupFile + ".sha256"
	b, err := fsutil.ReadSmallFile(side, 1024)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("backup checksum: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 || len(fields[0]) != 2*sha256.Size {
		return "", "", fmt.Errorf("backup checksum %s is not in sha256sum's format (HEX  FILE)", side)
	}
	return fields[0], side, nil
}

// clearRaftState removes what opening a node made in dir (its Raft store
// and snapshots); restore calls it when it fails, having found no state
// there.
func clearRaftState(dir string) error {
	return errors.Join(removeIfExists(filepath.Join(dir, "raft.db")), removeIfExists(filepath.Join(dir, "snapshots")))
}

func removeIfExists(path string) error {
	if err := os.RemoveAll(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
