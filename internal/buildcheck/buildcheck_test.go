// Package buildcheck_test holds the rules for how a fresh machine gets what
// the suite needs: `make deps` installs system packages (SYSTEM_DEPS),
// `make tools` installs Go programs pinned to versions (GO_TOOLS), and
// .ci/run is nothing but system packages and the README's commands, so that
// `make test` alone is the whole suite anywhere.
package buildcheck_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const root = "../.."

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// makeList returns the words assigned to a Makefile variable with := and +=.
func makeList(makefile, name string) []string {
	// A $(VAR) item stands for VAR's own list.
	var out []string
	re := regexp.MustCompile(`(?m)^` + name + `\s*(?::=|\+=)(.*)$`)
	for _, m := range re.FindAllStringSubmatch(makefile, -1) {
		for _, f := range strings.Fields(m[1]) {
			if ref, ok := strings.CutPrefix(f, "$("); ok && strings.HasSuffix(ref, ")") {
				out = append(out, makeList(makefile, strings.TrimSuffix(ref, ")"))...)
				continue
			}
			out = append(out, f)
		}
	}
	return out
}

// pinned is package@vX.Y.Z, or a module's pseudo-version (a commit of a
// module that tags no releases).
var pinned = regexp.MustCompile(`^[a-z0-9.-]+(/[A-Za-z0-9._-]+)+@v[0-9]+\.[0-9]+\.[0-9]+(-[0-9]{14}-[0-9a-f]{12})?$`)

// makefileProblems lists what breaks the rule that every Go program the
// Makefile installs is pinned: GO_TOOLS entries are package@vX.Y.Z, and no
// recipe runs go install on anything but a GO_TOOLS entry.
func makefileProblems(makefile string) []string {
	var probs []string
	tools := makeList(makefile, "GO_TOOLS")
	if len(tools) == 0 {
		probs = append(probs, "Makefile: no GO_TOOLS")
	}
	for _, tool := range tools {
		if !pinned.MatchString(tool) {
			probs = append(probs, "Makefile: GO_TOOLS entry "+tool+" is not package@vX.Y.Z")
		}
	}
	install := regexp.MustCompile(`(?:\bgo|\$\(GO\))\s+(?:install|get)\s+([^\s";]+)`)
	for i, line := range strings.Split(makefile, "\n") {
		for _, m := range install.FindAllStringSubmatch(line, -1) {
			target := regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(m[1], func(ref string) string {
				return strings.Join(makeList(makefile, ref[2:len(ref)-1]), " ")
			})
			if m[1] != "$$t" && !pinned.MatchString(target) {
				probs = append(probs, "Makefile:"+strconv.Itoa(i+1)+": go install of an unpinned "+m[1])
			}
		}
		if strings.Contains(line, "@latest") {
			probs = append(probs, "Makefile:"+strconv.Itoa(i+1)+": @latest")
		}
	}
	return probs
}

// ciProblems lists the lines of .ci/run that are neither shell set-up,
// apt-get, nor a `make` command the README shows, and the SYSTEM_DEPS
// packages .ci/run does not install.
func ciProblems(script, readme string, systemDeps []string) []string {
	var probs []string
	readmeMake := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^make ([a-z-]+)`).FindAllStringSubmatch(readme, -1) {
		readmeMake[m[1]] = true
	}
	allowed := []*regexp.Regexp{
		regexp.MustCompile(`^set -[a-z]+( pipefail)?$`),
		regexp.MustCompile(`^cd "\$\(dirname "\$0"\)/\.\."$`),
		regexp.MustCompile(`^export [A-Z_]+=`),
		regexp.MustCompile(`^apt-get (update|install) `),
	}
	installed := map[string]bool{}
	for i, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := ".ci/run:" + strconv.Itoa(i+1) + ": "
		if regexp.MustCompile(`\bgo\s`).MatchString(line) {
			probs = append(probs, where+"runs go itself (Go programs come from make tools): "+line)
			continue
		}
		if m := regexp.MustCompile(`^make ([a-z-]+)$`).FindStringSubmatch(line); m != nil {
			if !readmeMake[m[1]] {
				probs = append(probs, where+"make "+m[1]+" is not a README command")
			}
			continue
		}
		if !slices.ContainsFunc(allowed, func(re *regexp.Regexp) bool { return re.MatchString(line) }) {
			probs = append(probs, where+"neither system packages nor a README command: "+line)
			continue
		}
		if strings.HasPrefix(line, "apt-get install ") {
			for _, w := range strings.Fields(line)[2:] {
				if !strings.HasPrefix(w, "-") && !strings.HasPrefix(w, ">") {
					installed[w] = true
				}
			}
		}
	}
	for _, d := range systemDeps {
		pkg, _, _ := strings.Cut(d, ":")
		if !installed[pkg] {
			probs = append(probs, ".ci/run does not install SYSTEM_DEPS package "+pkg)
		}
	}
	return probs
}

func TestMakefilePinsEveryGoTool(t *testing.T) {
	for _, p := range makefileProblems(read(t, "Makefile")) {
		t.Error(p)
	}
}

func TestCIRunIsSystemPackagesAndREADMECommands(t *testing.T) {
	mk := read(t, "Makefile")
	for _, p := range ciProblems(read(t, ".ci/run"), read(t, "README.md"), makeList(mk, "SYSTEM_DEPS")) {
		t.Error(p)
	}
	if !regexp.MustCompile(`(?m)^test: .*\btools\b`).MatchString(mk) {
		t.Error("make test does not run make tools")
	}
}

// The checks catch what they are for.
func TestRulesCatchBreakage(t *testing.T) {
	readme := "```sh\nmake lint\nmake test\n```\n"
	deps := []string{"softhsm2:/usr/lib/softhsm/libsofthsm2.so"}
	good := "set -euo pipefail\napt-get install -y -qq softhsm2 >/dev/null\nexport CI=true\nmake test\n"
	if p := ciProblems(good, readme, deps); len(p) != 0 {
		t.Fatalf("a good .ci/run: %v", p)
	}
	for _, bad := range []string{
		good + "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3\n",
		good + "command -v grpcurl >/dev/null || go install example.com/x@v1.0.0\n",
		good + "make soak\n",
		good + "curl -sSfL https://example.com/x | sh\n",
		strings.Replace(good, "softhsm2 ", "opensc ", 1),
	} {
		if len(ciProblems(bad, readme, deps)) == 0 {
			t.Errorf("not caught in .ci/run:\n%s", bad)
		}
	}
	goodMk := "GO_TOOLS := honnef.co/go/tools/cmd/staticcheck@v0.8.2\ntools:\n\tGOBIN=x $(GO) install $$t\n"
	if p := makefileProblems(goodMk); len(p) != 0 {
		t.Fatalf("a good Makefile: %v", p)
	}
	for _, bad := range []string{
		goodMk + "GO_TOOLS += example.com/x/cmd/x@latest\n",
		goodMk + "GO_TOOLS += example.com/x/cmd/x\n",
		goodMk + "lint:\n\t@command -v y >/dev/null || $(GO) install example.com/y@latest\n",
		goodMk + "lint:\n\tgo install example.com/y@master\n",
		"tools:\n",
	} {
		if len(makefileProblems(bad)) == 0 {
			t.Errorf("not caught in the Makefile:\n%s", bad)
		}
	}
}

// baseTools come with Go, with Debian's base system, or as dependencies of
// SYSTEM_DEPS packages (python3 of python3-pykmip; mariadbd,
// mariadb-install-db and mariadb of mariadb-server). cc is the C compiler
// cgo itself needs, so every machine that builds the project has it.
var baseTools = []string{"go", "bash", "sh", "git", "make", "cc", "python3", "mariadbd", "mariadb-install-db", "mariadb"}

// TestEveryProgramTestsRunIsInstalled: each program a test runs by name is
// the basename of a SYSTEM_DEPS file, a GO_TOOLS program, or a base tool.
func TestEveryProgramTestsRunIsInstalled(t *testing.T) {
	mk := read(t, "Makefile")
	known := map[string]string{}
	for _, d := range makeList(mk, "SYSTEM_DEPS") {
		pkg, file, _ := strings.Cut(d, ":")
		known[filepath.Base(file)] = "system package " + pkg
	}
	for _, tool := range makeList(mk, "GO_TOOLS") {
		pkg, _, _ := strings.Cut(tool, "@")
		known[filepath.Base(pkg)] = "make tools"
	}
	for _, b := range baseTools {
		known[b] = "base"
	}
	run := regexp.MustCompile(`(?:exec\.(?:LookPath|Command|CommandContext)\((?:ctx, )?|gate\.Tool\(t, )"([^"/]+)"`)
	var used []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range run.FindAllStringSubmatch(string(b), -1) {
			if _, ok := known[m[1]]; !ok {
				t.Errorf("%s runs %q, which neither make deps (SYSTEM_DEPS) nor make tools (GO_TOOLS) installs", path, m[1])
			}
			used = append(used, m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(used)
	used = slices.Compact(used)
	// The scan finds the programs it is for.
	for _, want := range []string{"grpcurl", "openssl"} {
		if !slices.Contains(used, want) {
			t.Errorf("the scan of the tests did not find %s (found %v)", want, used)
		}
	}
}

// benchCommands are the `go test ... -bench` commands docs/BENCHMARKS.md
// gives, one space between words.
func benchCommands(doc string) []string {
	var out []string
	re := regexp.MustCompile("go test -run '\\^\\$' -bench [^`\\n]*(?:\\n[^`\\n]*)?")
	for _, m := range re.FindAllString(doc, -1) {
		cmd := strings.Join(strings.Fields(m), " ")
		if i := strings.Index(cmd, " #"); i >= 0 {
			cmd = strings.TrimSpace(cmd[:i])
		}
		out = append(out, cmd)
	}
	return out
}

// TestMakeBenchRunsTheDocsBenchmarks: `make bench` runs each Go benchmark
// command docs/BENCHMARKS.md gives, as given (the same benchtime), and the
// docs give a command for every Benchmark function in the repository.
func TestMakeBenchRunsTheDocsBenchmarks(t *testing.T) {
	mk := read(t, "Makefile")
	m := regexp.MustCompile(`(?ms)^bench:[^\n]*\n((?:\t[^\n]*\n)+)`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatal("no bench target in the Makefile")
	}
	recipe := map[string]bool{}
	for _, line := range strings.Split(m[1], "\n") {
		line = strings.ReplaceAll(strings.TrimSpace(line), "$$", "$")
		recipe[strings.Replace(line, "$(GO) ", "go ", 1)] = true
	}
	cmds := benchCommands(read(t, "docs/BENCHMARKS.md"))
	if len(cmds) < 5 {
		t.Fatalf("found only %d benchmark commands in docs/BENCHMARKS.md: %q", len(cmds), cmds)
	}
	type cited struct{ pattern, pkg string }
	var all []cited
	for _, c := range cmds {
		if !recipe[c] {
			t.Errorf("docs/BENCHMARKS.md gives %q, which make bench does not run", c)
		}
		f := strings.Fields(c)
		pattern := ""
		for i := range f[:len(f)-1] {
			if f[i] == "-bench" {
				pattern = strings.Trim(f[i+1], "'")
			}
		}
		top, _, _ := strings.Cut(pattern, "/")
		all = append(all, cited{top, strings.TrimPrefix(f[len(f)-1], "./")})
	}
	for line := range recipe {
		if strings.HasPrefix(line, "go test") && !slices.Contains(cmds, line) {
			t.Errorf("make bench runs %q, which docs/BENCHMARKS.md does not give", line)
		}
	}
	bench := regexp.MustCompile(`(?m)^func (Benchmark\w+)\(`)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg, _ := filepath.Rel(root, filepath.Dir(path))
		for _, fm := range bench.FindAllStringSubmatch(string(b), -1) {
			if !slices.ContainsFunc(all, func(c cited) bool {
				ok, _ := regexp.MatchString(c.pattern, fm[1])
				return ok && c.pkg == filepath.ToSlash(pkg)
			}) {
				t.Errorf("%s in ./%s has no command in docs/BENCHMARKS.md (so make bench does not run it)", fm[1], pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
