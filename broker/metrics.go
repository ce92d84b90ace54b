package broker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Request metrics, on the default Prometheus registry. Like the HSM call
// metrics of broker/hsm they are process-wide; the daemon runs one Service.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hsmbroker_requests_total",
		Help: "gRPC requests answered, by service, method, gRPC code and AWS KMS exception name (empty on success). Requests refused before the handler (not ready, unauthenticated) count too.",
	}, []string{"service", "method", "code", "exception"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "hsmbroker_request_duration_seconds",
		Help: "Time from a gRPC request's arrival to its answer (for a stream, its end), by service and method, failures included.",
		// 50µs to 30s: a cached AES-GCM call to a forwarded write that waits
		// out an election.
		Buckets: prometheus.ExponentialBucketsRange(50e-6, 30, 21),
	}, []string{"service", "method"})
	requestsInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hsmbroker_requests_in_flight",
		Help: "gRPC requests being handled now.",
	})
)

func init() {
	prometheus.MustRegister(requestsTotal, requestDuration, requestsInFlight)
}

// metricsInterceptor counts and times every unary call. It is the outermost
// interceptor, so it sees the final status, refusals included.
func (s *Service) metricsInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	obs := observeRequest(info.FullMethod)
	resp, err := handler(ctx, req)
	obs.done(err)
	return resp, err
}

// metricsStreamInterceptor counts and times every streaming call, from its
// start to its end, like metricsInterceptor. gRPC health (Watch) and
// reflection streams are left out: they stay open as long as their client
// wants, and would hold up the in-flight gauge and fill the slowest
// latency bucket.
func (s *Service) metricsStreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isHealthOrReflection(info.FullMethod) {
		return handler(srv, ss)
	}
	obs := observeRequest(info.FullMethod)
	err := handler(srv, ss)
	obs.done(err)
	return err
}

// methodMetrics are the series of one method that every call of it
// updates, looked up once rather than by label values on every call.
type methodMetrics struct {
	service, method string
	duration        prometheus.Observer
	ok              prometheus.Counter
}

// methodSeries holds a *methodMetrics per full method name. Only methods
// the server serves reach the interceptors (the tap refuses others), so
// it stays small.
var methodSeries sync.Map

func seriesOf(fullMethod string) *methodMetrics {
	if m, ok := methodSeries.Load(fullMethod); ok {
		return m.(*methodMetrics)
	}
	service, method := splitMethod(fullMethod)
	m := &methodMetrics{service: service, method: method,
		duration: requestDuration.WithLabelValues(service, method),
		ok:       requestsTotal.WithLabelValues(service, method, codes.OK.String(), "")}
	actual, _ := methodSeries.LoadOrStore(fullMethod, m)
	return actual.(*methodMetrics)
}

// requestEnd is a request being observed: its start and its method's
// series.
type requestEnd struct {
	start time.Time
	m     *methodMetrics
}

// observeRequest counts a request in flight; done records its end with
// the request's final error.
func observeRequest(fullMethod string) requestEnd {
	requestsInFlight.Inc()
	return requestEnd{start: time.Now(), m: seriesOf(fullMethod)}
}

func (r requestEnd) done(err error) {
	requestsInFlight.Dec()
	r.m.duration.Observe(time.Since(r.start).Seconds())
	if err == nil {
		r.m.ok.Inc()
		return
	}
	st := status.Convert(err)
	requestsTotal.WithLabelValues(r.m.service, r.m.method, st.Code().String(), exceptionOf(st)).Inc()
}

// splitMethod turns "/hsmbroker.v1.CryptoService/Encrypt" into
// ("hsmbroker.v1.CryptoService", "Encrypt").
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// exceptionOf is the AWS exception name a status carries, "" for none.
func exceptionOf(st *status.Status) string {
	if st.Code() == 0 {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == ErrorDomain {
			return info.Reason
		}
	}
	return ""
}

// NodeMetrics is a Prometheus collector of one node's state, read at
// scrape time: Raft role, term and indexes, readiness, the HSM session
// pool and the key handle cache. The daemon registers it beside the
// process-wide request and HSM call metrics; a process that runs several
// services (tests) registers each on a registry of its own.
func (s *Service) NodeMetrics() prometheus.Collector { return nodeCollector{s} }

type nodeCollector struct{ s *Service }

