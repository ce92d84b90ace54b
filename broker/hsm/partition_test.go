package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
)

func TestMain(m *testing.M) { benchMain(m) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newKey(t *testing.T, p *hsm.Partition, spec keys.Spec, usage keys.Usage) (hsm.KeyRef, hsm.Generated) {
	t.Helper()
	g, err := p.GenerateKey(ctxT(t), spec)
	if err != nil {
		t.Fatalf("generate %s: %v", spec, err)
	}
	return hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: spec, Usage: usage, Wrapped: g.Wrapped}, g
}

func TestConformanceSoftHSM(t *testing.T) {
	hsmtest.TestPartition(t, hsmtest.NewPartition(t))
}

// The fault injector with no rules must be indistinguishable from the token.
func TestConformanceFaultWrapperNoFaults(t *testing.T) {
	f := &hsm.Faults{}
	hsmtest.TestPartition(t, hsmtest.NewPartition(t, hsmtest.WithFaults(f)))
	if f.Calls("C_Encrypt") == 0 || f.Calls("C_UnwrapKey") == 0 {
		t.Fatal("the wrapper saw no calls; the suite did not run through it")
	}
}

// The software OAEP path serves SHA-256 (and SHA-1) on any token.
func TestConformanceOAEPSoftware(t *testing.T) {
	if testing.Short() {
		t.Skip("generates RSA keys of every size")
	}
	p := hsmtest.NewPartition(t, hsmtest.WithConfig(func(c *hsm.Config) { c.OAEPSHA256 = hsm.OAEPSoftware }))
	hsmtest.TestPartition(t, p)
	if p.Info().OAEPSHA256Native {
		t.Fatal("software mode reports native OAEP SHA-256")
	}
}

