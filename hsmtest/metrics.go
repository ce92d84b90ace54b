package hsmtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Gathered sums the default registry's series of family name whose labels
// include want: counters by value, histograms by sample count. Every
// broker in a test process registers there, so read it before and after
// what a test measures.
func Gathered(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}
