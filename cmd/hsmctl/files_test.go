package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func TestEncryptDecryptFile(t *testing.T) {
	e := newEnv(t)
	e.createKey("alias/files")
	data := make([]byte, 300_000)
	rand.Read(data)
	in := e.file("data.bin", data)
	enc := filepath.Join(e.dir, "data.bin.hsmb")
	dec := filepath.Join(e.dir, "data.out")

	out := e.ok("encrypt-file", "--key", "alias/files", "--in", in, "--out", enc, "--context", "file=data.bin")
	if !strings.HasPrefix(out, "Encrypted "+in+" (293.0 KiB) to "+enc+" (") {
		t.Errorf("encrypt-file: %q", out)
	}
	var res map[string]any
	e.okJSON(&res, "decrypt-file", "--in", enc, "--out", dec)
	if res["bytesWritten"] != float64(len(data)) || res["out"] != dec {
		t.Errorf("decrypt-file -o json: %v", res)
	}
	if !bytes.Equal(e.read(dec), data) {
		t.Fatal("round trip changed the data")
	}
	if info, _ := os.Stat(dec); info.Mode().Perm() != 0o600 {
		t.Errorf("plaintext file mode %v", info.Mode().Perm())
	}

	// Existing output needs --force.
	e.fails(1, dec+" exists; use --force to replace it", "decrypt-file", "--in", enc, "--out", dec)
	e.ok("decrypt-file", "--in", enc, "--out", dec, "--force")
	e.fails(1, "--in and --out are the same file", "encrypt-file", "--key", "alias/files", "--in", in, "--out", in, "--force")

	// The required context must match.
	e.ok("decrypt-file", "--in", enc, "--out", filepath.Join(e.dir, "ctx-ok"), "--context", "file=data.bin")
	e.fails(1, "encryption context differs from the one required", "decrypt-file", "--in", enc, "--out", filepath.Join(e.dir, "ctx-bad"), "--context", "file=other")

	// A ciphertext blob of encrypt is not an envelope file: say which
	// command reads it.
	small := e.file("small.txt", []byte("small"))
	blob := e.file("small.enc", unb64(t, e.ok("encrypt", "--key", "alias/files", "--in", small, "--base64")))
	e.fails(1, "hsmctl: not an envelope-encrypted file (bad magic) (a ciphertext from 'hsmctl encrypt'? use 'hsmctl decrypt')\n",
		"decrypt-file", "--in", blob, "--out", filepath.Join(e.dir, "small.out"))

	// From standard input.
	stdinEnc := filepath.Join(e.dir, "stdin.hsmb")
	if r := e.runIn("from a pipe", "encrypt-file", "--key", "alias/files", "--in", "-", "--out", stdinEnc); r.code != 0 {
		t.Fatalf("encrypt-file --in -: %+v", r)
	}
	e.ok("decrypt-file", "--in", stdinEnc, "--out", filepath.Join(e.dir, "stdin.out"))
	if got := string(e.read(filepath.Join(e.dir, "stdin.out"))); got != "from a pipe" {
		t.Errorf("stdin round trip: %q", got)
	}

	for _, name := range entries(t, e.dir) {
		if strings.HasSuffix(name, ".tmp") {
			t.Errorf("temporary file left behind: %s", name)
		}
	}
}

// TestDecryptFileFailureLeavesNothing damages an encrypted file in its last
// chunk: the chunks before it authenticate and are written to the temporary
// file, which must be removed, and --out must never appear.
func TestDecryptFileFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.createKey("alias/files")
	in := e.file("data.bin", bytes.Repeat([]byte("x"), 200_000))
	enc := filepath.Join(e.dir, "data.hsmb")
	e.ok("encrypt-file", "--key", "alias/files", "--in", in, "--out", enc)
	file := e.read(enc)

	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"last chunk changed", func() []byte { f := bytes.Clone(file); f[len(f)-5] ^= 1; return f }(), "envelope file failed authentication at chunk "},
		{"cut at a chunk boundary", file[:len(file)-(200_000-3*65536+16)], "envelope file is truncated"},
		{"cut inside a chunk", file[:len(file)-100], "envelope file failed authentication at chunk "},
		{"trailing data", append(bytes.Clone(file), "more"...), "envelope file failed authentication at chunk "},
		{"not an envelope file", []byte("plain text"), "not an envelope-encrypted file"},
		{"data key blob changed", func() []byte { f := bytes.Clone(file); f[30] ^= 1; return f }(), "(InvalidCiphertextException)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := e.file("bad.hsmb", tt.file)
			out := filepath.Join(e.dir, "bad.out")
			e.fails(1, tt.want, "decrypt-file", "--in", bad, "--out", out)
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("--out exists after a failure: %v", err)
			}
			for _, name := range entries(t, e.dir) {
				if strings.HasPrefix(name, "bad.out") {
					t.Fatalf("left behind: %s", name)
				}
			}
		})
	}
}
