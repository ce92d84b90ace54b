package fsutil

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadSmallFile reads a file that should hold a line or so (a secret, a
// checksum, an authenticator): a regular file of at most max bytes. Such
// files can sit where others may write, and a FIFO would block an ordinary
// open for good and a link to /dev/zero never end, so the file is opened
// without blocking, checked on the open descriptor, and read no further
// than max.
func ReadSmallFile(path string, max int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > max {
		return nil, fmt.Errorf("%s holds more than %d bytes, more than the line or so it should", path, max)
	}
	return data, nil
}
