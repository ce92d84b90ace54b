package audit

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A log whose file is removed, or has another file renamed over it, while
// it is open must not acknowledge a synced line: that line went to a file
// nobody will read.
func TestAppendRefusesRemovedOrReplacedFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"removed", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", func(t *testing.T, path string) {
			other := path + ".new"
			if err := os.WriteFile(other, nil, FileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			var logged bytes.Buffer
			l, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			writeN(t, l, 3)
			tc.change(t, path)

			// A line that is not synced is not checked (crypto
			// operations pay for no stat).
			if _, err := l.Append(rec(10), false); err != nil {
				t.Fatalf("unsynced append: %v", err)
			}
			_, err = l.Append(rec(11), true)
			if err == nil {
				t.Fatal("a synced line was acknowledged after the log's file was " + tc.name)
			}
			if msg := err.Error(); !strings.Contains(msg, "removed or replaced") || !strings.Contains(msg, path) {
				t.Errorf("error %q does not say that %s was removed or replaced", msg, path)
			}
			// Every later line is refused too, synced or not.
			if _, err := l.Append(rec(12), false); err == nil {
				t.Error("a later line was accepted")
			}
			if _, err := l.Append(rec(13), true); err == nil {
				t.Error("a later synced line was accepted")
			}
			if n := strings.Count(logged.String(), "level=ERROR"); n != 1 {
				t.Errorf("%d error lines logged, want 1:\n%s", n, logged.String())
			}
		})
	}
}