func TestOAEPModes(t *testing.T) {
	msg := []byte("oaep test message")
	// decryptInits runs DecryptOAEP with SHA-256 and returns its result and
	// how many C_DecryptInit calls it made: 1 for one path, 2 for a native
	// attempt the token rejected followed by the software path.
	decryptInits := func(t *testing.T, p *hsm.Partition, f *hsm.Faults, k hsm.KeyRef, ct []byte) ([]byte, int, error) {
		t.Helper()
		before := f.Calls("C_DecryptInit")
		got, err := p.DecryptOAEP(ctxT(t), k, crypto.SHA256, ct)
		return got, f.Calls("C_DecryptInit") - before, err
	}
	t.Run("auto falls back when the token rejects SHA-256", func(t *testing.T) {
		f := &hsm.Faults{}
		p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
		k, g := newKey(t, p, keys.SpecRSA2048, keys.UsageEncryptDecrypt)
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, mustRSA(t, g.PublicKey), msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Info().OAEPSHA256Native {
			t.Fatal("before any SHA-256 decryption, auto mode reports the token cannot do it natively")
		}
		// The token rejects the native mechanism's parameters, as SoftHSM
		// 2.6 does (injected, so the test does not depend on the version).
		f.Add(hsm.FaultRule{Call: "C_DecryptInit", Code: hsm.CKRArgumentsBad, Times: 1})
		got, inits, err := decryptInits(t, p, f, k, ct)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("decrypt: %q, %v", got, err)
		}
		if inits != 2 {
			t.Fatalf("first decrypt made %d C_DecryptInit calls, want 2 (native rejected, then CKM_RSA_X_509)", inits)
		}
		if p.Info().OAEPSHA256Native {
			t.Fatal("after the token rejected SHA-256, Info still reports native OAEP SHA-256")
		}
		// Remembered: later decryptions go straight to the software path.
		for range 2 {
			got, inits, err = decryptInits(t, p, f, k, ct)
			if err != nil || !bytes.Equal(got, msg) || inits != 1 {
				t.Fatalf("later decrypt: %q, %v, %d C_DecryptInit calls (want 1)", got, err, inits)
			}
		}
		// A wrong ciphertext on the software path is ErrDecrypt.
		bad := bytes.Clone(ct)
		bad[len(bad)-1] ^= 1
		if _, err := p.DecryptOAEP(ctxT(t), k, crypto.SHA256, bad); !errors.Is(err, hsm.ErrDecrypt) {
			t.Fatalf("tampered ciphertext: %v, want ErrDecrypt", err)
		}
	})
	t.Run("native mode reports unsupported where the token lacks it", func(t *testing.T) {
		f := &hsm.Faults{}
		p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) { c.OAEPSHA256 = hsm.OAEPNative }))
		k, g := newKey(t, p, keys.SpecRSA2048, keys.UsageEncryptDecrypt)
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, mustRSA(t, g.PublicKey), msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.Add(hsm.FaultRule{Call: "C_DecryptInit", Code: hsm.CKRArgumentsBad})
		_, inits, err := decryptInits(t, p, f, k, ct)
		if !errors.Is(err, hsm.ErrUnsupported) || !strings.Contains(err.Error(), "software") {
			t.Fatalf("native mode on a token that rejects SHA-256: %v, want ErrUnsupported naming the software mode", err)
		}
		if inits != 1 {
			t.Fatalf("native mode made %d C_DecryptInit calls, want 1 (no software fallback)", inits)
		}
		if !p.Info().OAEPSHA256Native {
			t.Fatal("native mode reports non-native OAEP after a rejection")
		}
	})
	t.Run("bad mode", func(t *testing.T) {
		tok := hsmtest.NewToken(t)
		cfg := tok.Config()
		cfg.OAEPSHA256 = "fast"
		if _, err := hsm.Open(cfg); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
}

// A blob generated on token A works on token B once B holds the same
// domain key, transported HSM-to-HSM.
func TestBlobsAcrossTokens(t *testing.T) {
	ps := hsmtest.SharedDomainPartitions(t, 2)
	a, b := ps[0], ps[1]
	ctx := ctxT(t)
	if a.Info().Serial == b.Info().Serial {
		t.Fatal("both partitions are on the same token")
	}

	aes, _ := newKey(t, a, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	_, _ = rand.Read(iv)
	sealed, err := a.EncryptGCM(ctx, aes, iv, []byte("across tokens"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.DecryptGCM(ctx, aes, iv, sealed, []byte("aad"))
	if err != nil || string(got) != "across tokens" {
		t.Fatalf("token B decrypt: %v", err)
	}

	ec, g := newKey(t, a, keys.SpecECCNISTP384, keys.UsageSignVerify)
	d := crypto.SHA384.New()
	d.Write([]byte("m"))
	digest := d.Sum(nil)
	sig, err := b.SignDigest(ctx, ec, "ECDSA_SHA_384", digest)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.ParsePKIXPublicKey(g.PublicKey)
	if err := hsmtest.VerifySignature(pk, "ECDSA_SHA_384", digest, sig); err != nil {
		t.Fatalf("signature by token B does not verify with A's public key: %v", err)
	}

	check, err := a.DomainKeyCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.VerifyDomainKey(ctx, check); err != nil {
		t.Fatalf("B fails A's domain key check: %v", err)
	}
	// No check at all proves nothing (and must not reach the token).
	if err := b.VerifyDomainKey(ctx, nil); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("empty domain key check: got %v, want ErrInvalidInput", err)
	}

	// A partition with its own, different domain key refuses both.
	c := hsmtest.NewPartition(t)
	if err := c.VerifyDomainKey(ctx, check); !errors.Is(err, hsm.ErrWrongDomainKey) {
		t.Fatalf("foreign partition check: got %v, want ErrWrongDomainKey", err)
	}
	if _, err := c.DecryptGCM(ctx, aes, iv, sealed, []byte("aad")); !errors.Is(err, hsm.ErrWrongDomainKey) {
		t.Fatalf("foreign partition decrypt: got %v, want ErrWrongDomainKey", err)
	}
}

func TestDomainKeyTransportErrors(t *testing.T) {
	ctx := ctxT(t)
	leader := hsmtest.NewPartition(t)
	joiner := hsmtest.Open(t, hsmtest.NewToken(t))

	if err := joiner.ImportDomainKey(ctx, []byte("junk"), "CKM_RSA_PKCS_OAEP/SHA-1"); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("import without a transport key: got %v", err)
	}
	if _, err := hsm.ParseTransportPublicKey([]byte("not a key")); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("wrap for garbage: got %v", err)
	}
	pub, err := joiner.TransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.GenerateKey(ctx, keys.SpecSymmetricDefault); !errors.Is(err, hsm.ErrNoDomainKey) {
		t.Errorf("generate without a domain key: got %v, want ErrNoDomainKey", err)
	}
	if ok, err := joiner.HasDomainKey(ctx); ok || err != nil {
		t.Errorf("HasDomainKey before import = %v, %v", ok, err)
	}
	wrapped, mech, err := leader.WrapDomainKeyFor(ctx, mustRSA(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	if err := joiner.ImportDomainKey(ctx, wrapped, "CKM_DES"); !errors.Is(err, hsm.ErrUnsupported) {
		t.Errorf("unknown mechanism: got %v", err)
	}
	tampered := append([]byte(nil), wrapped...)
	tampered[10] ^= 0xff
	if err := joiner.ImportDomainKey(ctx, tampered, mech); err == nil {
		t.Error("tampered domain key imported")
	}
	if err := joiner.ImportDomainKey(ctx, wrapped, mech); err != nil {
		t.Fatalf("import: %v", err)
	}
	if ok, err := joiner.HasDomainKey(ctx); !ok || err != nil {
		t.Errorf("HasDomainKey after import = %v, %v", ok, err)
	}
	if err := leader.CreateDomainKey(ctx); !errors.Is(err, hsm.ErrExists) {
		t.Errorf("second domain key: got %v, want ErrExists", err)
	}
	// A second transport attempt into a partition that has a key fails.
	pub2, err := joiner.TransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w2, _, _ := leader.WrapDomainKeyFor(ctx, mustRSA(t, pub2))
	if err := joiner.ImportDomainKey(ctx, w2, mech); !errors.Is(err, hsm.ErrExists) {
		t.Errorf("import over an existing domain key: got %v, want ErrExists", err)
	}
}

// Loaded copies are sensitive, not extractable and public session objects
// (SoftHSM allows that), checked through PKCS#11; wrapping one out or
// reading its value fails in the token.
func TestLoadedKeyAttributes(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	for _, c := range []struct {
		spec  keys.Spec
		usage keys.Usage
	}{
		{keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt},
		{keys.SpecRSA2048, keys.UsageSignVerify},
		{keys.SpecECCNISTP256, keys.UsageSignVerify},
		{keys.SpecHMAC256, keys.UsageGenerateVerifyMAC},
	} {
		t.Run(string(c.spec), func(t *testing.T) {
			k, _ := newKey(t, p, c.spec, c.usage)
			attrs, err := p.LoadedAttributes(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{"CKA_SENSITIVE": true, "CKA_EXTRACTABLE": false, "CKA_TOKEN": false,
				"CKA_PRIVATE": false, "CKA_UNWRAP": false, "CKA_NEVER_EXTRACTABLE": false}
			if !c.spec.IsAsymmetric() {
				want["CKA_WRAP"] = false
			}
			for name, v := range want {
				if attrs[name] != v {
					t.Errorf("%s = %v, want %v", name, attrs[name], v)
				}
			}
			if err := p.WrapLoadedOut(ctx, k); !hsm.IsCKR(err, hsm.CKRKeyUnextractable) {
				t.Errorf("wrapping a loaded key out: got %v, want CKR_KEY_UNEXTRACTABLE", err)
			}
			if err := p.ReadLoadedValue(ctx, k); !hsm.IsCKR(err, hsm.CKRAttributeSensitive) {
				t.Errorf("reading CKA_VALUE: got %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}
		})
	}
}

// A token that refuses a public working copy gets a private one, and the
// partition asks for private copies from then on; a blob that fails both
// ways changes nothing.
func TestPrivateCopiesWhenTokenRefusesPublic(t *testing.T) {
	ctx := ctxT(t)
	loadPrivate := func(t *testing.T, p *hsm.Partition, k hsm.KeyRef) bool {
		t.Helper()
		attrs, err := p.LoadedAttributes(ctx, k)
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		return attrs["CKA_PRIVATE"]
	}

	// refusing makes a partition whose token refuses the next `times`
	// C_UnwrapKey calls with CKR_TEMPLATE_INCONSISTENT, and two keys not
	// loaded yet.
	refusing := func(t *testing.T, times int) (*hsm.Partition, *hsm.Faults, hsm.KeyRef, hsm.KeyRef) {
		f := &hsm.Faults{}
		p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
		k1, _ := newKey(t, p, keys.SpecECCNISTP256, keys.UsageSignVerify)
		k2, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		f.Add(hsm.FaultRule{Call: "C_UnwrapKey", Code: hsm.CKRTemplateInconsist, Times: times})
		return p, f, k1, k2
	}

	t.Run("refused", func(t *testing.T) {
		p, f, k1, k2 := refusing(t, 1)
		before := f.Calls("C_UnwrapKey")
		if !loadPrivate(t, p, k1) {
			t.Error("the copy loaded after the token refused a public one is public")
		}
		if n := f.Calls("C_UnwrapKey") - before; n != 2 {
			t.Errorf("C_UnwrapKey called %d times for the refused load, want 2", n)
		}
		before = f.Calls("C_UnwrapKey")
		if !loadPrivate(t, p, k2) {
			t.Error("a later copy is public")
		}
		if n := f.Calls("C_UnwrapKey") - before; n != 1 {
			t.Errorf("C_UnwrapKey called %d times for a later load, want 1", n)
		}
		if _, err := p.SignDigest(ctx, k1, keys.SigningECDSASHA256, make([]byte, 32)); err != nil {
			t.Errorf("sign with a private copy: %v", err)
		}
	})

	t.Run("session lost before the second ask", func(t *testing.T) {
		// The private retry meets a dead session: the load reports that,
		// so the anchor is reopened and the load asked again, public.
		p, f, k1, _ := refusing(t, 1)
		f.Add(hsm.FaultRule{Call: "C_UnwrapKey", Code: hsm.CKRSessionHandleInvalid, After: 1, Times: 1})
		if loadPrivate(t, p, k1) {
			t.Error("a retry that failed made the copy private")
		}
	})

	t.Run("blob that fails both", func(t *testing.T) {
		p, _, k1, k2 := refusing(t, 2)
		if _, err := p.LoadedAttributes(ctx, k1); err == nil {
			t.Fatal("a load refused twice succeeded")
		}
		if loadPrivate(t, p, k2) {
			t.Error("a load that failed both ways made later copies private")
		}
	})
}

func TestSessionLossDuringLoad(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)

	// The anchor session dies in the middle of unwrapping.
	f.Add(hsm.FaultRule{Call: "C_UnwrapKey", Code: hsm.CKRSessionHandleInvalid, Times: 1})
	before := f.Calls("C_OpenSession")
	sealed, err := p.EncryptGCM(ctx, k, iv, []byte("after loss"), nil)
	if err != nil {
		t.Fatalf("encrypt after session loss during load: %v", err)
	}
	if f.Calls("C_UnwrapKey") != 2 {
		t.Errorf("C_UnwrapKey called %d times, want 2 (fail, retry)", f.Calls("C_UnwrapKey"))
	}
	if f.Calls("C_OpenSession") <= before {
		t.Error("no new session was opened after the loss")
	}
	if got, err := p.DecryptGCM(ctx, k, iv, sealed, nil); err != nil || string(got) != "after loss" {
		t.Fatalf("decrypt: %v", err)
	}
}

// When the session that owns loaded objects dies, every handle goes with
// it; the partition reloads transparently.
func TestAnchorLossReloads(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecECCNISTP256, keys.UsageSignVerify)
	digest := sha256.Sum256([]byte("x"))
	if _, err := p.SignDigest(ctx, k, "ECDSA_SHA_256", digest[:]); err != nil {
		t.Fatal(err)
	}
	unwraps := f.Calls("C_UnwrapKey")
	p.KillAnchor()
	if _, err := p.SignDigest(ctx, k, "ECDSA_SHA_256", digest[:]); err != nil {
		t.Fatalf("sign after anchor loss: %v", err)
	}
	if f.Calls("C_UnwrapKey") != unwraps+1 {
		t.Errorf("key was not reloaded exactly once (unwraps %d -> %d)", unwraps, f.Calls("C_UnwrapKey"))
	}
	if err := p.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after recovery: %v", err)
	}
}

func TestBrokenSessionsAreEvicted(t *testing.T) {
	for _, code := range []uint{hsm.CKRSessionHandleInvalid, hsm.CKRSessionClosed, hsm.CKRUserNotLoggedIn, hsm.CKRDeviceRemoved, hsm.CKRTokenNotPresent} {
		t.Run(strings.TrimPrefix(hsmCodeName(code), "CKR_"), func(t *testing.T) {
			f := &hsm.Faults{}
			p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
			ctx := ctxT(t)
			k, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
			if _, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("warm")); err != nil {
				t.Fatal(err)
			}
			opens := f.Calls("C_OpenSession")
			f.Add(hsm.FaultRule{Call: "C_Sign", Code: code, Times: 1})
			if _, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("m")); err != nil {
				t.Fatalf("one broken session should be retried on a fresh one: %v", err)
			}
			if f.Calls("C_OpenSession") != opens+1 {
				t.Errorf("sessions opened: %d -> %d, want one new", opens, f.Calls("C_OpenSession"))
			}
		})
	}
}

func hsmCodeName(code uint) string {
	return map[uint]string{hsm.CKRSessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID", hsm.CKRSessionClosed: "CKR_SESSION_CLOSED",
		hsm.CKRUserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN", hsm.CKRDeviceRemoved: "CKR_DEVICE_REMOVED", hsm.CKRTokenNotPresent: "CKR_TOKEN_NOT_PRESENT"}[code]
}

// A token that is gone answers Unavailable, and the partition recovers by
// itself when it returns.
func TestTokenOutageAndRecovery(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	f.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("during outage: got %v, want ErrUnavailable", err)
	}
	if err := p.Healthy(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Healthy during outage: got %v, want ErrUnavailable", err)
	}
	f.Clear()
	if err := p.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after outage: %v", err)
	}
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); err != nil {
		t.Fatalf("after outage: %v", err)
	}
}