var (
	descRaftState = prometheus.NewDesc("hsmbroker_raft_state",
		"1 for this node's current Raft role (Leader, Follower, Candidate, Shutdown), 0 for the others.", []string{"state"}, nil)
	descRaftTerm = prometheus.NewDesc("hsmbroker_raft_term",
		"This node's current Raft term.", nil, nil)
	descRaftCommit = prometheus.NewDesc("hsmbroker_raft_commit_index",
		"Highest Raft log index this node knows to be committed.", nil, nil)
	descRaftApplied = prometheus.NewDesc("hsmbroker_raft_applied_index",
		"Highest Raft log index applied to this node's state.", nil, nil)
	descRaftLast = prometheus.NewDesc("hsmbroker_raft_last_log_index",
		"Last index in this node's Raft log.", nil, nil)
	descRaftContact = prometheus.NewDesc("hsmbroker_raft_last_contact_seconds",
		"Seconds since this follower last heard from the leader; 0 on the leader and before any contact.", nil, nil)
	descRaftLeader = prometheus.NewDesc("hsmbroker_raft_leader_known",
		"1 when this node knows a Raft leader, itself included.", nil, nil)
	descRaftPeers = prometheus.NewDesc("hsmbroker_raft_servers",
		"Servers in the Raft configuration, by suffrage.", []string{"suffrage"}, nil)
	descReady = prometheus.NewDesc("hsmbroker_ready",
		"1 when this node serves key and crypto calls (the verdict of gRPC health and /readyz at the last health check).", nil, nil)
	descPoolSize = prometheus.NewDesc("hsmbroker_hsm_sessions_max",
		"Size of the HSM session pool.", nil, nil)
	descPoolInUse = prometheus.NewDesc("hsmbroker_hsm_sessions_in_use",
		"HSM sessions lent to calls now, calls abandoned after their deadline included.", nil, nil)
	descPoolIdle = prometheus.NewDesc("hsmbroker_hsm_sessions_idle",
		"Open HSM sessions waiting in the pool.", nil, nil)
	descCacheEntries = prometheus.NewDesc("hsmbroker_hsm_handle_cache_entries",
		"Key objects loaded in the HSM (entries of the handle cache).", nil, nil)
	descCacheCapacity = prometheus.NewDesc("hsmbroker_hsm_handle_cache_capacity",
		"Bound of the handle cache.", nil, nil)
	descCacheHits = prometheus.NewDesc("hsmbroker_hsm_handle_cache_hits_total",
		"Key uses served by an already loaded key object.", nil, nil)
	descCacheMisses = prometheus.NewDesc("hsmbroker_hsm_handle_cache_misses_total",
		"Key uses that had to unwrap the key into the HSM first.", nil, nil)
)

var raftStates = []string{"Leader", "Follower", "Candidate", "Shutdown"}

func (nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftCommit, descRaftApplied, descRaftLast,
		descRaftContact, descRaftLeader, descRaftPeers, descReady, descPoolSize, descPoolInUse, descPoolIdle,
		descCacheEntries, descCacheCapacity, descCacheHits, descCacheMisses} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := c.s.node.Stats()
	for _, r := range raftStates {
		gauge(descRaftState, b2f(st.Role == r), r)
	}
	gauge(descRaftTerm, float64(st.Term))
	gauge(descRaftCommit, float64(st.CommitIndex))
	gauge(descRaftApplied, float64(st.AppliedIndex))
	gauge(descRaftLast, float64(st.LastLogIndex))
	contact := 0.0
	if st.Role != "Leader" && !st.LastContact.IsZero() {
		contact = time.Since(st.LastContact).Seconds()
	}
	gauge(descRaftContact, contact)
	gauge(descRaftLeader, b2f(st.LeaderID != ""))
	voters, nonVoters := 0, 0
	for _, sv := range st.Servers {
		if sv.Voter {
			voters++
		} else {
			nonVoters++
		}
	}
	gauge(descRaftPeers, float64(voters), "voter")
	gauge(descRaftPeers, float64(nonVoters), "nonvoter")
	ready, _ := c.s.Healthy()
	gauge(descReady, b2f(ready))

	ps := c.s.hsm.PoolStats()
	gauge(descPoolSize, float64(ps.Size))
	gauge(descPoolInUse, float64(ps.InUse))
	gauge(descPoolIdle, float64(ps.Idle))
	size, hits, misses := c.s.hsm.CacheStats()
	gauge(descCacheEntries, float64(size))
	gauge(descCacheCapacity, float64(c.s.hsm.CacheCapacity()))
	ch <- prometheus.MustNewConstMetric(descCacheHits, prometheus.CounterValue, float64(hits))
	ch <- prometheus.MustNewConstMetric(descCacheMisses, prometheus.CounterValue, float64(misses))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
