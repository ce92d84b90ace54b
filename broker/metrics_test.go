package broker_test

import (
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// nodeSeries gathers one node's NodeMetrics into name{label=value} -> value.
func nodeSeries(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			out[name] = seriesValue(m)
		}
	}
	return out
}

func seriesValue(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// Each node's collector reports its own Raft role and progress, readiness,
// session pool and handle cache.
func TestNodeMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	conn := c.Dial(0, "admin")
	k, err := pb.NewKeyServiceClient(conn).CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := pb.NewCryptoServiceClient(conn).Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.Leader(t)
	c.WaitConverged(t)
	for _, nd := range c.Nodes {
		series := nodeSeries(t, nd.Service.NodeMetrics())
		// s reads a series that must exist: a missing one is an error, not
		// a zero that passes an == 0 check.
		s := func(name string) float64 {
			t.Helper()
			v, ok := series[name]
			if !ok {
				t.Errorf("%s: no series %s", nd.ID, name)
			}
			return v
		}
		isLeader := nd == leader
		wantRole := map[bool]float64{true: 1, false: 0}
		checks := map[string]bool{
			"hsmbroker_raft_state{state=Leader}":          s("hsmbroker_raft_state{state=Leader}") == wantRole[isLeader],
			"hsmbroker_raft_state{state=Follower}":        s("hsmbroker_raft_state{state=Follower}") == wantRole[!isLeader],
			"hsmbroker_raft_term":                         s("hsmbroker_raft_term") >= 1,
			"hsmbroker_raft_applied_index":                s("hsmbroker_raft_applied_index") >= 3,
			"hsmbroker_raft_commit_index":                 s("hsmbroker_raft_commit_index") >= s("hsmbroker_raft_applied_index")-1,
			"hsmbroker_raft_servers{suffrage=voter}":      s("hsmbroker_raft_servers{suffrage=voter}") == 3,
			"hsmbroker_raft_leader_known":                 s("hsmbroker_raft_leader_known") == 1,
			"hsmbroker_raft_last_contact_seconds":         s("hsmbroker_raft_last_contact_seconds") < 2 && (!isLeader || s("hsmbroker_raft_last_contact_seconds") == 0),
			"hsmbroker_ready":                             s("hsmbroker_ready") == 1,
			"hsmbroker_hsm_sessions_max":                  s("hsmbroker_hsm_sessions_max") == 8,
			"hsmbroker_hsm_handle_cache_capacity":         s("hsmbroker_hsm_handle_cache_capacity") == 4096,
			"hsmbroker_hsm_handle_cache_hits_total":       nd.Index != 0 || s("hsmbroker_hsm_handle_cache_hits_total") >= 2,
			"hsmbroker_hsm_handle_cache_entries":          nd.Index != 0 || s("hsmbroker_hsm_handle_cache_entries") >= 1,
			"hsmbroker_hsm_handle_cache_misses_total":     nd.Index != 0 || s("hsmbroker_hsm_handle_cache_misses_total") >= 1,
			"hsmbroker_hsm_sessions_in_use, _idle exist":  hasAll(series, "hsmbroker_hsm_sessions_in_use", "hsmbroker_hsm_sessions_idle"),
			"hsmbroker_raft_last_log_index exists":        hasAll(series, "hsmbroker_raft_last_log_index"),
			"hsmbroker_raft_state{state=Candidate} is 0":  s("hsmbroker_raft_state{state=Candidate}") == 0,
			"hsmbroker_raft_servers{suffrage=nonvoter}=0": s("hsmbroker_raft_servers{suffrage=nonvoter}") == 0,
		}
		for what, ok := range checks {
			if !ok {
				t.Errorf("%s (leader %v): %s is off: %v", nd.ID, isLeader, what, series)
			}
		}
	}
}

func hasAll(s map[string]float64, names ...string) bool {
	for _, n := range names {
		if _, ok := s[n]; !ok {
			return false
		}
	}
	return true
}
