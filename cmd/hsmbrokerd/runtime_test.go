package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

// TestTuneGC: without GOGC the daemon collects at defaultGCPercent; an
// operator's GOGC is left alone.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	tuneGC()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("without GOGC: GC percent %d, want %d", got, defaultGCPercent)
	}

	t.Setenv("GOGC", "77")
	debug.SetGCPercent(77)
	tuneGC()
	if got := debug.SetGCPercent(100); got != 77 {
		t.Errorf("with GOGC=77: GC percent %d, want 77", got)
	}
}

// TestTuneProcs: without GOMAXPROCS the daemon runs Go code on half the
// processors Go would use, at least one; an operator's GOMAXPROCS is left
// alone.
func TestTuneProcs(t *testing.T) {
	for _, c := range []struct{ goDefault, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {16, 8}} {
		if got := defaultProcs(c.goDefault); got != c.want {
			t.Errorf("defaultProcs(%d) = %d, want %d", c.goDefault, got, c.want)
		}
	}
	prev := runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(prev)

	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	tuneProcs()
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("without GOMAXPROCS, from 4: GOMAXPROCS %d, want 2", got)
	}

	runtime.GOMAXPROCS(4)
	t.Setenv("GOMAXPROCS", "4")
	tuneProcs()
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Errorf("with GOMAXPROCS=4: %d, want 4", got)
	}
}