func TestCallDeadline(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) { c.CallTimeout = 100 * time.Millisecond }))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("warm"), nil); err != nil {
		t.Fatal(err)
	}
	f.Add(hsm.FaultRule{Call: "C_Encrypt", Stall: time.Second, Times: 1})
	_, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil)
	if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("stalled call: got %v, want ErrUnavailable naming the deadline", err)
	}
	// The stalled session comes back once the call returns.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := p.EncryptGCM(ctx, k, iv, []byte("y"), nil); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("partition did not recover after the stall: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crossingCalls holds an AES-256, a P-256 and an HMAC-256 key on one
// partition and one call of each operation the one crossing into C makes
// (direct.go): a data key drawn and sealed, AES-GCM both ways, an ECDSA
// signature and a MAC.
type crossingCalls struct {
	aes                               hsm.KeyRef
	iv, sealed                        []byte
	seal, encrypt, decrypt, sign, mac func() error
}

func newCrossingCalls(t *testing.T, p *hsm.Partition) crossingCalls {
	t.Helper()
	ctx := ctxT(t)
	c := crossingCalls{iv: make([]byte, hsm.GCMIVSize)}
	c.aes, _ = newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	ec, _ := newKey(t, p, keys.SpecECCNISTP256, keys.UsageSignVerify)
	mac, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	var err error
	if c.sealed, err = p.EncryptGCM(ctx, c.aes, c.iv, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	c.seal = func() error { _, _, err := p.SealRandomGCM(ctx, c.aes, 32, c.iv, nil); return err }
	c.encrypt = func() error { _, err := p.EncryptGCM(ctx, c.aes, c.iv, []byte("x"), nil); return err }
	c.decrypt = func() error { _, err := p.DecryptGCM(ctx, c.aes, c.iv, c.sealed, nil); return err }
	c.sign = func() error { _, err := p.SignDigest(ctx, ec, "ECDSA_SHA_256", make([]byte, 32)); return err }
	c.mac = func() error { _, err := p.MAC(ctx, mac, "HMAC_SHA_256", []byte("m")); return err }
	return c
}

// Every operation can be abandoned at its deadline while the token still
// works; the worker then finishes the call on its own. The race detector
// checks that nothing the worker writes is written or read by the caller
// on the abandoned path (a return through named results did, in
// SealRandomGCM), and the partition serves again once the token answers.
func TestAbandonedCallsShareNothingWithTheCaller(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) { c.CallTimeout = 100 * time.Millisecond }))
	ctx := ctxT(t)
	c := newCrossingCalls(t, p)
	raw, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageRawEncryptDecrypt)
	cbc := hsm.RawOp{Mode: hsm.RawCBC, IV: make([]byte, 16)}
	ops := []struct {
		name, call string
		run        func() error
	}{
		{"EncryptRaw", "C_Encrypt", func() error { _, err := p.EncryptRaw(ctx, raw, cbc, make([]byte, 32)); return err }},
		{"DecryptRaw", "C_Decrypt", func() error { _, err := p.DecryptRaw(ctx, raw, cbc, make([]byte, 32)); return err }},
		{"SealRandomGCM", "C_Encrypt", c.seal},
		{"EncryptGCM", "C_Encrypt", c.encrypt},
		{"DecryptGCM", "C_Decrypt", c.decrypt},
		{"SignDigest", "C_Sign", c.sign},
		{"MAC", "C_Sign", c.mac},
		{"Random", "C_GenerateRandom", func() error { _, err := p.Random(ctx, 32); return err }},
		{"GenerateKey", "C_GenerateKey", func() error { _, err := p.GenerateKey(ctx, keys.SpecSymmetricDefault); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			if err := op.run(); err != nil {
				t.Fatalf("before the stall: %v", err)
			}
			f.Add(hsm.FaultRule{Call: op.call, Stall: 400 * time.Millisecond, Times: 1})
			if err := op.run(); !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "deadline") {
				t.Fatalf("stalled call: got %v, want ErrUnavailable naming the deadline", err)
			}
			// Past the stall, the abandoned call has finished and written
			// what it writes; the next call must work.
			time.Sleep(500 * time.Millisecond)
			if err := op.run(); err != nil {
				t.Fatalf("after the stall: %v", err)
			}
		})
	}
}

