package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// The preloader loads the enabled keys a node already has, then each key as
// it is created or enabled, so that their first uses find them loaded; it
// stops at the cache's bound without evicting anything.
func TestPreloaderWarmsTheHandleCache(t *testing.T) {
	const cacheSize = 6
	e := &env{t: t, dataDir: t.TempDir(), clock: &clock{}}
	e.tok = hsmtest.NewToken(t)
	p := hsmtest.Open(t, e.tok, hsmtest.WithConfig(func(c *hsm.Config) { c.CacheSize = cacheSize }))
	if err := p.CreateDomainKey(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.preloader = broker.NewPreloader(p, hsmtest.QuietLogger())
	e.start(p)
	ctx := ctxT(t)

	aes := []*pb.KeyMetadata{e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT),
		e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)}
	ecc := e.createKey(pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	disabled := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	if _, err := e.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: disabled.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	p.EvictAll(ctx) // as on a node that has just started: nothing loaded
	if n, _, _ := p.CacheStats(); n != 0 {
		t.Fatalf("%d keys loaded after EvictAll", n)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.preloader.Run(runCtx, e.node.State(), nil) }()
	t.Cleanup(func() { stop(); <-done })

	waitLoaded := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			n, _, _ := p.CacheStats()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d keys loaded, want %d", what, n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLoaded("the enabled keys at start", 3)

	use := func() {
		t.Helper()
		for _, k := range aes {
			if _, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: ecc.GetKeyId(), Message: []byte("m"),
			SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256}); err != nil {
			t.Fatal(err)
		}
	}
	_, hits0, misses0 := p.CacheStats()
	use()
	if _, hits, misses := p.CacheStats(); hits-hits0 != 3 || misses != misses0 {
		t.Fatalf("first uses of preloaded keys: %d hits, %d misses; want 3, 0", hits-hits0, misses-misses0)
	}

	// Enabled again, or created: loaded as the change is applied.
	if _, err := e.keys.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: disabled.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	waitLoaded("after EnableKey", 4)
	e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	waitLoaded("after CreateKey", 5)

	// More keys than the cache holds: it fills up and stops; the keys in
	// use stay loaded.
	for range 3 {
		e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	}
	waitLoaded("beyond the cache's bound", cacheSize)
	time.Sleep(200 * time.Millisecond)
	if n, _, _ := p.CacheStats(); n != cacheSize {
		t.Fatalf("%d keys loaded, more than the cache's %d", n, cacheSize)
	}
	_, hits0, misses0 = p.CacheStats()
	use()
	if _, hits, misses := p.CacheStats(); hits-hits0 != 3 || misses != misses0 {
		t.Fatalf("uses after the cache filled: %d hits, %d misses; want 3, 0", hits-hits0, misses-misses0)
	}
	if got := e.preloader.Loaded(); got != uint64(3+1+1+1) {
		t.Errorf("Loaded() = %d, want 6", got)
	}
}
