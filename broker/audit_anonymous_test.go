package broker

import (
	"fmt"
	"testing"
	"time"
)

// TestAnonymousRefusalsAdmit: a burst of lines, then the rate, and the
// rest counted by front and host for one summary each interval.
func TestAnonymousRefusalsAdmit(t *testing.T) {
	var a anonymousRefusals
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for i := range anonymousLineBurst {
		if line, _ := a.admit(FrontVault, "10.0.0.1:4000", t0); !line {
			t.Fatalf("refusal %d of the burst got no line", i+1)
		}
	}
	line, schedule := a.admit(FrontVault, "10.0.0.1:4001", t0)
	if line || !schedule {
		t.Fatalf("first refusal past the burst: line %v, schedule %v; want no line and a summary scheduled", line, schedule)
	}
	if line, schedule := a.admit(FrontAWS, "10.0.0.2:4000", t0); line || schedule {
		t.Fatalf("second refusal past the burst: line %v, schedule %v; want neither (a summary is pending)", line, schedule)
	}
	// A second later the bucket holds the rate's worth of lines again.
	t1 := t0.Add(time.Second)
	for i := range anonymousLinesPerSecond {
		if line, _ := a.admit(FrontVault, "10.0.0.1:4002", t1); !line {
			t.Fatalf("refusal %d a second later got no line", i+1)
		}
	}
	if line, _ := a.admit(FrontVault, "10.0.0.1:4003", t1); line {
		t.Fatal("refusal past the refilled bucket got a line")
	}
	got := a.take()
	want := map[anonymousSource]uint64{{FrontVault, "10.0.0.1"}: 2, {FrontAWS, "10.0.0.2"}: 1}
	if len(got) != len(want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	for src, n := range want {
		if u := got[src]; u == nil || u.count != n {
			t.Fatalf("pending for %v: %+v, want %d", src, u, n)
		}
	}
	if u := got[anonymousSource{FrontVault, "10.0.0.1"}]; !u.first.Equal(t0) || !u.last.Equal(t1) {
		t.Fatalf("interval %v to %v, want %v to %v", u.first, u.last, t0, t1)
	}
	if len(a.take()) != 0 {
		t.Fatal("take left counts behind")
	}
	// After a summary, the next unlined refusal schedules the next one.
	if _, schedule := a.admit(FrontVault, "10.0.0.1:4004", t1); !schedule {
		t.Fatal("no summary scheduled after the last one was taken")
	}
	// Sources are bounded: beyond maxAnonymousSources they are "other".
	for i := range maxAnonymousSources + 50 {
		a.admit(FrontAWS, fmt.Sprintf("10.1.%d.%d:80", i/250, i%250), t1)
	}
	got = a.take()
	if len(got) != maxAnonymousSources+1 {
		t.Fatalf("%d sources pending, want %d and %q", len(got), maxAnonymousSources, anonymousOtherSources)
	}
	var total uint64
	for _, u := range got {
		total += u.count
	}
	if other := got[anonymousSource{FrontAWS, anonymousOtherSources}]; other == nil || other.count == 0 || total != maxAnonymousSources+51 {
		t.Fatalf("other: %+v, total %d; want the overflow in other and %d in all", other, total, maxAnonymousSources+51)
	}
}
