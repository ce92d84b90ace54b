package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/fsutil"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// restoreMarkerName is the file restore keeps in data_dir while it works:
// written (and synced, with its directory) before the Raft state is
// touched, removed once the restore finished. Raft state beside it is
// the partial work of a restore that was stopped, never a cluster to
// serve.
const restoreMarkerName = "RESTORE-IN-PROGRESS"

func restoreMarkerPath(c config.Config) string { return filepath.Join(c.DataDir, restoreMarkerName) }

// writeRestoreMarker records that a restore of backupFile is under way.
func writeRestoreMarker(c config.Config, backupFile string) error {
	body := fmt.Sprintf("restore of %s into %s started %s by pid %d\n", backupFile, c.RaftDir(), time.Now().UTC().Format(time.RFC3339), os.Getpid())
	// Synced, with its directory, before the Raft state is touched.
	if err := pki.WriteFileAtomic(restoreMarkerPath(c), []byte(body), 0o600); err != nil {
		return fmt.Errorf("restore marker: %w", err)
	}
	return nil
}

// removeRestoreMarker removes the marker once the restore finished (or
// failed and took its Raft state away again).
func removeRestoreMarker(c config.Config) error {
	if err := os.Remove(restoreMarkerPath(c)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restore marker: %w", err)
	}
	return fsutil.SyncDir(c.DataDir)
}

// unfinishedRestore reports the marker's contents when data_dir holds one.
func unfinishedRestore(c config.Config) (string, bool, error) {
	b, err := os.ReadFile(restoreMarkerPath(c))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("data_dir: %w", err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

// refuseUnfinishedRestore is serve's check: a data_dir in which a restore
// did not finish holds a founded cluster with part of the backup, or none
// of it, and serving it would look healthy while the keys are missing.
func refuseUnfinishedRestore(c config.Config, configFile string) error {
	what, found, err := unfinishedRestore(c)
	if err != nil || !found {
		return err
	}
	return fmt.Errorf("a restore into %s did not finish (%s says: %s); its Raft state is partial and is not served. "+
		"Run the restore again: 'hsmbrokerd restore --config %s --backup FILE' removes the partial Raft state (%s and %s) itself and starts over, and removes %s when it is done. "+
		"To give the restore up instead, stop every hsmbrokerd using %s, remove those two and %s, and start the node with an empty Raft directory",
		c.DataDir, restoreMarkerName, what, configFile,
		filepath.Join(c.RaftDir(), "raft.db"), filepath.Join(c.RaftDir(), "snapshots"), restoreMarkerPath(c),
		c.DataDir, restoreMarkerPath(c))
}
