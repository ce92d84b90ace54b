package hsm

import (
	"strings"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
)

// PKCS#11 call metrics, on the default Prometheus registry. They are
// process-wide: every partition of the process adds to the same series,
// which in the daemon is its one partition.
var (
	callDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "hsmbroker_hsm_call_duration_seconds",
		Help: "Duration of PKCS#11 calls into the HSM module, by function (C_Sign, C_UnwrapKey, ...), failed calls included.",
		// 10µs (a cached AES-GCM call on a software token) to 10s (the
		// default call deadline).
		Buckets: prometheus.ExponentialBucketsRange(10e-6, 10, 19),
	}, []string{"function"})
	callErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hsmbroker_hsm_call_errors_total",
		Help: "PKCS#11 calls that returned an error, by function and CKR code. SoftHSM reports a failed AES-GCM tag as CKR_GENERAL_ERROR, so C_Decrypt errors include rejected ciphertexts.",
	}, []string{"function", "ckr"})
)

func init() {
	prometheus.MustRegister(callDuration, callErrors)
}

// PoolStats describes a partition's session pool at one instant.
type PoolStats struct {
	// Size is the most sessions the pool lends at once (Config.PoolSize).
	Size int
	// InUse is how many sessions are lent out now, calls abandoned after
	// their deadline and still running in the token included.
	InUse int
	// Idle is how many open sessions wait in the pool for a caller.
	Idle int
}

// PoolStats reports the session pool's use.
func (p *Partition) PoolStats() PoolStats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	return PoolStats{Size: cap(p.sem), InUse: len(p.sem), Idle: idle}
}

// CacheCapacity is the most key handles the handle cache holds
// (Config.CacheSize).
func (p *Partition) CacheCapacity() int { return p.cfg.CacheSize }

// callObserver times the calls of one PKCS#11 function. Observers are
// resolved once per function, so a call costs two clock reads and an
// atomic add on top of the token's work.
type callObserver struct {
	name     string
	duration prometheus.Observer
}

func newCallObserver(name string) callObserver {
	return callObserver{name: name, duration: callDuration.WithLabelValues(name)}
}

func (o callObserver) done(start time.Time, err error) {
	o.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		callErrors.WithLabelValues(o.name, ckrLabel(err)).Inc()
	}
}

// ckrLabel is the CKR_* name of a module error, or "other".
func ckrLabel(err error) string {
	code, ok := ckrOf(err)
	if !ok {
		return "other"
	}
	s := pkcs11.Error(code).Error() // "pkcs11: 0x30: CKR_DEVICE_ERROR"
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
