package drill

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Millis is a duration in milliseconds, as the JSON report gives times.
type Millis float64

// ms converts d, rounded to the microsecond so that a time survives the
// JSON report unchanged and phase bounds compare exactly with trace times.
func ms(d time.Duration) Millis {
	return Millis(float64(d.Round(time.Microsecond)) / float64(time.Millisecond))
}

// Duration turns m back into a time.Duration.
func (m Millis) Duration() time.Duration {
	return time.Duration(float64(m) * float64(time.Millisecond))
}

// MarshalJSON rounds to the microsecond.
func (m Millis) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.3f", math.Round(float64(m)*1000)/1000)), nil
}

// Report is the outcome of a drill. Times are milliseconds; the phase
// bounds are counted from the start of the load.
type Report struct {
	// ID names the drill: its keys' aliases begin with alias/drill-ID-.
	ID        string    `json:"id"`
	Mode      string    `json:"mode"`
	Nodes     []string  `json:"nodes"`
	Clients   int       `json:"clients"`
	StartTime time.Time `json:"startTime"`
	// Duration is the load's, from its start to the last round's end.
	Duration Millis  `json:"durationMs"`
	Rounds   []Round `json:"rounds"`
	// Ops and Errors count every operation of the load; they are the sums
	// of the rounds' phases.
	Ops    int `json:"ops"`
	Errors int `json:"errors"`
	// ErrorKinds counts failed operations by operation, gRPC code and AWS
	// exception name.
	ErrorKinds map[string]int `json:"errorKinds"`
	// Check is the final check of what the cluster acknowledged.
	Check Check `json:"check"`
	// Lost is how many acknowledged keys and ciphertexts no longer work on
	// at least one node. 0 is the only acceptable answer.
	Lost int `json:"lost"`

	samples []Sample
}

// Samples returns every operation of the load, in the order answered.
func (rep *Report) Samples() []Sample { return rep.samples }

// traceLine is one operation in a trace file.
type traceLine struct {
	At        Millis `json:"atMs"`
	Latency   Millis `json:"latencyMs"`
	Op        string `json:"op"`
	Code      string `json:"code"`
	Exception string `json:"exception,omitempty"`
}