// A caller that gives up while its call is stalled in the token is
// answered at once: cancelled callers get context.Canceled, a caller
// deadline sooner than CallTimeout gives ErrUnavailable like CallTimeout
// itself.
func TestCallEndsWithTheCallersContext(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("warm"), nil); err != nil {
		t.Fatal(err)
	}

	f.Add(hsm.FaultRule{Call: "C_Encrypt", Stall: 2 * time.Second, Times: 1})
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := p.EncryptGCM(cctx, k, iv, []byte("x"), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled during a stall: got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d >= 2*time.Second {
		t.Fatalf("cancelled caller waited for the token: %v", d)
	}

	f.Add(hsm.FaultRule{Call: "C_Encrypt", Stall: 2 * time.Second, Times: 1})
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	start = time.Now()
	_, err = p.EncryptGCM(dctx, k, iv, []byte("y"), nil)
	if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("caller deadline during a stall: got %v, want ErrUnavailable naming the deadline", err)
	}
	if d := time.Since(start); d >= 2*time.Second {
		t.Fatalf("caller with a deadline waited for the token: %v", d)
	}
}

// SealRandomGCM makes random bytes and seals them: DecryptGCM opens them.
// A data key's bytes come from a block the token drew once for 32 of them,
// each masked with fresh bytes; a larger draw is a token call of its own.
// A failed draw, mask or seal hands out no bytes.
func TestSealRandomGCM(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := []byte("twelve bytes")
	aad := []byte("header and context")
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("warm"), aad); err != nil {
		t.Fatal(err)
	}
	masks := &countingReader{}
	p.SetRandomMask(masks)
	rnd, enc := f.Calls("C_GenerateRandom"), f.Calls("C_Encrypt")
	seen := map[string]bool{}
	for i := range 64 {
		pt, sealed, err := p.SealRandomGCM(ctx, k, 32, iv, aad)
		if err != nil {
			t.Fatal(err)
		}
		if len(pt) != 32 || len(sealed) != 32+hsm.GCMTagSize {
			t.Fatalf("got %d random bytes sealed in %d, want 32 in %d", len(pt), len(sealed), 32+hsm.GCMTagSize)
		}
		if seen[string(pt)] {
			t.Fatalf("draw %d repeats an earlier one", i)
		}
		seen[string(pt)] = true
		opened, err := p.DecryptGCM(ctx, k, iv, sealed, aad)
		if err != nil || !bytes.Equal(opened, pt) {
			t.Fatalf("DecryptGCM of the sealed bytes: %x, %v; want %x", opened, err, pt)
		}
		// One block of 1,024 bytes serves 32 keys: the first draw and
		// the 33rd call the token.
		if got, want := f.Calls("C_GenerateRandom")-rnd, 1+i/32; got != want {
			t.Fatalf("after %d draws: %d C_GenerateRandom calls, want %d", i+1, got, want)
		}
	}
	if got := f.Calls("C_Encrypt") - enc; got != 64 {
		t.Errorf("C_Encrypt calls: %d, want 64", got)
	}
	if masks.reads != 64 || masks.bytes != 64*32 {
		t.Errorf("mask: %d reads of %d bytes, want 64 of %d", masks.reads, masks.bytes, 64*32)
	}

	// A draw larger than a data key calls the token itself, in the same
	// crossing as the seal.
	rnd = f.Calls("C_GenerateRandom")
	pt, sealed, err := p.SealRandomGCM(ctx, k, 200, iv, aad)
	if err != nil || len(pt) != 200 {
		t.Fatalf("200 bytes: %d, %v", len(pt), err)
	}
	if opened, err := p.DecryptGCM(ctx, k, iv, sealed, aad); err != nil || !bytes.Equal(opened, pt) {
		t.Fatalf("DecryptGCM of 200 sealed bytes: %v", err)
	}
	if got := f.Calls("C_GenerateRandom") - rnd; got != 1 {
		t.Errorf("200 bytes: %d C_GenerateRandom calls, want 1", got)
	}

	for _, n := range []int{0, hsm.MaxRandom + 1} {
		if _, _, err := p.SealRandomGCM(ctx, k, n, iv, aad); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("n=%d: got %v, want ErrInvalidInput", n, err)
		}
	}
	f.Add(hsm.FaultRule{Call: "C_Encrypt", Code: hsm.CKRArgumentsBad, Times: 1})
	if pt, sealed, err := p.SealRandomGCM(ctx, k, 32, iv, aad); err == nil || pt != nil || sealed != nil {
		t.Fatalf("failed seal: got %x, %x, %v; want an error and no bytes", pt, sealed, err)
	}
	p.SetRandomMask(failingReader{})
	if pt, sealed, err := p.SealRandomGCM(ctx, k, 32, iv, aad); err == nil || pt != nil || sealed != nil {
		t.Fatalf("failed mask: got %x, %x, %v; want an error and no bytes", pt, sealed, err)
	}
	p.SetRandomMask(nil)
	// Empty the pool, then fail the token's draw.
	for {
		before := f.Calls("C_GenerateRandom")
		if _, _, err := p.SealRandomGCM(ctx, k, 32, iv, aad); err != nil {
			t.Fatal(err)
		}
		if f.Calls("C_GenerateRandom") > before {
			break
		}
	}
	for range 31 {
		if _, _, err := p.SealRandomGCM(ctx, k, 32, iv, aad); err != nil {
			t.Fatal(err)
		}
	}
	f.Add(hsm.FaultRule{Call: "C_GenerateRandom", Code: hsm.CKRDeviceError, Times: 2})
	if pt, sealed, err := p.SealRandomGCM(ctx, k, 32, iv, aad); err == nil || pt != nil || sealed != nil {
		t.Fatalf("failed draw: got %x, %x, %v; want an error and no bytes", pt, sealed, err)
	}
}

