package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuMeter reads the CPU time used so far by this process and, when a
// metrics address is known, by the broker (its Prometheus
// process_cpu_seconds_total, which counts in 10 ms ticks).
type cpuMeter struct {
	metricsAddr string
	http        *http.Client
}

type cpuReading struct {
	self   time.Duration
	broker time.Duration
	// brokerOK is false when the broker's figure could not be read.
	brokerOK bool
}

func newCPUMeter(metricsAddr string) *cpuMeter {
	return &cpuMeter{metricsAddr: metricsAddr, http: &http.Client{Timeout: 5 * time.Second}}
}

func (m *cpuMeter) read(ctx context.Context, broker bool) cpuReading {
	var r cpuReading
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if broker && m.metricsAddr != "" {
		if d, err := m.brokerCPU(ctx); err == nil {
			r.broker, r.brokerOK = d, true
		}
	}
	return r
}

// brokerCPU scrapes process_cpu_seconds_total from the broker's metrics
// address.
func (m *cpuMeter) brokerCPU(ctx context.Context) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			s, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(s * float64(time.Second)), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no process_cpu_seconds_total at %s", m.metricsAddr)
}

// cpuTotals adds up the CPU a side used over its windows.
type cpuTotals struct {
	self, broker time.Duration
	brokerOK     bool
	windows      int
}

func (t *cpuTotals) add(before, after cpuReading) {
	t.self += after.self - before.self
	// The broker's figure counts only if every window could read it.
	t.brokerOK = (t.windows == 0 || t.brokerOK) && before.brokerOK && after.brokerOK
	if t.brokerOK {
		t.broker += after.broker - before.broker
	}
	t.windows++
}

// perOp returns microseconds of CPU per successful operation.
func perOp(d time.Duration, ops int) *float64 {
	if ops == 0 {
		return nil
	}
	v := float64(d.Microseconds()) / float64(ops)
	return &v
}
