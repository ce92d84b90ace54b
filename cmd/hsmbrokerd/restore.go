package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/spf13/cobra"
)

func newRestoreCommand(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var configFile, backupFile, sum string
	cmd := &cobra.Command{
		Use:   "restore --config FILE --backup FILE [--sha256 HEX]",
		Short: "Bring a destroyed cluster back from a backup, on an HSM that holds its domain key",
		Long: `restore founds a new cluster from a backup made by 'hsmctl cluster backup':
keys (their versions wrapped under the domain key), aliases, states, tags
and policies come back exactly as they were when the backup was taken.

Run it once, on the node that will found the new cluster, with that node's
serve configuration. Its Raft directory must be empty and its HSM must hold
the domain key the backup's keys are wrapped under (an HSM of the old
cluster, or one restored from the HSM vendor's own backup); restore checks
the backup's domain key check against it and refuses otherwise. Records of
the old members are dropped. Then start the node with 'hsmbrokerd serve'
and let the other nodes join with join tokens, as for a new cluster: their
HSMs receive the domain key HSM-to-HSM.`,
		Example: `  hsmctl cluster backup /backup/hsmbroker-2026-11-27.snap      # earlier, on the old cluster
  hsmbrokerd restore --config /etc/hsmbroker/node1.yaml \
      --backup /backup/hsmbroker-2026-11-27.snap --sha256 3f1c...
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
			if sum != "" && !strings.EqualFold(sum, hex.EncodeToString(got[:])) {
				return fmt.Errorf("backup %s has SHA-256 %x, not %s: refusing a damaged or different file", backupFile, got, sum)
			}
			if has, err := raftStateExists(c.RaftDir()); err != nil {
				return err
			} else if has {
				return fmt.Errorf("%s already holds Raft state; restore founds a new cluster and needs an empty Raft directory", c.RaftDir())
			}
			d, err := prepareServe(log, c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			n, err := restoreBackup(ctx, log, d, backup)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "restored %d keys from %s (SHA-256 %x) into a new cluster founded by %s\n", n, backupFile, got, c.NodeID)
			fmt.Fprintf(stdout, "next: hsmbrokerd serve --config %s, then join the other nodes with join tokens\n", configFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "the founding node's serve configuration (required)")
	cmd.Flags().StringVar(&backupFile, "backup", "", "the backup file from 'hsmctl cluster backup' (required)")
	cmd.Flags().StringVar(&sum, "sha256", "", "the backup's SHA-256 as 'hsmctl cluster backup' printed it; checked when given")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("backup")
	return cmd
}

// restoreBackup opens the partition and a freshly bootstrapped single-node
// cluster, restores the backup into it and shuts down again.
func restoreBackup(ctx context.Context, log *slog.Logger, d daemon, backup []byte) (int, error) {
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
	svc, err := broker.New(broker.Config{NodeID: cc.NodeID, Node: node, Partition: p, PeerTLS: d.peerTLS, Logger: log})
	if err != nil {
		return 0, err
	}
	defer svc.Close()
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).RestoreBackup(ctx, bytes.NewReader(backup)); err != nil {
		return 0, err
	}
	return len(node.State().Keys()), nil
}