// Concurrent data keys share refills: one draw from the token at a time,
// and the callers that find the pool short wait for it rather than draw
// blocks of their own (each draw but one was thrown away). With the mask
// set to zeros, every key is the token's bytes alone: none repeats.
func TestPooledRandomConcurrent(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := []byte("twelve bytes")
	p.SetRandomMask(zeroReader{})
	f.Add(hsm.FaultRule{Call: "C_GenerateRandom", Stall: 2 * time.Millisecond})
	const callers, each = 16, 64
	before := f.Calls("C_GenerateRandom")
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range each {
				pt, _, err := p.SealRandomGCM(ctx, k, 32, iv, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[string(pt)] {
					t.Errorf("a data key repeats: %x", pt)
				}
				seen[string(pt)] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// 16 x 64 keys of 32 bytes are 32 blocks of 1,024.
	if got := f.Calls("C_GenerateRandom") - before; got > 32 {
		t.Errorf("%d C_GenerateRandom calls for %d data keys, want at most 32", got, callers*each)
	}
}

// Close clears the pool, and a refill under way when it runs keeps
// nothing once it ends: a closed partition holds none of the token's
// bytes. (The refill's caller used to put the rest of its block back after
// Close had cleared the pool.)
func TestCloseLeavesNoPooledRandomBytes(t *testing.T) {
	for round := range 20 {
		f := &hsm.Faults{}
		p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
		ctx := ctxT(t)
		k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
		f.Add(hsm.FaultRule{Call: "C_GenerateRandom", Stall: 20 * time.Millisecond})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { _, _, _ = p.SealRandomGCM(ctx, k, 32, []byte("twelve bytes"), nil) })
		}
		time.Sleep(time.Duration(15+round%10) * time.Millisecond)
		_ = p.Close()
		wg.Wait()
		hsmtest.WaitUntil(t, "the refill under way to end", 5*time.Second, func() bool { return f.Calls("C_GenerateRandom") > 0 })
		time.Sleep(30 * time.Millisecond) // past the stall: the refill has ended
		if n := p.PooledLen(); n != 0 {
			t.Fatalf("round %d: the closed partition still holds %d of the token's random bytes", round, n)
		}
	}
}

