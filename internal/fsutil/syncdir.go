// Package fsutil holds file system helpers shared by the daemon and the
// command-line tool.
package fsutil

import (
	"fmt"
	"os"
)

// SyncDir flushes the directory dir to stable storage: after a file in it
// was created, renamed into it or removed, that change survives a power
// loss only once its directory entry is synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, cerr)
	}
	return nil
}
