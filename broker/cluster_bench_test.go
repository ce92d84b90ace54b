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
// throughput at 1 and 64 concurrent clients. The latency paths alternate
// call by call, in a rotating order; the throughput runs alternate 1 s
// windows of 1 and 64 clients.
//
//	go test -run '^$' -bench CreateKey -benchtime 1x ./broker
func BenchmarkCreateKey(b *testing.B) {
	var seq atomic.Int64
	create := func(kc pb.KeyServiceClient) error {
		_, err := kc.CreateKey(context.Background(), &pb.CreateKeyRequest{AliasName: fmt.Sprintf("alias/bench-%d", seq.Add(1))})
		return err
	}
	// p50s makes n calls through each client, one after the other in a
	// rotating order, and returns each client's median.
	p50s := func(n int, kcs ...pb.KeyServiceClient) []time.Duration {
		ds := make([][]time.Duration, len(kcs))
		for i := 0; i < n; i++ {
			for j := range kcs {
				k := (i + j) % len(kcs)
				t0 := time.Now()
				if err := create(kcs[k]); err != nil {
					b.Fatal(err)
				}
				ds[k] = append(ds[k], time.Since(t0))
			}
		}
		out := make([]time.Duration, len(kcs))
		for k := range ds {
			slices.Sort(ds[k])
			out[k] = ds[k][len(ds[k])/2]
		}
		return out
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
	leader, fs := three.Leader(b), three.Followers(b)
	follower := fs[len(fs)-1].Index
	k1 := pb.NewKeyServiceClient(one.Dial(0, "bench"))
	k3 := pb.NewKeyServiceClient(three.Dial(follower, "bench"))
	k3l := pb.NewKeyServiceClient(three.Dial(leader.Index, "bench"))
	b.Run("latency", func(b *testing.B) {
		l := p50s(50*b.N, k1, k3, k3l)
		l1, l3, l3l := l[0], l[1], l[2]
		b.ReportMetric(float64(l1.Microseconds()), "p50-us/1node")
		b.ReportMetric(float64(l3l.Microseconds()), "p50-us/3node-leader")
		b.ReportMetric(float64(l3.Microseconds()), "p50-us/3node-follower")
	})
	b.Run("throughput", func(b *testing.B) {
		var t1, t64 float64
		for range 2 * b.N {
			t1 += throughput(k3, 1, time.Second) / float64(2*b.N)
			t64 += throughput(k3, 64, time.Second) / float64(2*b.N)
		}
		b.ReportMetric(t1, "ops/s@1")
		b.ReportMetric(t64, "ops/s@64")
		b.ReportMetric(t64/t1, "x")
	})
}
