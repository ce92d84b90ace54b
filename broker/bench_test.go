package broker_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// The broker's overhead over the partition layer it wraps: the same
// operation on the same key and token, once through gRPC on loopback (the
// full service: interceptor, validation, state lookup, blob format) and
// once as the direct partition call the service makes, at 1 and 16
// concurrent clients. docs/BENCHMARKS.md reports the ratios.

type benchOp struct {
	name   string
	spec   pb.KeySpec
	usage  pb.KeyUsage
	grpc   func(ctx context.Context, e *env, keyID string, blob []byte) error
	direct func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, blob []byte) error
	blob   func(ctx context.Context, e *env, keyID string) []byte
}

var plaintext4K = make([]byte, 4096)

func benchOps() []benchOp {
	digest := sha256.Sum256([]byte("bench"))
	return []benchOp{
		{name: "Encrypt4K", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: plaintext4K})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				iv := make([]byte, hsm.GCMIVSize)
				_, _ = rand.Read(iv)
				_, err := p.EncryptGCM(ctx, ref, iv, plaintext4K, iv)
				return err
			}},
		{name: "Decrypt4K", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			blob: func(ctx context.Context, e *env, id string) []byte {
				r, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: plaintext4K})
				if err != nil {
					panic(err)
				}
				return r.GetCiphertextBlob()
			},
			grpc: func(ctx context.Context, e *env, _ string, blob []byte) error {
				_, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, blob []byte) error {
				c, err := keys.ParseCiphertext(blob)
				if err != nil {
					return err
				}
				h, _ := c.Header()
				_, err = p.DecryptGCM(ctx, ref, c.IV, c.Sealed, keys.AAD(h, nil))
				return err
			}},
		{name: "GenerateDataKey", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				dk, err := p.Random(ctx, 32)
				if err != nil {
					return err
				}
				iv := make([]byte, hsm.GCMIVSize)
				_, _ = rand.Read(iv)
				_, err = p.EncryptGCM(ctx, ref, iv, dk, iv)
				return err
			}},
		{name: "SignRSA2048", spec: pb.KeySpec_KEY_SPEC_RSA_2048, usage: pb.KeyUsage_KEY_USAGE_SIGN_VERIFY,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
					SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				_, err := p.SignDigest(ctx, ref, keys.SigningRSASSAPKCS1V15SHA256, digest[:])
				return err
			}},
		{name: "SignP256", spec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
					SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				_, err := p.SignDigest(ctx, ref, keys.SigningECDSASHA256, digest[:])
				return err
			}},
	}
}

// interleaved measures throughput of two sides at the given concurrency in
// alternating windows (so a busy or drifting machine does not favour either
// side) and returns operations per second of each.
func interleaved(b *testing.B, clients int, windows int, window time.Duration, a, c func() error) (float64, float64) {
	b.Helper()
	var opsA, opsC int64
	run := func(op func() error) int64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(window)
		for w := 0; w < clients; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					if err := op(); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return n.Load()
	}
	for i := 0; i < windows; i++ {
		opsA += run(a)
		opsC += run(c)
	}
	secs := float64(windows) * window.Seconds()
	return float64(opsA) / secs, float64(opsC) / secs
}

// latencies times n sequential calls of each side, alternating, and
// returns the medians.
func latencies(b *testing.B, n int, a, c func() error) (time.Duration, time.Duration) {
	b.Helper()
	var la, lc []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := a(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := c(); err != nil {
			b.Fatal(err)
		}
		la, lc = append(la, t1.Sub(t0)), append(lc, time.Since(t1))
	}
	slices.Sort(la)
	slices.Sort(lc)
	return la[len(la)/2], lc[len(lc)/2]
}

func BenchmarkServiceVsPartition(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	for _, op := range benchOps() {
		md := e.createKey(op.spec, op.usage)
		k, ok := e.node.State().Key(md.GetKeyId())
		if !ok {
			b.Fatal("key not in state")
		}
		ref := hsm.KeyRef{ID: k.ID, Version: 1, Spec: k.Spec, Usage: k.Usage, Wrapped: k.Versions[0].Wrapped}
		var blob []byte
		if op.blob != nil {
			blob = op.blob(ctx, e, md.GetKeyId())
		}
		direct := func() error { return op.direct(ctx, e.part, ref, blob) }
		viaGRPC := func() error { return op.grpc(ctx, e, md.GetKeyId(), blob) }
		b.Run(op.name, func(b *testing.B) {
			// b.N only scales the number of measurement windows.
			pd, pg := latencies(b, 200*b.N, direct, viaGRPC)
			t1d, t1g := interleaved(b, 1, 4*b.N, 250*time.Millisecond, direct, viaGRPC)
			t16d, t16g := interleaved(b, 16, 4*b.N, 250*time.Millisecond, direct, viaGRPC)
			b.ReportMetric(float64(pd.Microseconds()), "p50-us/partition")
			b.ReportMetric(float64(pg.Microseconds()), "p50-us/grpc")
			b.ReportMetric(t1g/t1d, "ratio@1")
			b.ReportMetric(t16g/t16d, "ratio@16")
			b.ReportMetric(t16g, "ops/s@16/grpc")
		})
	}
}
