package hsm_test

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
	"github.com/miekg/pkcs11"
)

// The baseline for the partition benchmarks is crypto11 on the same token
// in the same process. crypto11 insists on being the one that calls
// C_Initialize, so when benchmarks run, benchMain makes the benchmark token
// with raw PKCS#11 calls, finalizes, and lets crypto11 initialize the
// library before anything else in the process touches it; the partition
// then shares the initialized library.
var bench struct {
	tok hsmtest.Token
	c11 *crypto11.Context
}

func benchMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		if err := setupBench(); err != nil {
			fmt.Fprintln(os.Stderr, "benchmark setup:", err)
			os.Exit(1)
		}
	}
	hsmtest.Main(m)
}

func setupBench() error {
	mod, err := hsmtest.Setup()
	if err != nil {
		return err
	}
	tok := hsmtest.Token{Module: mod, Label: "bench", PIN: hsmtest.RandomPIN(), SOPIN: hsmtest.RandomPIN()}
	raw := pkcs11.New(mod)
	if err := raw.Initialize(); err != nil {
		return err
	}
	slots, err := raw.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		return fmt.Errorf("no slots: %v", err)
	}
	if err := raw.InitToken(slots[0], tok.SOPIN, tok.Label); err != nil {
		return err
	}
	slots, _ = raw.GetSlotList(true)
	for _, s := range slots {
		ti, _ := raw.GetTokenInfo(s)
		if ti.Label != tok.Label {
			continue
		}
		sh, err := raw.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		if err := raw.Login(sh, pkcs11.CKU_SO, tok.SOPIN); err != nil {
			return err
		}
		if err := raw.InitPIN(sh, tok.PIN); err != nil {
			return err
		}
		_ = raw.Logout(sh)
		_ = raw.CloseSession(sh)
	}
	if err := raw.Finalize(); err != nil {
		return err
	}
	raw.Destroy()
	bench.tok = tok
	bench.c11, err = crypto11.Configure(&crypto11.Config{Path: mod, TokenLabel: tok.Label, Pin: tok.PIN, MaxSessions: 16})
	return err
}