// A block's bytes wait at most the block's life to be handed out: a data
// key after a longer pause draws a new block, and the old one is cleared.
func TestPooledRandomBlockLife(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	p.SetRandomBlockLife(100 * time.Millisecond)
	draw := func() {
		t.Helper()
		if _, _, err := p.SealRandomGCM(ctx, k, 32, []byte("twelve bytes"), nil); err != nil {
			t.Fatal(err)
		}
	}
	before := f.Calls("C_GenerateRandom")
	draw()
	draw()
	if got := f.Calls("C_GenerateRandom") - before; got != 1 {
		t.Fatalf("two data keys in a row: %d C_GenerateRandom calls, want 1", got)
	}
	if n := p.PooledLen(); n != 1024-64 {
		t.Fatalf("pool after two keys: %d bytes, want %d", n, 1024-64)
	}
	time.Sleep(200 * time.Millisecond)
	draw()
	if got := f.Calls("C_GenerateRandom") - before; got != 2 {
		t.Fatalf("a data key after the block's life: %d C_GenerateRandom calls in all, want 2", got)
	}
	if n := p.PooledLen(); n != 1024-32 {
		t.Fatalf("pool after the new block's first key: %d bytes, want %d", n, 1024-32)
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// countingReader hands out bytes that count up, and counts its reads.
type countingReader struct{ reads, bytes int }

func (r *countingReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r.bytes + i)
	}
	r.reads++
	r.bytes += len(b)
	return len(b), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no randomness") }

// PKCS#11 calls run on kept workers: sequential calls reuse them, there
// are at most about twice as many as the calls that can be in flight
// together (a worker that has just answered may not be waiting yet when
// the next call comes), and Close stops them.
func TestCallWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	p := hsmtest.NewPartition(t, hsmtest.WithConfig(func(c *hsm.Config) { c.PoolSize = 4 }))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := p.EncryptGCM(ctx, k, iv, []byte("warm"), nil); err != nil {
		t.Fatal(err)
	}
	warm := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		if _, err := p.EncryptGCM(ctx, k, iv, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := runtime.NumGoroutine(); n > warm+1 {
		t.Errorf("200 calls one after another: %d goroutines, %d before them", n, warm)
	}
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, _ = p.EncryptGCM(ctx, k, iv, []byte("y"), nil)
			}
		}()
	}
	wg.Wait()
	// Four pooled sessions and the anchor: five calls in flight at most.
	if n := runtime.NumGoroutine(); n > warm+2*(4+1) {
		t.Errorf("12 callers on 4 sessions: %d goroutines, %d before them", n, warm)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("after Close: %d goroutines, %d before the partition", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolSaturation(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) {
		c.PoolSize = 1
		c.SessionWait = 50 * time.Millisecond
	}))
	ctx := ctxT(t)
	k, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	if _, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	f.Add(hsm.FaultRule{Call: "C_Sign", Stall: 2 * time.Second, Times: 1})
	var wg sync.WaitGroup
	wg.Add(1)
	started := make(chan struct{})
	go func() {
		defer wg.Done()
		close(started)
		_, _ = p.MAC(ctx, k, "HMAC_SHA_256", []byte("slow"))
	}()
	<-started
	// Wait until the slow call holds the only session.
	for f.Calls("C_Sign") < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	_, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("fast"))
	if !errors.Is(err, hsm.ErrBusy) {
		t.Fatalf("with the pool full: got %v, want ErrBusy", err)
	}
	wg.Wait()
	if _, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("after")); err != nil {
		t.Fatalf("after the slow call: %v", err)
	}
}

