package hsm_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
)

// Every PKCS#11 call is timed by function, and failed calls are counted
// by function and CKR code, injected faults included.
func TestCallMetrics(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	encrypts := map[string]string{"function": "C_Encrypt"}
	failures := map[string]string{"function": "C_Encrypt", "ckr": "CKR_DEVICE_ERROR"}
	calls0, errs0 := hsmtest.Gathered(t, "hsmbroker_hsm_call_duration_seconds", encrypts), hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", failures)
	for range 3 {
		if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Add(hsm.FaultRule{Call: "C_Encrypt", Code: hsm.CKRDeviceError, Times: 1})
	// The broken session is evicted and the call retried once: it succeeds.
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if d := hsmtest.Gathered(t, "hsmbroker_hsm_call_duration_seconds", encrypts) - calls0; d < 5 {
		t.Errorf("C_Encrypt timed %v times, want at least 5 (3 + a failed call + its retry)", d)
	}
	if d := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", failures) - errs0; d < 1 {
		t.Errorf("C_Encrypt CKR_DEVICE_ERROR counted %v times, want at least 1", d)
	}
}

// PoolStats counts a session held by a running call as in use, and gives
// it back as idle.
func TestPoolStats(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) { c.PoolSize = 3 }))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	if _, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if s := p.PoolStats(); s.Size != 3 || s.InUse != 0 || s.Idle < 1 {
		t.Fatalf("idle pool: %+v, want size 3, none in use, one or more idle", s)
	}
	f.Add(hsm.FaultRule{Call: "C_Sign", Stall: 500 * time.Millisecond, Times: 1})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = p.MAC(ctx, k, "HMAC_SHA_256", []byte("slow"))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for p.PoolStats().InUse != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stalled call: %+v, want one session in use", p.PoolStats())
		}
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	if s := p.PoolStats(); s.InUse != 0 || s.Idle < 1 {
		t.Fatalf("after the call: %+v, want none in use", s)
	}
	if p.CacheCapacity() != 4096 {
		t.Errorf("CacheCapacity() = %d, want the default 4096", p.CacheCapacity())
	}
}

