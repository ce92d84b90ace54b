package fsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReadSmallFile: a small regular file is read whole; a larger one, a
// device that never ends, a FIFO with no writer and a directory are
// refused at once, saying why.
func TestReadSmallFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("one line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadSmallFile(small, 9); err != nil || !bytes.Equal(got, []byte("one line\n")) {
		t.Fatalf("ReadSmallFile = %q, %v", got, err)
	}
	if _, err := ReadSmallFile(small, 8); err == nil || !strings.Contains(err.Error(), "more than 8 bytes") {
		t.Fatalf("a 9-byte file read to 8: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", fifo, dir} {
		if _, err := ReadSmallFile(p, 1024); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("ReadSmallFile(%s): %v", p, err)
		}
	}
	if _, err := ReadSmallFile(filepath.Join(dir, "none"), 1024); !os.IsNotExist(err) {
		t.Fatalf("a missing file: %v", err)
	}
}
