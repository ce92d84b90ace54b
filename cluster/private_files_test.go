package cluster

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataDirPrivate: everything a node creates under its data directory,
// Raft snapshots included, is 0700 (directories) or 0600 (files), and a
// data directory an older version left with looser modes is narrowed when
// the node opens it.
func TestDataDirPrivate(t *testing.T) {
	cfg := testConfig(t, "solo", true)
	// What an older version left: a loose data dir and snapshot store.
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "snapshots", "1-2-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "snapshots", "1-2-3", "state.bin"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n := openNode(t, cfg)
	if err := n.WaitForLeader(testContext(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustApply(t, n, &CreateKey{Key: symKey("k1"), Alias: "alias/k1"})
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	var files, dirs, snapshots int
	err := filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want, dirs = 0o700, dirs+1
		} else {
			files++
		}
		if d.Name() == "state.bin" {
			snapshots++
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// raft.db, the old and the new snapshot's state.bin and meta.json.
	if files < 4 || snapshots < 2 || dirs < 3 {
		t.Fatalf("walked %d files (%d snapshots) and %d directories; the snapshot was not taken", files, snapshots, dirs)
	}
}

// TestFreshDataDirNeedsNoNarrowing: a node that makes its data directory
// makes everything private to begin with, so the warning about narrowed
// modes (meant for what older versions left) is not logged.
func TestFreshDataDirNeedsNoNarrowing(t *testing.T) {
	n, cfg, lb := openLoggedLeader(t, "solo")
	mustApply(t, n, &CreateKey{Key: symKey("k1")})
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(lb.String(), "narrowed the mode") {
		t.Fatalf("a fresh data directory was narrowed:\n%s", lb.String())
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, "snapshots"))
	if err != nil || fi.Mode().Perm() != privateDirMode {
		t.Fatalf("snapshots: %v, %v", fi, err)
	}
}
