package cluster

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// Everything a node keeps under its data directory is private to the
// daemon's user: directories 0700, files 0600. bbolt creates raft.db 0600;
// Open makes the snapshots directory 0700 before raft's file snapshot
// store would make it 0755; the store makes each snapshot's directory 0755
// and its files (state.bin, meta.json) 0644, so privateSnapshots narrows
// them as soon as they exist, before a byte of state is written, and Open
// narrows (with a warning) what an older version left behind.
const (
	privateDirMode  fs.FileMode = 0o700
	privateFileMode fs.FileMode = 0o600
)

// makePrivate narrows the data directory and everything under the
// snapshot store to privateDirMode and privateFileMode, logging what it
// had to change.
func makePrivate(log *slog.Logger, dataDir string) error {
	if err := narrow(log, dataDir, privateDirMode); err != nil {
		return err
	}
	return narrowTree(log, filepath.Join(dataDir, "snapshots"))
}

// narrowTree narrows root and everything under it; a missing root is fine.
func narrowTree(log *slog.Logger, root string) error {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return narrow(log, path, privateDirMode)
		}
		if d.Type().IsRegular() {
			return narrow(log, path, privateFileMode)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

func narrow(log *slog.Logger, path string, want fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&^want == 0 {
		return nil
	}
	if err := os.Chmod(path, want); err != nil {
		return fmt.Errorf("cluster: make %s private: %w", path, err)
	}
	if log != nil {
		log.Warn("narrowed the mode of a file under the data directory", "path", path,
			"was", fmt.Sprintf("%04o", fi.Mode().Perm()), "now", fmt.Sprintf("%04o", want))
	}
	return nil
}

// privateSnapshots is raft's file snapshot store whose snapshot
// directories and files are made private when they are created.
type privateSnapshots struct {
	raft.SnapshotStore
	dir string // the store's snapshots directory
}

// Create makes the snapshot's directory and files (raft makes them all
// before it returns the sink) private before the FSM writes into them.
func (p privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := p.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	if err := narrowTree(nil, filepath.Join(p.dir, sink.ID()+".tmp")); err != nil {
		_ = sink.Cancel()
		return nil, err
	}
	return sink, nil
}
