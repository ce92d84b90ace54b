package keys

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// checkGolden compares got with testdata/name, a hex dump in which each line
// may end in a "#" comment naming the bytes. With -update it rewrites the
// file from lines (hex, comment) instead.
func checkGolden(t *testing.T, name string, got []byte, lines [][2]string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		var b strings.Builder
		b.WriteString("# " + name + ": golden bytes, one field per line; written by go test -update\n")
		for _, l := range lines {
			b.WriteString(l[0])
			if l[1] != "" {
				b.WriteString(" # " + l[1])
			}
			b.WriteByte('\n')
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readHexGolden(t, path)
	if !bytes.Equal(got, want) {
		t.Errorf("bytes differ from %s (run go test -update after a deliberate format change)\ngot  %x\nwant %x", path, got, want)
	}
	var fromLines []byte
	for _, l := range lines {
		b, err := hex.DecodeString(l[0])
		if err != nil {
			t.Fatalf("line %q: %v", l[0], err)
		}
		fromLines = append(fromLines, b...)
	}
	if !bytes.Equal(fromLines, got) {
		t.Errorf("the annotated layout does not match the bytes\nlayout %x\ngot    %x", fromLines, got)
	}
}

func readHexGolden(t *testing.T, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, line := range strings.Split(string(text), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.Join(strings.Fields(line), "")
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, b...)
	}
	return out
}

// hexOf is the hex of a string, for golden layouts.
func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }
