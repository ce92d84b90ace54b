package hsmtest

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// watchTimeout makes a test binary that is about to hit its -test.timeout
// print every goroutine's stack and then, last, a short digest of the
// goroutines blocked for a minute or more (every goroutine, under a timeout
// shorter than five minutes), grouped by where they wait, and
// exit with status 2. Go's own timeout panic ends with whichever goroutines
// come last, typically dozens of idle network readers, and a CI log that
// keeps only the tail of the output then hides what is stuck. It fires a
// twentieth of the timeout early (at most 20s); the returned func cancels it.
func watchTimeout() (stop func()) {
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.timeout")
	if f == nil {
		return func() {}
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return func() {}
	}
	d, ok := g.Get().(time.Duration)
	if !ok || d <= 0 {
		return func() {}
	}
	early := min(20*time.Second, d/20)
	t := time.AfterFunc(d-early, func() {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		_, _ = os.Stderr.Write(buf.Bytes())
		// Only waits of a minute or more say how long; under a short
		// timeout every goroutine is listed.
		minMins, which := 1, "blocked for a minute or more"
		if d < 5*time.Minute {
			minMins, which = 0, "all goroutines"
		}
		fmt.Fprintf(os.Stderr, "\nhsmtest: the tests are %s from their %s timeout. %s, by where they wait (count, minutes, state | innermost frames | first hsmbroker frame):\n%s",
			early, d, which, hangDigest(buf.String(), minMins, 20))
		os.Exit(2)
	})
	return func() { t.Stop() }
}

var goroutineHeader = regexp.MustCompile(`^goroutine \d+ \[([^,\]]+)(?:, (\d+) minutes)?(?:, locked to thread)?\]:$`)

// hangDigest reads a goroutine dump (pprof debug=2, the format of a
// panic's traceback) and lists the goroutines blocked for at least minMins
// minutes (the dump gives whole minutes, from one up; 0 lists every
// goroutine), grouped by their wait state and innermost non-runtime
// frames: those with a frame of this module first, then the longest
// waits; at most maxLines lines.
func hangDigest(dump string, minMins, maxLines int) string {
	type group struct {
		key, module string
		count, mins int
	}
	groups := map[string]*group{}
	for _, blk := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(blk), "\n")
		m := goroutineHeader.FindStringSubmatch(lines[0])
		if m == nil {
			continue
		}
		mins, _ := strconv.Atoi(m[2]) // "" (under a minute) reads as 0
		if mins < minMins {
			continue
		}
		var frames []string
		module := ""
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "created by ") {
				continue
			}
			fn := frameName(l)
			if module == "" && strings.HasPrefix(l, "github.com/hsmbroker/hsmbroker/") {
				module = fn
			}
			if len(frames) < 2 && !runtimeFrame(l) {
				frames = append(frames, fn)
			}
		}
		key := m[1] + " | " + strings.Join(frames, " <- ")
		gr := groups[key+module]
		if gr == nil {
			gr = &group{key: key, module: module}
			groups[key+module] = gr
		}
		gr.count++
		gr.mins = max(gr.mins, mins)
	}
	list := make([]*group, 0, len(groups))
	for _, gr := range groups {
		list = append(list, gr)
	}
	outside := func(g *group) int {
		if g.module != "" {
			return 0
		}
		return 1
	}
	slices.SortFunc(list, func(a, b *group) int {
		return cmp.Or(cmp.Compare(outside(a), outside(b)), cmp.Compare(b.mins, a.mins),
			cmp.Compare(b.count, a.count), strings.Compare(a.key, b.key))
	})
	if len(list) == 0 {
		return "  (none)\n"
	}
	var out strings.Builder
	for i, gr := range list {
		if i == maxLines {
			fmt.Fprintf(&out, "  ... and %d more groups (the full dump is above)\n", len(list)-i)
			break
		}
		mod := gr.module
		if mod == "" {
			mod = "-"
		}
		fmt.Fprintf(&out, "  %3d x %d min %s | %s\n", gr.count, gr.mins, gr.key, mod)
	}
	return out.String()
}

// frameName turns "github.com/x/y.(*T).M(0xc000, ...)" into "y.(*T).M".
func frameName(l string) string {
	if strings.HasSuffix(l, ")") {
		if i := strings.LastIndex(l, "("); i > 0 {
			l = l[:i]
		}
	}
	if i := strings.LastIndex(l, "/"); i >= 0 {
		l = l[i+1:]
	}
	return l
}

// runtimeFrame says whether a frame belongs to the runtime or the standard
// library's waiting machinery, which every blocked goroutine shares.
func runtimeFrame(l string) bool {
	for _, p := range []string{"runtime.", "sync.", "internal/", "net.", "crypto/tls.", "bufio.", "io.", "time.Sleep"} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}
