package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/spf13/cobra"
)

func (a *app) encryptFileCommand() *cobra.Command {
	var key, in, out string
	var encCtx []string
	var force bool
	cmd := &cobra.Command{
		Use:   "encrypt-file --key KEY --in FILE --out FILE [--context K=V]... [--force]",
		Short: "Encrypt a file of any size (envelope encryption)",
		Long: `Encrypt a file of any size by envelope encryption: a fresh data key from
GenerateDataKey under KEY (a SYMMETRIC_DEFAULT key), then AES-256-GCM locally
in 64 KiB chunks; the data key is stored in the output only encrypted, and
erased from memory after use. docs/FILE_FORMAT.md describes the format.

The encryption context (--context) is bound to the data key and stored in the
clear in the file header. The output is written to a temporary file (mode
0600) next to --out and renamed into place only on success. --out must not
exist unless --force is given; a symlink there is replaced, never followed.
A progress bar is shown on a terminal.`,
		Example: `  hsmctl encrypt-file --key alias/backups --in db.dump --out db.dump.hsmb --context host=db1
  tar c /srv | hsmctl encrypt-file --key alias/backups --in - --out srv.tar.hsmb`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := requireKey(key); err != nil {
				return err
			}
			pairs, err := parsePairs("--context", encCtx)
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			return a.transformFile(in, out, force, "encrypt", func(r io.Reader, w io.Writer, progress func(int64)) error {
				return client.EncryptStream(a.ctx, c, key, pairs, r, w, progress)
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the SYMMETRIC_DEFAULT key for the data key (required)")
	f.StringVar(&in, "in", "", "file to encrypt, or - for standard input (required)")
	f.StringVar(&out, "out", "", "encrypted file to create, mode 0600 (required)")
	f.StringArrayVar(&encCtx, "context", nil, "encryption context pair K=V; repeat for more")
	f.BoolVar(&force, "force", false, "replace --out if it exists (a symlink is replaced, not followed)")
	return cmd
}

func (a *app) decryptFileCommand() *cobra.Command {
	var in, out string
	var encCtx []string
	var force bool
	cmd := &cobra.Command{
		Use:   "decrypt-file --in FILE --out FILE [--context K=V]... [--force]",
		Short: "Decrypt a file made by encrypt-file",
		Long: `Decrypt a file made by encrypt-file. The data key is decrypted by the broker
with the encryption context stored in the file; every chunk is authenticated
before its plaintext is written, and truncation, appended data, reordering and
any change to the file are detected.

The plaintext is written to a temporary file (mode 0600) next to --out and
renamed into place only when the whole file has been verified; on any failure
the temporary file is removed, so no partial plaintext is left under --out.
--out must not exist unless --force is given; a symlink there is replaced,
never followed. --context, if given, requires the file's encryption context to be exactly
these pairs.`,
		Example: `  hsmctl decrypt-file --in db.dump.hsmb --out db.dump
  hsmctl decrypt-file --in db.dump.hsmb --out db.dump --context host=db1`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			pairs, err := parsePairs("--context", encCtx)
			if err != nil {
				return err
			}
			if len(encCtx) > 0 && pairs == nil {
				pairs = map[string]string{}
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			return a.transformFile(in, out, force, "decrypt", func(r io.Reader, w io.Writer, progress func(int64)) error {
				var err error
				if pairs == nil {
					err = client.DecryptStream(a.ctx, c, r, w, progress)
				} else {
					env := client.Envelope{Keys: c.DataKeys(), Progress: progress, RequireContext: pairs}
					err = env.Decrypt(a.ctx, r, w)
				}
				if errors.Is(err, client.ErrNotEnvelope) {
					return fmt.Errorf("%w (a ciphertext from 'hsmctl encrypt'? use 'hsmctl decrypt')", err)
				}
				return err
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "encrypted file, or - for standard input (required)")
	f.StringVar(&out, "out", "", "plaintext file to create, mode 0600 (required)")
	f.StringArrayVar(&encCtx, "context", nil, "require this encryption context pair K=V; repeat for more")
	f.BoolVar(&force, "force", false, "replace --out if it exists (a symlink is replaced, not followed)")
	return cmd
}

// transformFile runs stream from --in to a new file, mode 0600, that
// becomes --out only if stream succeeds (see outFile).
func (a *app) transformFile(in, out string, force bool, verb string, stream func(r io.Reader, w io.Writer, progress func(int64)) error) error {
	if in == "" {
		return usageErr("--in is required (a file, or - for standard input)")
	}
	if out == "" || out == "-" {
		return usageErr("--out is required, and must be a file")
	}
	var src io.Reader = a.stdin
	var size int64 = -1
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		if st, err := os.Stat(out); err == nil {
			if inSt, err := f.Stat(); err == nil && os.SameFile(st, inSt) {
				return fmt.Errorf("--in and --out are the same file")
			}
		}
		src = f
	}
	dst, err := createOutFile(out, privateFileMode, force)
	if err != nil {
		return err
	}
	defer dst.Abort()
	bar := a.newProgress(verb, size)
	counter := &countingWriter{w: dst}
	var read int64
	err = stream(src, counter, func(n int64) {
		read = n
		bar.update(n)
	})
	bar.finish(read)
	if err != nil {
		return err
	}
	if err := dst.Commit(); err != nil {
		return err
	}
	if a.json() {
		return printJSON(a.stdout, map[string]any{"in": in, "out": out, "bytesRead": read, "bytesWritten": counter.n})
	}
	past := map[string]string{"encrypt": "Encrypted", "decrypt": "Decrypted"}[verb]
	_, err = fmt.Fprintf(a.stdout, "%s %s (%s) to %s (%s)\n", past, inputName(in), formatBytes(read), out, formatBytes(counter.n))
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressBar shows bytes done, and the percentage when the total is
// known, on one line of a terminal, at most ten times a second.
type progressBar struct {
	w     io.Writer
	label string
	total int64 // -1 if unknown
	last  time.Time
	shown bool
}

// newProgress returns a bar on stderr if it is a terminal, else nil, which
// shows nothing.
func (a *app) newProgress(label string, total int64) *progressBar {
	if !isTerminal(a.stderr) {
		return nil
	}
	return &progressBar{w: a.stderr, label: label, total: total}
}

func (p *progressBar) update(n int64) {
	if p == nil {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		p.shown = true
		fmt.Fprintf(p.w, "\r%s %s\x1b[K", p.label, formatProgress(n, p.total))
	}
}

func (p *progressBar) finish(n int64) {
	if p == nil || !p.shown {
		return
	}
	fmt.Fprintf(p.w, "\r%s %s\x1b[K\n", p.label, formatProgress(n, p.total))
}

// formatProgress is "12.3 MiB / 100.0 MiB  12%", or "12.3 MiB" when the
// total is unknown.
func formatProgress(n, total int64) string {
	if total <= 0 {
		return formatBytes(n)
	}
	pct := n * 100 / total
	return fmt.Sprintf("%s / %s %3d%%", formatBytes(n), formatBytes(total), min(pct, 100))
}

// formatBytes is n in B, KiB, MiB, GiB or TiB with one decimal.
func formatBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || unit == "TiB" {
			return fmt.Sprintf("%.1f %s", v, unit)
		}
	}
	panic("unreachable")
}
