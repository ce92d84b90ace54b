package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// CreateKey latency on a 1-node and a 3-node cluster (same mTLS set-up,
// through a follower on the 3-node cluster, the slowest path: forward to
// the leader, commit on a quorum, wait to apply locally), and 3-node
// throughput at 1 and 64 concurrent clients.
func BenchmarkCreateKey(b *testing.B) {
	var seq atomic.Int64
	create := func(kc pb.KeyServiceClient) error {
		_, err := kc.CreateKey(context.Background(), &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/bench-%d", seq.Add(1))})
		return err
	}
	p50 := func(kc pb.KeyServiceClient, n int) time.Duration {
		var ds []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if err := create(kc); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	throughput := func(kc pb.KeyServiceClient, clients int, d time.Duration) float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					if err := create(kc); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / d.Seconds()
	}
	one := hsmtest.NewCluster(b, 1)
	three := hsmtest.NewCluster(b, 3)
	leader := three.Leader(b)
	follower := 0
	for i, nd := range three.Nodes {
		if nd != leader {
			follower = i
		}
	}
	k1 := pb.NewKeyServiceClient(one.Dial(0, "bench"))
	k3 := pb.NewKeyServiceClient(three.Dial(follower, "bench"))
	k3l := pb.NewKeyServiceClient(three.Dial(index(three, leader), "bench"))
	b.Run("latency", func(b *testing.B) {
		n := 50 * b.N
		l1, l3, l3l := p50(k1, n), p50(k3, n), p50(k3l, n)
		b.ReportMetric(float64(l1.Microseconds()), "p50-us/1node")
		b.ReportMetric(float64(l3l.Microseconds()), "p50-us/3node-leader")
		b.ReportMetric(float64(l3.Microseconds()), "p50-us/3node-follower")
	})
	b.Run("throughput", func(b *testing.B) {
		d := time.Duration(b.N) * 2 * time.Second
		t1 := throughput(k3, 1, d)
		t64 := throughput(k3, 64, d)
		b.ReportMetric(t1, "ops/s@1")
		b.ReportMetric(t64, "ops/s@64")
		b.ReportMetric(t64/t1, "x")
	})
}
