package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hsmbroker/hsmbroker/internal/fsutil"
	"github.com/spf13/cobra"
)

// Every file hsmctl writes goes through outFile: it is written to a
// temporary file beside it, created with mode 0600 before any byte is
// written, and moved into place only once complete. The name itself is
// never opened, so a symlink there is replaced, never followed, and an
// existing file never keeps its old mode. An existing file (a symlink
// included, dangling or not) is refused unless the command's --force is
// given, and the check is made again, atomically, when the file is put in
// place.

// Modes of the files hsmctl writes.
const (
	privateFileMode fs.FileMode = 0o600 // secrets, ciphertext, anything not meant to be shared
	publicFileMode  fs.FileMode = 0o644 // public keys, plots
)

// outFile is a file being written in place of path.
type outFile struct {
	*os.File
	path  string
	force bool
	done  bool
}

// checkOutPath refuses an existing path unless force, and a directory
// even with force. Commands call it before they do any work, so that a
// file in the way costs nothing.
func checkOutPath(path string, force bool) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s is a directory; --out names the file to write", path)
	case !force:
		return errExists(path)
	}
	return nil
}

// existsError is an output file that is in the way. Commands whose
// --force would replace it say so; a command without one says what to do
// instead (see certs ca).
type existsError struct{ path string }

func (e *existsError) Error() string { return e.path + " exists; use --force to replace it" }

func errExists(path string) error { return &existsError{path} }

// createOutFile starts writing path with mode perm. Call Commit to put it
// in place, or Abort to leave path as it was.
func createOutFile(path string, perm fs.FileMode, force bool) (*outFile, error) {
	if err := checkOutPath(path, force); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // it names the temporary file, not path
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	o := &outFile{File: f, path: path, force: force}
	if err := f.Chmod(perm); err != nil {
		o.Abort()
		return nil, err
	}
	return o, nil
}

// Commit syncs the file, puts it in place of path and syncs path's
// directory. Without force, it links it there, which fails if anything
// has appeared at path since createOutFile; on a file system without hard
// links it checks again and renames.
func (o *outFile) Commit() (err error) {
	defer func() {
		if err != nil {
			o.Abort()
		}
	}()
	if err := o.Sync(); err != nil {
		return err
	}
	if err := o.Close(); err != nil {
		return err
	}
	tmp := o.Name()
	if !o.force {
		err := os.Link(tmp, o.path)
		switch {
		case err == nil:
			o.done = true
			if err := os.Remove(tmp); err != nil {
				return err
			}
			return syncParent(o.path)
		case errors.Is(err, fs.ErrExist):
			return errExists(o.path)
		}
		if err := checkOutPath(o.path, false); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, o.path); err != nil {
		return err
	}
	o.done = true
	return syncParent(o.path)
}

// syncParent syncs the directory of path, so that the file just put in
// place there (a backup, a key) survives a power loss.
func syncParent(path string) error {
	return fsutil.SyncDir(filepath.Dir(path))
}

// Abort removes the temporary file, unless Commit has put it in place.
// It may be called after Commit, and more than once.
func (o *outFile) Abort() {
	if o.done {
		return
	}
	o.done = true
	o.Close()
	os.Remove(o.Name())
}

// writeOutFile writes data to path through an outFile.
func writeOutFile(path string, data []byte, perm fs.FileMode, force bool) error {
	o, err := createOutFile(path, perm, force)
	if err != nil {
		return err
	}
	if _, err := o.Write(data); err != nil {
		o.Abort()
		return err
	}
	return o.Commit()
}

// outFlags are --out and --force of a command that writes its result to a
// file or standard output.
type outFlags struct {
	path  string
	force bool
	perm  fs.FileMode
}

// register adds --out and --force; what names the result ("ciphertext").
func (o *outFlags) register(cmd *cobra.Command, what string, perm fs.FileMode) {
	o.perm = perm
	cmd.Flags().StringVar(&o.path, "out", "", fmt.Sprintf("%s file to create, mode %04o; an existing file is refused unless --force (default standard output)", what, perm))
	cmd.Flags().BoolVar(&o.force, "force", false, "replace --out if it exists (a symlink is replaced, not followed)")
}

// toFile reports whether the result goes to a file rather than stdout.
func (o *outFlags) toFile() bool { return o.path != "" && o.path != "-" }

// check refuses an existing --out without --force, before the command
// does its work.
func (o *outFlags) check() error {
	if !o.toFile() {
		return nil
	}
	return checkOutPath(o.path, o.force)
}

// write writes data to --out.
func (o *outFlags) write(data []byte) error {
	return writeOutFile(o.path, data, o.perm, o.force)
}