// A use of a key counts once in the handle cache statistics: a miss when
// it had to be unwrapped, a hit when it was loaded.
func TestCacheStatsCountUses(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	_, hits0, misses0 := p.CacheStats()
	for range 3 {
		if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	size, hits, misses := p.CacheStats()
	if size != 1 || hits-hits0 != 2 || misses-misses0 != 1 {
		t.Fatalf("three uses of one key: %d entries, %d hits, %d misses; want 1, 2, 1", size, hits-hits0, misses-misses0)
	}
}

// Preload loads a key once, counts no use, never evicts, and the key's
// first use is then a hit.
func TestPreload(t *testing.T) {
	p := hsmtest.NewPartition(t, hsmtest.WithConfig(func(c *hsm.Config) { c.CacheSize = 2 }))
	ctx := ctxT(t)
	a, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	b, _ := newKey(t, p, keys.SpecECCNISTP256, keys.UsageSignVerify)
	c, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	for i, want := range []bool{true, false} {
		loaded, err := p.Preload(ctx, a)
		if err != nil || loaded != want {
			t.Fatalf("Preload #%d = %v, %v; want %v", i+1, loaded, err, want)
		}
	}
	if loaded, err := p.Preload(ctx, b); err != nil || !loaded {
		t.Fatalf("Preload of a second key = %v, %v", loaded, err)
	}
	// The cache is full: a preload does not displace a loaded key.
	if loaded, err := p.Preload(ctx, c); err != nil || loaded {
		t.Fatalf("Preload into a full cache = %v, %v; want false, nil", loaded, err)
	}
	size, hits, misses := p.CacheStats()
	if size != 2 || hits != 0 || misses != 0 {
		t.Fatalf("after preloads: %d entries, %d hits, %d misses; want 2, 0, 0", size, hits, misses)
	}
	if _, err := p.EncryptGCM(ctx, a, make([]byte, hsm.GCMIVSize), []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SignDigest(ctx, b, keys.SigningECDSASHA256, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, hits, misses := p.CacheStats(); hits != 2 || misses != 0 {
		t.Fatalf("first uses of preloaded keys: %d hits, %d misses; want 2, 0", hits, misses)
	}
	// A blob that does not unwrap is an error, and loads nothing.
	bad := c
	bad.ID, bad.Wrapped = keys.NewKeyID(), append([]byte(nil), c.Wrapped...)
	bad.Wrapped[len(bad.Wrapped)-1] ^= 1
	p.Evict(ctx, a.ID)
	if loaded, err := p.Preload(ctx, bad); err == nil || loaded {
		t.Fatalf("Preload of a damaged blob = %v, %v; want an error", loaded, err)
	}
}

// An operation's calls are made in one crossing into C, but a failure
// still names the call that failed, in the error and in the metrics, and
// leaves the session usable for the next operation.
func TestOneCrossingNamesTheFailedCall(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	c := newCrossingCalls(t, p)
	ops := []struct {
		call string
		run  func() error
	}{
		{"C_GenerateRandom", c.seal},
		{"C_EncryptInit", c.encrypt},
		{"C_Encrypt", c.encrypt},
		{"C_DecryptInit", c.decrypt},
		{"C_Decrypt", c.decrypt},
		{"C_SignInit", c.sign},
		{"C_Sign", c.mac},
	}
	for _, op := range ops {
		t.Run(op.call, func(t *testing.T) {
			failures := map[string]string{"function": op.call, "ckr": "CKR_FUNCTION_FAILED"}
			before := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", failures)
			f.Add(hsm.FaultRule{Call: op.call, Code: 0x6 /* CKR_FUNCTION_FAILED */, Times: 1})
			err := op.run()
			if err == nil {
				t.Fatal("the injected failure was not reported")
			}
			if !strings.HasPrefix(op.call, "C_Decrypt") && (!strings.Contains(err.Error(), "hsm: "+op.call+": ") || !strings.Contains(err.Error(), "CKR_FUNCTION_FAILED")) {
				t.Errorf("error %q does not name %s", err, op.call)
			}
			if d := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", failures) - before; d != 1 {
				t.Errorf("%s CKR_FUNCTION_FAILED counted %v times, want 1", op.call, d)
			}
			if err := op.run(); err != nil {
				t.Errorf("the next call: %v", err)
			}
		})
	}

	// Failures from the token itself are named by the step that failed
	// inside the crossing: a tag that does not authenticate fails
	// C_Decrypt (SoftHSM says CKR_GENERAL_ERROR), and a handle lost with
	// its anchor session fails C_SignInit before the key is reloaded.
	tagFailures := map[string]string{"function": "C_Decrypt", "ckr": "CKR_GENERAL_ERROR"}
	before := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", tagFailures)
	tampered := append([]byte(nil), c.sealed...)
	tampered[0] ^= 1
	if _, err := p.DecryptGCM(ctx, c.aes, c.iv, tampered, nil); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("tampered ciphertext: %v, want ErrDecrypt", err)
	}
	if d := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", tagFailures) - before; d != 1 {
		t.Errorf("C_Decrypt CKR_GENERAL_ERROR counted %v times, want 1", d)
	}
	initFailures := map[string]string{"function": "C_SignInit"}
	before = hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", initFailures)
	p.KillAnchor()
	if err := c.sign(); err != nil {
		t.Fatalf("sign after anchor loss: %v", err)
	}
	if d := hsmtest.Gathered(t, "hsmbroker_hsm_call_errors_total", initFailures) - before; d != 1 {
		t.Errorf("C_SignInit failures counted %v times after the anchor loss, want 1", d)
	}
}

// A buffer the token finds too small is reported, and the operation it
// left active is finished inside the crossing: the same session (the pool
// holds one) serves the next call.
func TestOneCrossingBufferTooSmall(t *testing.T) {
	p := hsmtest.NewPartition(t, hsmtest.WithConfig(func(c *hsm.Config) { c.PoolSize = 1 }))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	pt := []byte("thirty-two bytes of plaintext...")
	_, err := p.EncryptGCMInto(ctx, k, iv, pt, len(pt))
	if err == nil || !strings.Contains(err.Error(), "C_Encrypt: ") || !strings.Contains(err.Error(), "CKR_BUFFER_TOO_SMALL") {
		t.Fatalf("too small a buffer: %v, want C_Encrypt CKR_BUFFER_TOO_SMALL", err)
	}
	sealed, err := p.EncryptGCM(ctx, k, iv, pt, nil)
	if err != nil {
		t.Fatalf("the next call on the same session: %v", err)
	}
	if got, err := p.DecryptGCM(ctx, k, iv, sealed, nil); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("round trip after the failure: %q, %v", got, err)
	}
}
