package drill

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Plot geometry, in SVG user units.
const (
	plotW      = 1000.0
	plotLeft   = 70.0
	plotRight  = 70.0
	plotTop    = 60.0
	latH       = 260.0 // latency panel
	gapH       = 40.0
	loadH      = 140.0 // throughput and errors panel
	plotBottom = 70.0
	plotH      = plotTop + latH + gapH + loadH + plotBottom
)

// bucket is one slice of time on the plot.
type bucket struct {
	ops, errs     int
	p50, p99, max time.Duration
}

// WriteSVG draws the drill: latency (p50, p99 and maximum of the operations
// answered in each time slice, log scale), throughput and client-visible errors
// over time, with the fault windows shaded. It is a self-contained SVG
// document.
func (rep *Report) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	end := rep.Duration.Duration()
	if end <= 0 {
		end = time.Second
	}
	step := bucketStep(end)
	n := int(end/step) + 1
	lats := make([][]time.Duration, n)
	bs := make([]bucket, n)
	for _, s := range rep.samples {
		i := min(int(s.At/step), n-1)
		bs[i].ops++
		if !s.OK() {
			bs[i].errs++
		}
		lats[i] = append(lats[i], s.Latency)
	}
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	maxOps, maxErrs := 0.0, 0.0
	for i := range bs {
		if len(lats[i]) == 0 {
			continue
		}
		slices.Sort(lats[i])
		bs[i].p50, bs[i].p99, bs[i].max = Percentile(lats[i], 0.5), Percentile(lats[i], 0.99), lats[i][len(lats[i])-1]
		lo, hi = min(lo, bs[i].p50), max(hi, bs[i].max)
		maxOps = max(maxOps, float64(bs[i].ops)/step.Seconds())
		maxErrs = max(maxErrs, float64(bs[i].errs)/step.Seconds())
	}
	if hi == 0 {
		lo, hi = time.Millisecond, 10*time.Millisecond
	}
	// Decades of milliseconds that hold every point.
	decLo := math.Floor(math.Log10(max(float64(ms(lo)), 0.01)))
	decHi := math.Ceil(math.Log10(max(float64(ms(hi)), 0.02)))
	if decHi <= decLo {
		decHi = decLo + 1
	}
	innerW := plotW - plotLeft - plotRight
	x := func(d time.Duration) float64 { return plotLeft + innerW*float64(d)/float64(end) }
	yLat := func(d time.Duration) float64 {
		v := math.Log10(max(float64(ms(d)), math.Pow(10, decLo)))
		return plotTop + latH*(1-(v-decLo)/(decHi-decLo))
	}
	loadTop := plotTop + latH + gapH
	opsScale := niceCeil(maxOps)
	errScale := niceCeil(max(maxErrs, 1))
	yOps := func(v float64) float64 { return loadTop + loadH*(1-v/opsScale) }
	yErr := func(v float64) float64 { return loadTop + loadH*(1-v/errScale) }

	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n",
		plotW, plotH, plotW, plotH)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	title := map[string]string{string(ModeTransfer): "leadership transfer", string(ModeKill): "leader killed",
		string(ModeHSMLoss): "HSM loss"}[rep.Mode]
	p(`<text x="%.0f" y="24" font-size="16" font-weight="bold">hsmctl drill: %s, %d round(s), %d clients, nodes %s</text>`+"\n",
		plotLeft, esc(title), len(rep.Rounds), rep.Clients, esc(strings.Join(rep.Nodes, ", ")))
	p(`<text x="%.0f" y="42" fill="#555">latency of the client operations answered in each %s (SDK retries included); shaded: fault windows; lost after the drill: %d</text>`+"\n",
		plotLeft, step, rep.Lost)

	// Fault windows across both panels.
	for _, rd := range rep.Rounds {
		if rd.FaultEnd <= rd.FaultStart {
			continue
		}
		x0, x1 := x(rd.FaultStart.Duration()), x(rd.FaultEnd.Duration())
		p(`<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="#f4a6a6" fill-opacity="0.35"/>`+"\n",
			x0, plotTop, math.Max(x1-x0, 1), loadTop+loadH-plotTop)
		label := fmt.Sprintf("R%d %s", rd.Round, rd.Node)
		if rd.NewLeader != "" {
			label += " → " + rd.NewLeader
		}
		p(`<text x="%.1f" y="%.0f" fill="#a33" font-size="11">%s</text>`+"\n", x0+2, plotTop+latH-6, esc(label))
	}

	// Latency panel: decade grid, then the two lines.
	p(`<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", plotLeft, plotTop, innerW, latH)
	for d := decLo; d <= decHi; d++ {
		y := plotTop + latH*(1-(d-decLo)/(decHi-decLo))
		p(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", plotLeft, plotLeft+innerW, y, y)
		p(`<text x="%.0f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", plotLeft-6, y+4, decadeLabel(d))
	}
	p(`<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle" fill="#333">latency (log scale)</text>`+"\n", plotTop+latH/2)
	line := func(get func(bucket) time.Duration, color, dash string) {
		var pts []string
		for i, b := range bs {
			if b.ops == 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(time.Duration(i)*step+step/2), yLat(get(b))))
		}
		if len(pts) > 0 {
			p(`<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		}
	}
	line(func(b bucket) time.Duration { return b.max }, "#999", ` stroke-dasharray="3 2"`)
	line(func(b bucket) time.Duration { return b.p99 }, "#e07b00", "")
	line(func(b bucket) time.Duration { return b.p50 }, "#1f5fbf", "")
	p(`<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#999" stroke-width="2" stroke-dasharray="3 2"/><text x="%.0f" y="%.0f">max</text>`+"\n",
		plotLeft+innerW-180, plotLeft+innerW-160, plotTop+14, plotTop+14, plotLeft+innerW-155, plotTop+18)
	p(`<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#e07b00" stroke-width="2"/><text x="%.0f" y="%.0f">p99</text>`+"\n",
		plotLeft+innerW-120, plotLeft+innerW-100, plotTop+14, plotTop+14, plotLeft+innerW-95, plotTop+18)
	p(`<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="#1f5fbf" stroke-width="2"/><text x="%.0f" y="%.0f">p50</text>`+"\n",
		plotLeft+innerW-60, plotLeft+innerW-40, plotTop+14, plotTop+14, plotLeft+innerW-35, plotTop+18)

	// Load panel: throughput (left axis), errors (bars, right axis).
	p(`<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", plotLeft, loadTop, innerW, loadH)
	for _, f := range []float64{0, 0.5, 1} {
		y := loadTop + loadH*(1-f)
		p(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", plotLeft, plotLeft+innerW, y, y)
		p(`<text x="%.0f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", plotLeft-6, y+4, trimFloat(opsScale*f))
		p(`<text x="%.0f" y="%.1f" fill="#c00">%s</text>`+"\n", plotLeft+innerW+6, y+4, trimFloat(errScale*f))
	}
	p(`<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle" fill="#333">ops/s</text>`+"\n", loadTop+loadH/2)
	p(`<text transform="translate(%.0f %.0f) rotate(90)" text-anchor="middle" fill="#c00">errors/s</text>`+"\n", plotW-18, loadTop+loadH/2)
	bw2 := max(innerW*float64(step)/float64(end)-1, 1)
	for i, b := range bs {
		if b.errs == 0 {
			continue
		}
		v := float64(b.errs) / step.Seconds()
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#c00"/>`+"\n", x(time.Duration(i)*step), yErr(v), bw2, loadTop+loadH-yErr(v))
	}
	var pts []string
	for i, b := range bs {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(time.Duration(i)*step+step/2), yOps(float64(b.ops)/step.Seconds())))
	}
	p(`<polyline fill="none" stroke="#444" stroke-width="1.2" points="%s"/>`+"\n", strings.Join(pts, " "))

	// Time axis.
	tick := niceCeil(end.Seconds() / 10)
	for t := 0.0; t <= end.Seconds()+1e-9; t += tick {
		xx := x(time.Duration(t * float64(time.Second)))
		p(`<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="#999"/>`+"\n", xx, xx, loadTop+loadH, loadTop+loadH+5)
		p(`<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%ss</text>`+"\n", xx, loadTop+loadH+19, trimFloat(t))
	}
	p(`<text x="%.0f" y="%.0f" text-anchor="middle" fill="#333">seconds since the load started</text>`+"\n", plotLeft+innerW/2, loadTop+loadH+40)
	p("</svg>\n")
	return bw.Flush()
}

// bucketStep picks a time slice giving 100 to 400 slices.
func bucketStep(end time.Duration) time.Duration {
	for _, s := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second} {
		if end/s <= 400 {
			return s
		}
	}
	return 10 * time.Second
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func decadeLabel(d float64) string {
	v := math.Pow(10, d)
	switch {
	case v < 1:
		return trimFloat(v*1000) + "µs"
	case v < 1000:
		return trimFloat(v) + "ms"
	default:
		return trimFloat(v/1000) + "s"
	}
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "" || s == "-0" {
		return "0"
	}
	return s
}

func esc(s string) string { return html.EscapeString(s) }
