package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/keys"
)

// keyCache shares generated keys between the subtests of one conformance
// run: RSA-4096 generation in SoftHSM takes seconds.
type keyCache struct {
	mu sync.Mutex
	p  *hsm.Partition
	m  map[string]hsm.KeyRef
	g  map[string]hsm.Generated
}

func (c *keyCache) get(t *testing.T, spec keys.Spec, usage keys.Usage) (hsm.KeyRef, hsm.Generated) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	id := string(spec) + "/" + string(usage)
	if k, ok := c.m[id]; ok {
		return k, c.g[id]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, err := c.p.GenerateKey(ctx, spec)
	if err != nil {
		t.Fatalf("generate %s: %v", spec, err)
	}
	k := hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: spec, Usage: usage, Wrapped: g.Wrapped}
	c.m[id], c.g[id] = k, g
	return k, g
}

// TestPartition is the conformance suite every partition configuration must
// pass: plain SoftHSM, SoftHSM under the fault injector with no faults, and
// any production token a deployment wants to qualify. p must hold a domain
// key.
func TestPartition(t *testing.T, p *hsm.Partition) {
	kc := &keyCache{p: p, m: map[string]hsm.KeyRef{}, g: map[string]hsm.Generated{}}
	ctx := context.Background()

	t.Run("Info", func(t *testing.T) {
		info := p.Info()
		if info.Label == "" || info.Serial == "" || len(info.Mechanisms) == 0 {
			t.Fatalf("incomplete token info: %+v", info)
		}
		for _, want := range []string{"CKM_AES_GCM", "CKM_AES_KEY_WRAP_PAD"} {
			if !contains(info.Mechanisms, want) {
				t.Errorf("mechanisms lack %s", want)
			}
		}
		if err := p.Healthy(ctx); err != nil {
			t.Fatalf("Healthy: %v", err)
		}
	})

	t.Run("GenerateEverySpec", func(t *testing.T) {
		for _, spec := range keys.Specs {
			t.Run(string(spec), func(t *testing.T) {
				usage := spec.DefaultUsage()
				if usage == "" {
					usage = keys.UsageSignVerify
				}
				_, g := kc.get(t, spec, usage)
				if len(g.Wrapped) == 0 {
					t.Fatal("empty wrapped blob")
				}
				checkPublicKey(t, spec, g.PublicKey)
			})
		}
	})

	t.Run("WrappedBlobsDiffer", func(t *testing.T) {
		a, err := p.GenerateKey(ctx, keys.SpecSymmetricDefault)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.GenerateKey(ctx, keys.SpecSymmetricDefault)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a.Wrapped, b.Wrapped) {
			t.Fatal("two generated keys have the same wrapped blob")
		}
		if len(a.Wrapped) != 40 {
			t.Fatalf("AES-256 under AES key wrap with padding is 40 bytes, got %d", len(a.Wrapped))
		}
	})

	t.Run("AESGCM", func(t *testing.T) {
		k, _ := kc.get(t, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		iv := randBytes(t, hsm.GCMIVSize)
		aad := []byte("header and context")
		for _, n := range []int{0, 1, 100, 4096, hsm.MaxGCMInput} {
			pt := randBytes(t, n)
			sealed, err := p.EncryptGCM(ctx, k, iv, pt, aad)
			if err != nil {
				t.Fatalf("encrypt %d bytes: %v", n, err)
			}
			if len(sealed) != n+hsm.GCMTagSize {
				t.Fatalf("sealed %d bytes of %d plaintext", len(sealed), n)
			}
			got, err := p.DecryptGCM(ctx, k, iv, sealed, aad)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("decrypt %d bytes: %v (equal=%v)", n, err, bytes.Equal(got, pt))
			}
		}
		sealed, err := p.EncryptGCM(ctx, k, iv, []byte("secret"), aad)
		if err != nil {
			t.Fatal(err)
		}
		tampered := append([]byte(nil), sealed...)
		tampered[0] ^= 1
		badIV := append([]byte(nil), iv...)
		badIV[0] ^= 1
		cases := []struct {
			name     string
			iv, data []byte
			aad      []byte
		}{
			{"wrong AAD", iv, sealed, []byte("other")},
			{"no AAD", iv, sealed, nil},
			{"tampered", iv, tampered, aad},
			{"wrong IV", badIV, sealed, aad},
			{"truncated", iv, sealed[:hsm.GCMTagSize-1], aad},
			{"short IV", iv[:8], sealed, aad},
		}
		for _, c := range cases {
			if _, err := p.DecryptGCM(ctx, k, c.iv, c.data, c.aad); !errors.Is(err, hsm.ErrDecrypt) {
				t.Errorf("%s: got %v, want ErrDecrypt", c.name, err)
			}
		}
		if _, err := p.EncryptGCM(ctx, k, iv, make([]byte, hsm.MaxGCMInput+1), nil); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("oversize plaintext: got %v, want ErrInvalidInput", err)
		}
		if _, err := p.EncryptGCM(ctx, k, iv[:11], []byte("x"), nil); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("short IV: got %v, want ErrInvalidInput", err)
		}
		og, err := p.GenerateKey(ctx, keys.SpecSymmetricDefault)
		if err != nil {
			t.Fatal(err)
		}
		other := hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: keys.SpecSymmetricDefault, Usage: keys.UsageEncryptDecrypt, Wrapped: og.Wrapped}
		if _, err := p.DecryptGCM(ctx, other, iv, sealed, aad); !errors.Is(err, hsm.ErrDecrypt) {
			t.Errorf("other key: got %v, want ErrDecrypt", err)
		}
	})

	t.Run("RSAOAEP", func(t *testing.T) {
		for _, spec := range []keys.Spec{keys.SpecRSA2048, keys.SpecRSA3072, keys.SpecRSA4096} {
			k, g := kc.get(t, spec, keys.UsageEncryptDecrypt)
			pub := parseRSA(t, g.PublicKey)
			for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
				max := keys.RSAOAEPMaxPlaintext(spec.RSABits(), h)
				for _, n := range []int{1, max} {
					msg := randBytes(t, n)
					ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, msg, nil)
					if err != nil {
						t.Fatal(err)
					}
					got, err := p.DecryptOAEP(ctx, k, h, ct)
					if err != nil || !bytes.Equal(got, msg) {
						t.Fatalf("%s %v %d bytes: %v", spec, h, n, err)
					}
				}
				ct, _ := rsa.EncryptOAEP(h.New(), rand.Reader, pub, []byte("x"), []byte("label"))
				if _, err := p.DecryptOAEP(ctx, k, h, ct); !errors.Is(err, hsm.ErrDecrypt) {
					t.Errorf("%s %v with a label: got %v, want ErrDecrypt", spec, h, err)
				}
				junk := randBytes(t, spec.RSABits()/8)
				junk[0] = 0
				if _, err := p.DecryptOAEP(ctx, k, h, junk); !errors.Is(err, hsm.ErrDecrypt) {
					t.Errorf("%s %v random ciphertext: got %v, want ErrDecrypt", spec, h, err)
				}
				if _, err := p.DecryptOAEP(ctx, k, h, junk[:10]); !errors.Is(err, hsm.ErrDecrypt) {
					t.Errorf("%s %v short ciphertext: got %v, want ErrDecrypt", spec, h, err)
				}
			}
			// A ciphertext for SHA-1 does not decrypt as SHA-256.
			ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, []byte("x"), nil)
			if _, err := p.DecryptOAEP(ctx, k, crypto.SHA256, ct); !errors.Is(err, hsm.ErrDecrypt) {
				t.Errorf("%s SHA-1 ciphertext as SHA-256: got %v, want ErrDecrypt", spec, err)
			}
		}
	})

	t.Run("Sign", func(t *testing.T) {
		msg := []byte("the message to sign")
		for _, spec := range []keys.Spec{keys.SpecRSA2048, keys.SpecRSA3072, keys.SpecRSA4096,
			keys.SpecECCNISTP256, keys.SpecECCNISTP384, keys.SpecECCNISTP521} {
			k, g := kc.get(t, spec, keys.UsageSignVerify)
			pk, err := x509.ParsePKIXPublicKey(g.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			for _, alg := range spec.SigningAlgorithms(keys.UsageSignVerify) {
				h := alg.Hash()
				hf := h.New()
				hf.Write(msg)
				digest := hf.Sum(nil)
				sig, err := p.SignDigest(ctx, k, alg, digest)
				if err != nil {
					t.Fatalf("%s %s: %v", spec, alg, err)
				}
				if err := VerifySignature(pk, alg, digest, sig); err != nil {
					t.Errorf("%s %s: Go rejects the HSM's signature: %v", spec, alg, err)
				}
				digest[0] ^= 1
				if VerifySignature(pk, alg, digest, sig) == nil {
					t.Errorf("%s %s: signature verifies for another digest", spec, alg)
				}
			}
		}
		k, _ := kc.get(t, keys.SpecRSA2048, keys.UsageSignVerify)
		if _, err := p.SignDigest(ctx, k, keys.SigningAlgorithm("RSASSA_PSS_SHA_256"), []byte("short")); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("short digest: got %v, want ErrInvalidInput", err)
		}
		d := sha256.Sum256(msg)
		if _, err := p.SignDigest(ctx, k, keys.SigningAlgorithm("ECDSA_SHA_256"), d[:]); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ECDSA with an RSA key: got %v, want ErrInvalidInput", err)
		}
	})

	t.Run("HMAC", func(t *testing.T) {
		msg := []byte("mac me")
		for _, spec := range []keys.Spec{keys.SpecHMAC256, keys.SpecHMAC384, keys.SpecHMAC512} {
			k, _ := kc.get(t, spec, keys.UsageGenerateVerifyMAC)
			for _, alg := range spec.MacAlgorithms() {
				mac, err := p.MAC(ctx, k, alg, msg)
				if err != nil {
					t.Fatalf("%s %s: %v", spec, alg, err)
				}
				if len(mac) != alg.Hash().Size() {
					t.Fatalf("%s: MAC of %d bytes", alg, len(mac))
				}
				again, _ := p.MAC(ctx, k, alg, msg)
				if !bytes.Equal(mac, again) {
					t.Fatalf("%s: MAC not deterministic", alg)
				}
				if ok, err := p.VerifyMAC(ctx, k, alg, msg, mac); err != nil || !ok {
					t.Fatalf("%s: VerifyMAC of own MAC = %v, %v", alg, ok, err)
				}
				mac[0] ^= 1
				if ok, _ := p.VerifyMAC(ctx, k, alg, msg, mac); ok {
					t.Fatalf("%s: VerifyMAC accepts a wrong MAC", alg)
				}
			}
		}
		k, _ := kc.get(t, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
		if _, err := p.MAC(ctx, k, keys.MacAlgorithm("HMAC_SHA_256"), make([]byte, hsm.MaxMACInput+1)); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("oversize MAC input: got %v, want ErrInvalidInput", err)
		}
		aes, _ := kc.get(t, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		if _, err := p.MAC(ctx, aes, keys.MacAlgorithm("HMAC_SHA_256"), msg); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("MAC with an AES key: got %v, want ErrInvalidInput", err)
		}
	})

	t.Run("Random", func(t *testing.T) {
		a, err := p.Random(ctx, 32)
		if err != nil || len(a) != 32 {
			t.Fatalf("Random(32) = %d bytes, %v", len(a), err)
		}
		b, _ := p.Random(ctx, 32)
		if bytes.Equal(a, b) {
			t.Fatal("two random draws are equal")
		}
		for _, n := range []int{0, -1, hsm.MaxRandom + 1} {
			if _, err := p.Random(ctx, n); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Errorf("Random(%d): got %v, want ErrInvalidInput", n, err)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		k, _ := kc.get(t, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 20; j++ {
					iv := make([]byte, hsm.GCMIVSize)
					_, _ = rand.Read(iv)
					pt := []byte(fmt.Sprintf("msg %d", j))
					ct, err := p.EncryptGCM(ctx, k, iv, pt, nil)
					if err == nil {
						var got []byte
						got, err = p.DecryptGCM(ctx, k, iv, ct, nil)
						if err == nil && !bytes.Equal(got, pt) {
							err = errors.New("round trip mismatch")
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// VerifySignature checks an HSM signature with Go's standard library.
func VerifySignature(pub any, alg keys.SigningAlgorithm, digest, sig []byte) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	ok, err := keys.VerifySignature(der, alg, digest, sig)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("signature does not verify")
	}
	return nil
}

func checkPublicKey(t *testing.T, spec keys.Spec, der []byte) {
	t.Helper()
	if !spec.IsAsymmetric() {
		if der != nil {
			t.Fatalf("%s has a public key", spec)
		}
		return
	}
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("%s public key: %v", spec, err)
	}
	switch k := pk.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != spec.RSABits() || k.E != 65537 {
			t.Fatalf("%s: got %d-bit modulus, e=%d", spec, k.N.BitLen(), k.E)
		}
	case *ecdsa.PublicKey:
		want := map[keys.Spec]elliptic.Curve{keys.SpecECCNISTP256: elliptic.P256(), keys.SpecECCNISTP384: elliptic.P384(), keys.SpecECCNISTP521: elliptic.P521()}[spec]
		if k.Curve != want {
			t.Fatalf("%s: curve %s", spec, k.Curve.Params().Name)
		}
	default:
		t.Fatalf("%s: public key type %T", spec, pk)
	}
}

func parseRSA(t *testing.T, der []byte) *rsa.PublicKey {
	t.Helper()
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*rsa.PublicKey)
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