func TestHandleCacheBound(t *testing.T) {
	f := &hsm.Faults{}
	p := hsmtest.NewPartition(t, hsmtest.WithFaults(f), hsmtest.WithConfig(func(c *hsm.Config) { c.CacheSize = 2 }))
	ctx := ctxT(t)
	var ks []hsm.KeyRef
	for i := 0; i < 3; i++ {
		k, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
		ks = append(ks, k)
	}
	macs := map[int][]byte{}
	for round := 0; round < 2; round++ {
		for i, k := range ks {
			mac, err := p.MAC(ctx, k, "HMAC_SHA_256", []byte("m"))
			if err != nil {
				t.Fatal(err)
			}
			if round == 1 && !bytes.Equal(mac, macs[i]) {
				t.Fatalf("key %d gives a different MAC after eviction and reload", i)
			}
			macs[i] = mac
			if size, _, _ := p.CacheStats(); size > 2 {
				t.Fatalf("cache holds %d handles, bound is 2", size)
			}
		}
	}
	// Hits do not unwrap: warm key 2 and use it repeatedly.
	unwraps := f.Calls("C_UnwrapKey")
	for i := 0; i < 5; i++ {
		if _, err := p.MAC(ctx, ks[2], "HMAC_SHA_256", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	if f.Calls("C_UnwrapKey") != unwraps {
		t.Errorf("cached key was unwrapped again (%d -> %d)", unwraps, f.Calls("C_UnwrapKey"))
	}
	if f.Calls("C_FindObjectsInit") > 2 {
		t.Errorf("C_FindObjects ran %d times; the hot path must not search", f.Calls("C_FindObjectsInit"))
	}
	p.Evict(ctx, ks[2].ID)
	if _, err := p.MAC(ctx, ks[2], "HMAC_SHA_256", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if f.Calls("C_UnwrapKey") != unwraps+1 {
		t.Errorf("evicted key was not reloaded")
	}
}

// A different blob under the same id and version is never served from a
// stale handle.
func TestCacheKeyedByBlob(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	k1, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	k2, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	k2.ID = k1.ID
	m1, err := p.MAC(ctx, k1, "HMAC_SHA_256", []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := p.MAC(ctx, k2, "HMAC_SHA_256", []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(m1, m2) {
		t.Fatal("the second blob was served by the first blob's handle")
	}
}

func TestOpenErrors(t *testing.T) {
	tok := hsmtest.NewToken(t)
	dir := t.TempDir()
	cases := []struct {
		name    string
		mutate  func(*hsm.Config)
		want    error
		mention string
	}{
		{"wrong PIN", func(c *hsm.Config) { c.PIN = "not-the-pin" }, hsm.ErrLogin, "CKR_PIN_INCORRECT"},
		{"no PIN", func(c *hsm.Config) { c.PIN = "" }, hsm.ErrLogin, "PIN"},
		{"missing module", func(c *hsm.Config) { c.Module = filepath.Join(dir, "nope.so") }, hsm.ErrNotFound, "nope.so"},
		{"no module", func(c *hsm.Config) { c.Module = "" }, hsm.ErrInvalidInput, "module"},
		{"not a PKCS#11 library", func(c *hsm.Config) { c.Module = "/bin/sh" }, hsm.ErrInvalidInput, "/bin/sh"},
		{"unknown token", func(c *hsm.Config) { c.TokenLabel = "no-such-token" }, hsm.ErrNotFound, "no-such-token"},
		{"unknown serial", func(c *hsm.Config) { c.TokenSerial = "0000" }, hsm.ErrNotFound, "0000"},
		{"no token named", func(c *hsm.Config) { c.TokenLabel = "" }, hsm.ErrInvalidInput, "label or serial"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tok.Config()
			c.mutate(&cfg)
			p, err := hsm.Open(cfg)
			if err == nil {
				_ = p.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
			if strings.Contains(err.Error(), tok.PIN) {
				t.Error("error contains the PIN")
			}
		})
	}
	// By serial works.
	cfg := tok.Config()
	cfg.TokenLabel, cfg.TokenSerial = "", tok.Serial
	p, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("open by serial: %v", err)
	}
	_ = p.Close()
	if _, err := p.Random(ctxT(t), 1); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("use after close: got %v, want ErrUnavailable", err)
	}
}

func TestBadInput(t *testing.T) {
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	if _, err := p.GenerateKey(ctx, "DES_56"); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("unknown spec: %v", err)
	}
	rsaKey, _ := newKey(t, p, keys.SpecRSA2048, keys.UsageEncryptDecrypt)
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := p.EncryptGCM(ctx, rsaKey, iv, []byte("x"), nil); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("GCM with RSA key: %v", err)
	}
	if _, err := p.DecryptOAEP(ctx, rsaKey, crypto.SHA512, make([]byte, 256)); !errors.Is(err, hsm.ErrUnsupported) {
		t.Errorf("OAEP SHA-512: %v", err)
	}
	empty := rsaKey
	empty.Wrapped = nil
	if _, err := p.DecryptOAEP(ctx, empty, crypto.SHA1, make([]byte, 256)); !errors.Is(err, hsm.ErrInvalidInput) && !errors.Is(err, hsm.ErrDecrypt) {
		t.Errorf("empty blob: %v", err)
	}
	garbage := rsaKey
	garbage.ID = keys.NewKeyID()
	garbage.Wrapped = bytes.Repeat([]byte{7}, 64)
	if _, err := p.DecryptOAEP(ctx, garbage, crypto.SHA1, make([]byte, 256)); !errors.Is(err, hsm.ErrWrongDomainKey) {
		t.Errorf("garbage blob: %v", err)
	}
	// An RSA signing key refuses to decrypt (usage is enforced by the
	// token through the object's attributes).
	signer, g := newKey(t, p, keys.SpecRSA2048, keys.UsageSignVerify)
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, mustRSA(t, g.PublicKey), []byte("x"), nil)
	if _, err := p.DecryptOAEP(ctx, signer, crypto.SHA1, ct); err == nil {
		t.Error("a SIGN_VERIFY key decrypted")
	}
}

