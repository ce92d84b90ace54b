package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// HasState reports whether dataDir (a node's Raft directory) holds the
// state of a cluster member: a term, log entries or a snapshot. A raft.db
// that exists but holds none of these, as a first join that failed leaves
// it, is no state: the node may still join. It opens the store read-only
// and briefly, so it fails (ErrDataDirInUse) if a running node holds it.
func HasState(dataDir string) (bool, error) {
	path := filepath.Join(dataDir, "raft.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("cluster: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path,
		BoltOptions: &bbolt.Options{Timeout: time.Second, ReadOnly: true}})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return false, dataDirInUse(dataDir)
		}
		return false, fmt.Errorf("cluster: open %s: %w", path, err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, hclog.NewNullLogger())
	if err != nil {
		return false, fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return false, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	return has, nil
}

// ErrDataDirInUse is matched by the error for a Raft directory another
// process (another node with the same data directory) holds open.
var ErrDataDirInUse = errors.New("cluster: data directory in use")

func dataDirInUse(dir string) error {
	return fmt.Errorf("%w: %s is locked by another process (raft.db: another hsmbrokerd with the same data_dir?); stop that process, or give this node a data_dir of its own", ErrDataDirInUse, dir)
}

// Backup is a decoded backup (hsmctl cluster backup): read once, checked,
// and then restored from the same bytes.
type Backup struct {
	raw  []byte
	sum  [sha256.Size]byte
	file snapshotFile
}

// ReadBackup decodes and checks a backup as a restore will, without a
// node: a truncated, damaged or edited file that no longer decodes or
// breaks the state's invariants is refused before anything is made from
// it.
func ReadBackup(b []byte) (*Backup, error) {
	return ReadBackupHashed(b, sha256.Sum256(b))
}

// ReadBackupHashed is ReadBackup for a caller that has hashed the file
// already, to check it before decoding it: sum must be the SHA-256 of b.
func ReadBackupHashed(b []byte, sum [sha256.Size]byte) (*Backup, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("the file is empty")
	}
	sf, err := readSnapshot(bytes.NewReader(b))
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("the backup is truncated (it ends after %d bytes, inside its data)", len(b))
	case errors.As(err, &se) && se.Offset <= 1:
		return nil, errors.New("not an hsmbroker backup (not JSON; 'hsmctl cluster backup' writes one)")
	case errors.As(err, &se):
		return nil, fmt.Errorf("the backup is damaged: it stops being valid JSON at byte %d", se.Offset)
	case err != nil:
		return nil, err
	}
	return &Backup{raw: b, sum: sum, file: sf}, nil
}

// SHA256 is the SHA-256 of the backup's bytes, what its authenticator is
// made from (hsm.BackupAuthenticator).
func (b *Backup) SHA256() [sha256.Size]byte { return b.sum }

// DomainKeyCheck is the backup's domain key check blob (see
// State.DomainKeyCheck), nil if the cluster never set one.
func (b *Backup) DomainKeyCheck() []byte { return bytes.Clone(b.file.Data.DomainKeyCheck) }

// Keys returns the backup's keys, sorted by ID.
func (b *Backup) Keys() []Key {
	ids := sortedKeys(b.file.Data.Keys)
	out := make([]Key, 0, len(ids))
	for _, id := range ids {
		out = append(out, b.file.Data.Keys[id].Clone())
	}
	return out
}
