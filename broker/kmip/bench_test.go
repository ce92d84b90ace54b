package kmip

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// BenchmarkKMIP measures Get (the TDE clients' hot path: open the sealed
// material in the HSM and hand it out), Encrypt (64 bytes, AES-CBC in the
// HSM) and Register (seal in the HSM and replicate) over real TLS connections, at 1 and 16 clients, each client
// on its own connection. It reports p50 latency and operations per second;
// the ratios between operations are measured in the same run.
//
//	go test -run XXX -bench KMIP -benchtime 2000x ./broker/kmip/
func BenchmarkKMIP(b *testing.B) {
	e := newEnv(b)
	v := version{1, 4}
	setup := e.dial(b, "bench", authz.RoleUser)
	id := ids(setup.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(make([]byte, 32))))[0]
	setup.do(v, opActivate, uid(id))
	get, _ := request(v, op{opGet, []ttlv.Item{uid(id)}}).Encode()
	encrypt, _ := request(v, op{opEncrypt, []ttlv.Item{uid(id), ttlv.Bytes(tagData, make([]byte, 64))}}).Encode()
	reg, _ := request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(make([]byte, 32))}}).Encode()
	for _, tc := range []struct {
		name string
		msg  []byte
	}{{"Get", get}, {"Encrypt", encrypt}, {"Register", reg}} {
		for _, clients := range []int{1, 16} {
			b.Run(tc.name+"/clients="+itoa(clients), func(b *testing.B) {
				conns := make([]*client, clients)
				for i := range conns {
					conns[i] = e.dial(b, "bench", authz.RoleUser)
				}
				lat := make([][]time.Duration, clients)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for i, c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := i; n < b.N; n += clients {
							t0 := time.Now()
							resp, err := c.roundTrip(tc.msg)
							if err != nil {
								b.Error(err)
								return
							}
							bi, _ := resp.Child(tagBatchItem)
							if st, _ := bi.Child(tagResultStatus); st.Int != int64(statusSuccess) {
								b.Errorf("%s failed: %+v", tc.name, bi)
								return
							}
							lat[i] = append(lat[i], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) > 0 {
					b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