func benchPartition(b *testing.B) *hsm.Partition {
	b.Helper()
	if bench.c11 == nil {
		b.Skip("benchmark setup did not run")
	}
	cfg := bench.tok.Config()
	cfg.PoolSize = 16
	p, err := hsm.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	if ok, _ := p.HasDomainKey(context.Background()); !ok {
		if err := p.CreateDomainKey(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

func benchKey(b *testing.B, p *hsm.Partition, spec keys.Spec, usage keys.Usage) hsm.KeyRef {
	b.Helper()
	g, err := p.GenerateKey(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	return hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: spec, Usage: usage, Wrapped: g.Wrapped}
}

func c11GCM(b *testing.B) cipher.AEAD {
	b.Helper()
	benchPartition(b)
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	k, err := bench.c11.GenerateSecretKey(id, 256, crypto11.CipherAES)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = k.Delete() })
	aead, err := k.NewGCM()
	if err != nil {
		b.Fatal(err)
	}
	return aead
}

// Unwrap-on-miss versus a cached handle: the price of a cold key. The two
// sides alternate call by call (see paired), each on its own key.
//
//	go test -run '^$' -bench LoadAESKey ./broker/hsm
func BenchmarkLoadAESKey(b *testing.B) {
	pt := make([]byte, 32)
	iv := make([]byte, hsm.GCMIVSize)
	p := benchPartition(b)
	cached := benchKey(b, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	cold := benchKey(b, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	ctx := context.Background()
	alternate(b, "cached", func() error {
		_, err := p.EncryptGCM(ctx, cached, iv, pt, nil)
		return err
	}, "unwrap-on-miss", func() error {
		p.Evict(ctx, cold.ID)
		_, err := p.EncryptGCM(ctx, cold, iv, pt, nil)
		return err
	})
}

func p256() elliptic.Curve { return elliptic.P256() }

// paired runs the baseline and the partition call alternately, timing each,
// and reports both medians and their ratio (partition/baseline).
func paired(b *testing.B, baseline, partition func() error) {
	b.Helper()
	alternate(b, "baseline", baseline, "partition", partition)
}

// alternate runs two sides call by call, the one that goes first swapping
// every iteration, times each call, and reports each side's median as
// ns/<name> and their ratio as <nameB>/<nameA>. Alternating within one loop,
// in both orders, keeps a busy or drifting machine (or a cache warmed by the
// call before) from favouring either side, which back-to-back
// sub-benchmarks or a fixed order cannot.
func alternate(b *testing.B, nameA string, a func() error, nameB string, fb func() error) {
	b.Helper()
	var da, db []time.Duration
	timed := func(f func() error) time.Duration {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			da = append(da, timed(a))
			db = append(db, timed(fb))
		} else {
			db = append(db, timed(fb))
			da = append(da, timed(a))
		}
	}
	b.StopTimer()
	ma, mb := median(da), median(db)
	b.ReportMetric(float64(ma.Nanoseconds()), "ns/"+nameA)
	b.ReportMetric(float64(mb.Nanoseconds()), "ns/"+nameB)
	b.ReportMetric(float64(mb)/float64(ma), nameB+"/"+nameA)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkPaired is the partition layer's overhead over crypto11 on the
// same token, in one run: medians of alternating calls.
func BenchmarkPaired(b *testing.B) {
	p := benchPartition(b)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("bench"))
	b.Run("SignRSA2048", func(b *testing.B) {
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		signer, err := bench.c11.GenerateRSAKeyPair(id, 2048)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = signer.Delete() }()
		k := benchKey(b, p, keys.SpecRSA2048, keys.UsageSignVerify)
		paired(b, func() error {
			_, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}, func() error {
			_, err := p.SignDigest(ctx, k, "RSASSA_PKCS1_V1_5_SHA_256", digest[:])
			return err
		})
	})
	b.Run("SignP256", func(b *testing.B) {
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		signer, err := bench.c11.GenerateECDSAKeyPair(id, p256())
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = signer.Delete() }()
		k := benchKey(b, p, keys.SpecECCNISTP256, keys.UsageSignVerify)
		paired(b, func() error {
			_, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}, func() error {
			_, err := p.SignDigest(ctx, k, "ECDSA_SHA_256", digest[:])
			return err
		})
	})
	pt, aad, iv := make([]byte, 4096), make([]byte, 64), make([]byte, hsm.GCMIVSize)
	b.Run("EncryptAESGCM4K", func(b *testing.B) {
		aead := c11GCM(b)
		k := benchKey(b, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		paired(b, func() error {
			_ = aead.Seal(nil, iv, pt, aad)
			return nil
		}, func() error {
			_, err := p.EncryptGCM(ctx, k, iv, pt, aad)
			return err
		})
	})
	b.Run("DataKey", func(b *testing.B) {
		// A data key: 32 bytes from the token's RNG, sealed under the key.
		aead := c11GCM(b)
		rng, err := bench.c11.NewRandomReader()
		if err != nil {
			b.Fatal(err)
		}
		k := benchKey(b, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		paired(b, func() error {
			dk := make([]byte, 32)
			if _, err := io.ReadFull(rng, dk); err != nil {
				return err
			}
			_ = aead.Seal(nil, iv, dk, aad)
			return nil
		}, func() error {
			_, _, err := p.SealRandomGCM(ctx, k, 32, iv, aad)
			return err
		})
	})
	b.Run("DecryptAESGCM4K", func(b *testing.B) {
		aead := c11GCM(b)
		k := benchKey(b, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		ct1 := aead.Seal(nil, iv, pt, aad)
		ct2, err := p.EncryptGCM(ctx, k, iv, pt, aad)
		if err != nil {
			b.Fatal(err)
		}
		paired(b, func() error {
			_, err := aead.Open(nil, iv, ct1, aad)
			return err
		}, func() error {
			_, err := p.DecryptGCM(ctx, k, iv, ct2, aad)
			return err
		})
	})
}

// BenchmarkLoadedKeyMemory loads many keys into one partition's handle
// cache with Preload and reports the time per load and the process's
// resident set per loaded key: SoftHSM keeps session objects in the
// process, so this is what a cache that holds every key costs it. Run each
// kind once, in a process of its own (memory freed by one is reused by the
// next): go test -run '^$' -bench LoadedKeyMemory/AES-256 -benchtime 1x ./broker/hsm
func BenchmarkLoadedKeyMemory(b *testing.B) {
	for _, tc := range []struct {
		name  string
		spec  keys.Spec
		usage keys.Usage
		n     int
	}{
		{"AES-256", keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt, 20000},
		{"P-256", keys.SpecECCNISTP256, keys.UsageSignVerify, 5000},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				p, err := hsm.Open(func() hsm.Config { c := bench.tok.Config(); c.CacheSize = tc.n; return c }())
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				if ok, _ := p.HasDomainKey(ctx); !ok {
					if err := p.CreateDomainKey(ctx); err != nil {
						b.Fatal(err)
					}
				}
				g, err := p.GenerateKey(ctx, tc.spec)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				before := residentKB(b)
				t0 := time.Now()
				for range tc.n {
					// One blob under many ids: each id is its own loaded object.
					ref := hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: tc.spec, Usage: tc.usage, Wrapped: g.Wrapped}
					if loaded, err := p.Preload(ctx, ref); err != nil || !loaded {
						b.Fatalf("preload: %v, %v", loaded, err)
					}
				}
				took := time.Since(t0)
				runtime.GC()
				grew := residentKB(b) - before
				b.ReportMetric(float64(took.Microseconds())/float64(tc.n), "us/load")
				b.ReportMetric(float64(grew)/float64(tc.n), "KB-resident/key")
				_ = p.Close()
			}
		})
	}
}

// residentKB reads this process's resident set size from /proc.
func residentKB(b *testing.B) int {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
