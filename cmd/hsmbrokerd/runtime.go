package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// tuneRuntime sets the Go runtime's defaults for the daemon. Each setting
// applies only when its environment variable is not set, so an operator's
// GOGC or GOMAXPROCS always wins.
func tuneRuntime() {
	tuneGC()
	tuneProcs()
}

// defaultGCPercent is the garbage collector's target for hsmbrokerd when
// GOGC is not set: the heap may grow to 4x what is live (Go's default,
// 100, is 2x) before a collection.
//
// Why: a node's live heap is small (a few MB plus about 0.75 KB per key),
// and every request allocates its decoded request, answer and audit line,
// so at Go's default the collector ran often enough to take about a tenth
// of the CPU of a node under load. Measured with `make bench-peer` (the
// same SDK load against the broker and local-kms, alternating windows),
// 300 cut the broker's CPU per call by 16-22% for Encrypt, Decrypt,
// GenerateDataKey and Sign P-256 (docs/BENCHMARKS.md). The price is
// memory: the heap may reach about twice the default's, 4x the live heap
// instead of 2x (a node holding 100,000 keys has about 85 MB live: up to
// about 340 MB instead of 170 MB). GOGC in the environment overrides it,
// and GOMEMLIMIT still caps the heap.
const defaultGCPercent = 300

func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// defaultProcs is how many threads may run the daemon's Go code at once
// when GOMAXPROCS is not set: half of what Go would choose (the CPUs, or
// the container's CPU limit), at least one.
//
// Why: a request is a few short runs of Go code (decode, authorize,
// audit, answer) around PKCS#11 calls that run in C, on the calling
// thread, for 20 µs to a few ms. Each hand-off between goroutines on the
// way (connection reader, handler, the call's deadline goroutine, writer)
// that finds a second processor idle wakes another thread to look for
// work, which mostly finds none and sleeps again. On the 2-vCPU virtual
// machine of docs/BENCHMARKS.md those wake-ups, the runtime's scheduler
// and the hypervisor's share of each switch were about a third of the
// daemon's CPU. With one processor the Go code runs in turn on one thread
// while the token's C code still runs on others: the daemon's CPU per call
// fell by 20-40% for AES-GCM calls and Decrypt's median latency at one
// client by about a third. The price is throughput where the C code is
// the bottleneck: RSA-2048 signing at 16 clients did about 5-10% fewer
// signatures per second. GOMAXPROCS in the environment overrides it.
func defaultProcs(goDefault int) int {
	return max(1, goDefault/2)
}

func tuneProcs() {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(defaultProcs(runtime.GOMAXPROCS(0)))
	}
}