// WriteTrace writes every operation of the load as a JSON line: when it
// was answered (ms since the load started), how long it took, what it
// was, its gRPC code and AWS exception name.
func (rep *Report) WriteTrace(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, s := range rep.samples {
		if err := enc.Encode(traceLine{At: ms(s.At), Latency: ms(s.Latency), Op: s.Op, Code: s.Code, Exception: s.Exception}); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Round is one fault and its recovery.
type Round struct {
	Round int `json:"round"`
	// Node is the node taken away: the leader (transfer, kill) or the node
	// whose HSM was taken (hsm-loss).
	Node      string `json:"node"`
	OldLeader string `json:"oldLeader"`
	// NewLeader is the leader elected after the fault; empty for hsm-loss,
	// which leaves leadership alone.
	NewLeader string `json:"newLeader,omitempty"`
	// FaultStart and FaultEnd bound the fault window: from the action
	// (transfer call, kill command, HSM command) until the cluster was
	// whole again (first write after a transfer; the node serving again
	// after a kill or HSM loss).
	FaultStart Millis `json:"faultStartMs"`
	FaultEnd   Millis `json:"faultEndMs"`
	// TimeToNewLeader is from the fault to a node other than the old
	// leader saying it leads (transfer, kill).
	TimeToNewLeader *Millis `json:"timeToNewLeaderMs,omitempty"`
	// TimeToFirstWrite is from the fault to the first write the cluster
	// acknowledged afterwards.
	TimeToFirstWrite Millis `json:"timeToFirstWriteMs"`
	// TimeToNotReady is from taking the HSM away to its node reporting
	// itself not ready (hsm-loss).
	TimeToNotReady *Millis `json:"timeToNotReadyMs,omitempty"`
	// TimeToRecover is from the fault to the node taken away serving again
	// (kill, hsm-loss).
	TimeToRecover Millis `json:"timeToRecoverMs,omitempty"`
	// Errors is the client-visible errors of the round, all phases.
	Errors int   `json:"errors"`
	Before Phase `json:"before"`
	During Phase `json:"during"`
	After  Phase `json:"after"`
}

// Phase is the load in one window of a round: operations answered in
// [Start, End), errors among them, and latency percentiles of all of them
// (failures included, with the time they took to fail).
type Phase struct {
	Start  Millis `json:"startMs"`
	End    Millis `json:"endMs"`
	Ops    int    `json:"ops"`
	Errors int    `json:"errors"`
	P50    Millis `json:"p50Ms"`
	P99    Millis `json:"p99Ms"`
	Max    Millis `json:"maxMs"`
}

// Check is the final check.
type Check struct {
	// Keys and Ciphertexts are how many acknowledged keys (created by the
	// drill) and ciphertexts (from Encrypt and GenerateDataKey) were
	// checked, on each node.
	Keys        int      `json:"keys"`
	Ciphertexts int      `json:"ciphertexts"`
	Nodes       []string `json:"nodes"`
	// Failures describes the first few items that failed, if any.
	Failures []string `json:"failures,omitempty"`
}

// summarize fills in every phase's figures, and the totals, from the
// samples. An operation answered after the last phase ended (in flight
// when the load stopped) joins the last phase.
func (rep *Report) summarize(samples []Sample) {
	if n := len(rep.Rounds); n > 0 {
		last := &rep.Rounds[n-1]
		for _, p := range []*Phase{&last.After, &last.During, &last.Before} {
			if p.End > 0 {
				for _, s := range samples {
					p.End = max(p.End, ms(s.At+time.Microsecond))
				}
				break
			}
		}
	}
	rep.Ops, rep.Errors = 0, 0
	for i := range rep.Rounds {
		rd := &rep.Rounds[i]
		rd.Before, rd.During, rd.After = phaseOf(samples, rd.Before), phaseOf(samples, rd.During), phaseOf(samples, rd.After)
		rd.Errors = rd.Before.Errors + rd.During.Errors + rd.After.Errors
		rep.Ops += rd.Before.Ops + rd.During.Ops + rd.After.Ops
		rep.Errors += rd.Errors
	}
	for _, s := range samples {
		if !s.OK() {
			rep.ErrorKinds[s.Op+" "+s.Code+excSuffix(s.Exception)]++
		}
	}
}

// phaseOf computes p's figures from the samples answered within its bounds.
func phaseOf(samples []Sample, p Phase) Phase {
	out := Phase{Start: p.Start, End: p.End}
	if p.End <= p.Start {
		return out
	}
	var lat []time.Duration
	for _, s := range samples {
		at := ms(s.At)
		if at < p.Start || at >= p.End {
			continue
		}
		out.Ops++
		if !s.OK() {
			out.Errors++
		}
		lat = append(lat, s.Latency)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		out.P50, out.P99, out.Max = ms(Percentile(lat, 0.50)), ms(Percentile(lat, 0.99)), ms(lat[len(lat)-1])
	}
	return out
}

// Percentile is the nearest-rank percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// WriteText prints the report for people.
func (rep *Report) WriteText(w io.Writer) error {
	title := map[string]string{string(ModeTransfer): "Failover drill (leadership transfer)",
		string(ModeKill): "Failover drill (leader killed)", string(ModeHSMLoss): "HSM loss drill"}[rep.Mode]
	fmt.Fprintf(w, "%s: %d round(s), nodes %s, %d clients, %s of load\n\n", title, len(rep.Rounds),
		strings.Join(rep.Nodes, ", "), rep.Clients, fmtMs(rep.Duration))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if rep.Mode == string(ModeHSMLoss) {
		fmt.Fprintln(tw, "ROUND\tHSM OF\tLEADER\tNOT READY AFTER\tFIRST WRITE\tSERVING AGAIN\tERRORS\tOPS\tP50 BEFORE/DURING/AFTER\tP99 BEFORE/DURING/AFTER")
	} else {
		fmt.Fprintln(tw, "ROUND\tLEADER\tNEW LEADER\tNEW LEADER AFTER\tFIRST WRITE\tSERVING AGAIN\tERRORS\tOPS\tP50 BEFORE/DURING/AFTER\tP99 BEFORE/DURING/AFTER")
	}
	for _, rd := range rep.Rounds {
		second, third := rd.NewLeader, optMs(rd.TimeToNewLeader)
		if rep.Mode == string(ModeHSMLoss) {
			second, third = rd.OldLeader, optMs(rd.TimeToNotReady)
		}
		recovered := "-"
		if rd.TimeToRecover > 0 {
			recovered = fmtMs(rd.TimeToRecover)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s / %s / %s\t%s / %s / %s\n", rd.Round, dashIfEmpty(rd.Node), dashIfEmpty(second),
			third, fmtMs(rd.TimeToFirstWrite), recovered, rd.Errors, rd.Before.Ops+rd.During.Ops+rd.After.Ops,
			fmtMs(rd.Before.P50), fmtMs(rd.During.P50), fmtMs(rd.After.P50), fmtMs(rd.Before.P99), fmtMs(rd.During.P99), fmtMs(rd.After.P99))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ok := rep.Ops - rep.Errors
	rate := 100.0
	if rep.Ops > 0 {
		rate = 100 * float64(ok) / float64(rep.Ops)
	}
	fmt.Fprintf(w, "\nLoad: %d operations, %d failed as clients saw them (%.3f%% succeeded)\n", rep.Ops, rep.Errors, rate)
	kinds := make([]string, 0, len(rep.ErrorKinds))
	for k := range rep.ErrorKinds {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return rep.ErrorKinds[kinds[i]] > rep.ErrorKinds[kinds[j]] })
	for _, k := range kinds {
		fmt.Fprintf(w, "  %6d x %s\n", rep.ErrorKinds[k], k)
	}
	c := rep.Check
	if len(c.Nodes) == 0 {
		fmt.Fprintln(w, "\nCheck: not run (the drill did not complete)")
		return nil
	}
	fmt.Fprintf(w, "\nCheck: %d acknowledged keys and %d acknowledged ciphertexts, on each of %s\n", c.Keys, c.Ciphertexts, strings.Join(c.Nodes, ", "))
	for _, f := range c.Failures {
		fmt.Fprintf(w, "  %s\n", f)
	}
	verdict := "nothing lost"
	if rep.Lost > 0 {
		verdict = "DATA LOST"
	}
	_, err := fmt.Fprintf(w, "Lost: %d (%s)\n", rep.Lost, verdict)
	return err
}

// fmtMs prints a time for people: 840µs, 12.3ms, 1.52s.
func fmtMs(m Millis) string {
	switch d := m.Duration(); {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(m))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(m))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func optMs(m *Millis) string {
	if m == nil {
		return "-"
	}
	return fmtMs(*m)
}
