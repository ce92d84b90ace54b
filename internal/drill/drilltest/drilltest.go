// Package drilltest checks drill reports against the operations their
// clients recorded, for the tests of the drill and of hsmctl drill.
package drilltest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/internal/drill"
)

// CheckReport checks a drill's report (as returned, or as read back from
// its JSON) against itself and against the operations its clients
// recorded (its trace file).
func CheckReport(t testing.TB, rep *drill.Report, samples []TraceLine, mode drill.Mode, rounds int) {
	t.Helper()
	if rep.Lost != 0 {
		t.Errorf("lost %d acknowledged items: %v", rep.Lost, rep.Check.Failures)
	}
	if len(rep.Rounds) != rounds {
		t.Fatalf("%d rounds reported, want %d", len(rep.Rounds), rounds)
	}
	if rep.Check.Keys == 0 || rep.Check.Ciphertexts == 0 || len(rep.Check.Nodes) != len(rep.Nodes) {
		t.Errorf("check covered %d keys and %d ciphertexts on %v; want some of each on every node %v",
			rep.Check.Keys, rep.Check.Ciphertexts, rep.Check.Nodes, rep.Nodes)
	}

	// The trace is what the clients saw; the report's figures must follow
	// from it.
	if len(samples) != rep.Ops {
		t.Errorf("report counts %d operations, the clients recorded %d", rep.Ops, len(samples))
	}
	errs, kinds := 0, map[string]int{}
	for _, s := range samples {
		if s.Code != "OK" {
			errs++
			k := s.Op + " " + s.Code
			if s.Exception != "" {
				k += " (" + s.Exception + ")"
			}
			kinds[k]++
		}
	}
	if errs != rep.Errors || fmt.Sprint(kinds) != fmt.Sprint(rep.ErrorKinds) {
		t.Errorf("report: %d errors %v; clients saw %d %v", rep.Errors, rep.ErrorKinds, errs, kinds)
	}
	sum := 0
	prevEnd := drill.Millis(0)
	for _, rd := range rep.Rounds {
		for _, ph := range []struct {
			name string
			p    drill.Phase
		}{{"before", rd.Before}, {"during", rd.During}, {"after", rd.After}} {
			if ph.p.Start != prevEnd {
				t.Errorf("round %d %s starts at %v, the previous phase ended at %v", rd.Round, ph.name, ph.p.Start, prevEnd)
			}
			prevEnd = ph.p.End
			want := recompute(samples, ph.p.Start, ph.p.End)
			if want.Ops != ph.p.Ops || want.Errors != ph.p.Errors || want.P50 != ph.p.P50 || want.P99 != ph.p.P99 {
				t.Errorf("round %d %s: report %+v; from the clients' operations %+v", rd.Round, ph.name, ph.p, want)
			}
			if ph.p.Ops == 0 {
				t.Errorf("round %d %s: no operations; the load stalled", rd.Round, ph.name)
			}
		}
		if rd.Errors != rd.Before.Errors+rd.During.Errors+rd.After.Errors {
			t.Errorf("round %d: %d errors, phases say %d+%d+%d", rd.Round, rd.Errors, rd.Before.Errors, rd.During.Errors, rd.After.Errors)
		}
		sum += rd.Errors
		if rd.FaultStart != rd.During.Start || rd.FaultEnd != rd.During.End {
			t.Errorf("round %d: fault window %v-%v, during phase %v-%v", rd.Round, rd.FaultStart, rd.FaultEnd, rd.During.Start, rd.During.End)
		}
		window := rd.FaultEnd - rd.FaultStart
		if rd.TimeToFirstWrite <= 0 || rd.TimeToFirstWrite > window {
			t.Errorf("round %d: first write after %v, outside the fault window of %v", rd.Round, rd.TimeToFirstWrite, window)
		}
		switch mode {
		case drill.ModeTransfer, drill.ModeKill:
			if rd.NewLeader == "" || rd.NewLeader == rd.OldLeader || rd.Node != rd.OldLeader {
				t.Errorf("round %d: took %s, leader %s -> %q", rd.Round, rd.Node, rd.OldLeader, rd.NewLeader)
			}
			if rd.TimeToNewLeader == nil || *rd.TimeToNewLeader <= 0 || *rd.TimeToNewLeader > rd.TimeToFirstWrite {
				t.Errorf("round %d: new leader after %v, first write after %v", rd.Round, rd.TimeToNewLeader, rd.TimeToFirstWrite)
			}
		case drill.ModeHSMLoss:
			if rd.Node == rd.OldLeader || rd.NewLeader != "" {
				t.Errorf("round %d: took the HSM of %s (leader %s), new leader %q; want a follower's, no election", rd.Round, rd.Node, rd.OldLeader, rd.NewLeader)
			}
			if rd.TimeToNotReady == nil || *rd.TimeToNotReady > rd.TimeToRecover {
				t.Errorf("round %d: not ready after %v, serving again after %v", rd.Round, rd.TimeToNotReady, rd.TimeToRecover)
			}
		}
		if mode != drill.ModeTransfer && (rd.TimeToRecover <= 0 || rd.TimeToRecover > window) {
			t.Errorf("round %d: serving again after %v, outside the fault window of %v", rd.Round, rd.TimeToRecover, window)
		}
	}
	if sum != rep.Errors {
		t.Errorf("rounds' errors add up to %d, the report's total is %d", sum, rep.Errors)
	}
}

// ReadTrace parses a trace file.
func ReadTrace(t testing.TB, r io.Reader) []TraceLine {
	t.Helper()
	var out []TraceLine
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var l TraceLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// TraceLine is a line of a trace file, as a reader of the file sees it.
type TraceLine struct {
	At        drill.Millis `json:"atMs"`
	Latency   drill.Millis `json:"latencyMs"`
	Op        string       `json:"op"`
	Code      string       `json:"code"`
	Exception string       `json:"exception"`
}

// recompute derives a phase's figures from trace lines, independently of
// the package's code: nearest-rank percentiles.
func recompute(lines []TraceLine, start, end drill.Millis) drill.Phase {
	p := drill.Phase{Start: start, End: end}
	var lat []drill.Millis
	for _, l := range lines {
		if l.At < start || l.At >= end {
			continue
		}
		p.Ops++
		if l.Code != "OK" {
			p.Errors++
		}
		lat = append(lat, l.Latency)
	}
	slices.Sort(lat)
	rank := func(q float64) drill.Millis {
		if len(lat) == 0 {
			return 0
		}
		i := int((q*float64(len(lat)))+0.999999999) - 1
		return lat[min(max(i, 0), len(lat)-1)]
	}
	p.P50, p.P99 = rank(0.50), rank(0.99)
	return p
}

// CheckSVG checks that the plot is well-formed XML with a shaded window
// per round and two latency lines.
func CheckSVG(t testing.TB, b []byte, rounds int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	windows, lines := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plot is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if se.Name.Local == "rect" && a.Name.Local == "fill" && a.Value == "#f4a6a6" {
					windows++
				}
			}
			if se.Name.Local == "polyline" {
				lines++
			}
		}
	}
	if windows != rounds || lines < 3 {
		t.Errorf("plot has %d fault windows and %d lines; want %d windows and 3 lines", windows, lines, rounds)
	}
	if !strings.HasPrefix(string(b), "<svg") {
		t.Error("plot does not start with <svg")
	}
}
