// Package archtest checks that docs/ARCHITECTURE.md tells the truth about
// which package imports which.
package archtest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/hsmbroker/hsmbroker/"

// homes names third-party packages that exactly one of the project's
// packages may import.
var homes = map[string]string{
	"github.com/miekg/pkcs11":    "broker/hsm",
	"github.com/hashicorp/raft":  "cluster",
	"github.com/hashicorp/raft/": "cluster",
}

// TestDiagramMatchesImports compares the deps block of
// docs/ARCHITECTURE.md with the imports of every package's non-test code.
func TestDiagramMatchesImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	documented := readDocumented(t, filepath.Join(root, "docs", "ARCHITECTURE.md"))
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	actual := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), "|")
		pkg = strings.TrimPrefix(pkg, module)
		if strings.HasPrefix(pkg, "internal/archtest") {
			continue
		}
		var own []string
		for imp := range strings.SplitSeq(imports, ",") {
			if rest, ok := strings.CutPrefix(imp, module); ok {
				own = append(own, rest)
			}
			for prefix, home := range homes {
				if (imp == prefix || strings.HasPrefix(imp, prefix) && strings.HasSuffix(prefix, "/")) && pkg != home {
					t.Errorf("%s imports %s; only %s may (docs/ARCHITECTURE.md)", pkg, imp, home)
				}
			}
		}
		slices.Sort(own)
		actual[pkg] = own
	}
	for pkg, imports := range actual {
		want, ok := documented[pkg]
		if !ok {
			t.Errorf("package %s is missing from the deps block of docs/ARCHITECTURE.md (it imports %v)", pkg, imports)
			continue
		}
		for _, imp := range imports {
			if !slices.Contains(want, imp) {
				t.Errorf("%s imports %s, which docs/ARCHITECTURE.md does not show", pkg, imp)
			}
		}
		for _, imp := range want {
			if !slices.Contains(imports, imp) {
				t.Errorf("docs/ARCHITECTURE.md shows %s -> %s, which the code no longer has", pkg, imp)
			}
		}
	}
	for pkg := range documented {
		if _, ok := actual[pkg]; !ok {
			t.Errorf("docs/ARCHITECTURE.md lists package %s, which does not exist", pkg)
		}
	}
}

// readDocumented parses the lines "pkg -> a, b" of the ```deps block.
func readDocumented(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deps := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "```deps":
			in = true
		case in && line == "```":
			in = false
		case in && line != "":
			pkg, imports, ok := strings.Cut(line, "->")
			if !ok {
				t.Fatalf("%s: deps line without ->: %q", path, line)
			}
			var list []string
			for imp := range strings.SplitSeq(imports, ",") {
				if imp = strings.TrimSpace(imp); imp != "" {
					list = append(list, imp)
				}
			}
			deps[strings.TrimSpace(pkg)] = list
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(deps) == 0 {
		t.Fatalf("%s has no ```deps block", path)
	}
	return deps
}
