package strictjson

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// encryptBody is an AWS Encrypt request with a 4 KiB plaintext (a 5.5 KiB
// base64 string), the body the AWS endpoint's load spends its check on.
func encryptBody(tb testing.TB) []byte {
	pt := make([]byte, 4096)
	for i := range pt {
		pt[i] = byte(i * 7)
	}
	body, err := json.Marshal(map[string]any{
		"KeyId":               "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"Plaintext":           base64.StdEncoding.EncodeToString(pt),
		"EncryptionContext":   map[string]string{"tenant": "acme", "purpose": "backup", "table": "orders"},
		"EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
		"GrantTokens":         []string{"token-1"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// BenchmarkCheck is Check against the Decoder.Token walk it replaced, on
// an Encrypt body, alternating the two in one run: time and allocations
// per check of each (medians, so that a moment the machine is busy
// elsewhere does not weigh on one side), and their ratio (tokens/bytes:
// how many times longer the old walk takes).
func BenchmarkCheck(b *testing.B) {
	body := encryptBody(b)
	v := &fuzzRequest{}
	if err := Check(body, v); err != nil {
		b.Fatal(err)
	}
	if err := checkTokens(body, v); err != nil {
		b.Fatal(err)
	}
	allocsBytes := testing.AllocsPerRun(100, func() { _ = Check(body, v) })
	allocsTokens := testing.AllocsPerRun(100, func() { _ = checkTokens(body, v) })
	b.ReportAllocs()
	walk := make([]time.Duration, 0, b.N)
	tokens := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		_ = Check(body, v)
		t1 := time.Now()
		_ = checkTokens(body, v)
		t2 := time.Now()
		walk = append(walk, t1.Sub(t0))
		tokens = append(tokens, t2.Sub(t1))
	}
	b.StopTimer()
	mw, mt := median(walk), median(tokens)
	b.ReportMetric(float64(mw.Nanoseconds()), "p50-ns/check")
	b.ReportMetric(float64(mt.Nanoseconds()), "p50-ns/tokens")
	b.ReportMetric(float64(mt)/float64(mw), "tokens/bytes")
	b.ReportMetric(allocsBytes, "allocs/check")
	b.ReportMetric(allocsTokens, "allocs/tokens")
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