func TestLoadPIN(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "pin-open")
	if err := os.WriteFile(open, []byte("1234"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "pin-empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "pin-huge")
	if err := os.WriteFile(huge, bytes.Repeat([]byte("1"), 1025), 0o600); err != nil {
		t.Fatal(err)
	}
	openDir := filepath.Join(dir, "pin-dir")
	if err := os.Mkdir(openDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HSMBROKER_TEST_PIN", "5678")
	cases := []struct {
		file, env, want string
		wantErr         string
	}{
		{good, "", "1234", ""},
		{open, "", "", "pin_file " + open + " is accessible by group or others (mode 0644); chmod 600 it"},
		{empty, "", "", "pin_file " + empty + " is empty"},
		{huge, "", "", "pin_file " + huge + " holds more than 1024 bytes, more than the line or so it should"},
		{filepath.Join(dir, "missing"), "", "", "pin_file " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{openDir, "", "", "pin_file " + openDir + " is a directory, not a file"},
		{"", "HSMBROKER_TEST_PIN", "5678", ""},
		{"", "HSMBROKER_TEST_UNSET_PIN", "", "pin_env HSMBROKER_TEST_UNSET_PIN: the environment variable is empty or unset"},
		{"", "", "", "no pin_file or pin_env configured"},
	}
	for _, c := range cases {
		got, err := hsm.LoadPIN(c.file, c.env)
		if got != c.want || (err == nil) != (c.wantErr == "") || err != nil && err.Error() != c.wantErr {
			t.Errorf("LoadPIN(%q, %q) = %q, %v, want error %q", c.file, c.env, got, err, c.wantErr)
		}
		// No login was tried: the error matches ErrLogin without saying so.
		if err != nil && (!errors.Is(err, hsm.ErrLogin) || strings.Contains(err.Error(), "login")) {
			t.Errorf("LoadPIN error %v is not ErrLogin, or says login failed", err)
		}
	}
}

func mustRSA(t *testing.T, der []byte) *rsa.PublicKey {
	t.Helper()
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*rsa.PublicKey)
}

// A caller whose context is already done gives its pool slot back: a full
// pool of such callers must not leave the partition unusable or Close hung.
func TestCancelledCallersDoNotLeakSessions(t *testing.T) {
	p := hsmtest.NewPartition(t, hsmtest.WithConfig(func(c *hsm.Config) { c.PoolSize = 2 }))
	k, _ := newKey(t, p, keys.SpecHMAC256, keys.UsageGenerateVerifyMAC)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 10; i++ {
		if _, err := p.MAC(done, k, "HMAC_SHA_256", []byte("m")); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: got %v, want context.Canceled", err)
		}
		if _, err := p.Random(done, 8); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: got %v, want context.Canceled", err)
		}
	}
	if _, err := p.MAC(ctxT(t), k, "HMAC_SHA_256", []byte("m")); err != nil {
		t.Fatalf("after cancelled callers: %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs: a pool slot leaked")
	}
}
