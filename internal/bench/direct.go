//go:build cgo

package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/keys"
)

// errNoBaseline is nil: a cgo build can load the token's PKCS#11 library.
var errNoBaseline error

// directTarget runs the operations the broker's service makes for each
// request, directly on a partition: the same mechanisms, key objects and
// session pool, without gRPC, validation, state lookup or the blob format.
type directTarget struct {
	p              *hsm.Partition
	sym, rsa, p256 []hsm.KeyRef
	sealed         []directCiphertext
	plaintext      []byte
}

type directCiphertext struct{ iv, sealed, aad []byte }

// aadSize is the size of the broker's ciphertext header, which it passes
// as AES-GCM additional data.
const aadSize = 33

func newDirectTarget(ctx context.Context, cfg Config, plaintext []byte) (*directTarget, error) {
	d := cfg.Direct
	pin, err := hsm.LoadPIN(d.PINFile, d.PINEnv)
	if err != nil {
		return nil, fmt.Errorf("bench: baseline PIN: %w", err)
	}
	p, err := hsm.Open(hsm.Config{Module: d.Module, TokenLabel: d.TokenLabel, TokenSerial: d.TokenSerial, PIN: pin, PoolSize: d.PoolSize, Logger: d.Logger})
	if err != nil {
		return nil, fmt.Errorf("bench: open the baseline token: %w", err)
	}
	t := &directTarget{p: p, plaintext: plaintext}
	has, err := p.HasDomainKey(ctx)
	if err != nil {
		t.close()
		return nil, fmt.Errorf("bench: baseline token: %w", err)
	}
	if !has && !cfg.CreateDomainKey {
		t.close()
		return nil, errNoDomainKey
	}
	if !has {
		if err := p.CreateDomainKey(ctx); err != nil {
			t.close()
			return nil, fmt.Errorf("bench: create a domain key in the baseline token: %w", err)
		}
	}
	gen := func(spec keys.Spec, usage keys.Usage) ([]hsm.KeyRef, error) {
		var refs []hsm.KeyRef
		for range cfg.Keys {
			g, err := p.GenerateKey(ctx, spec)
			if err != nil {
				return nil, fmt.Errorf("bench: generate a %s key in the baseline token: %w", spec, err)
			}
			refs = append(refs, hsm.KeyRef{ID: keys.NewKeyID(), Version: 1, Spec: spec, Usage: usage, Wrapped: g.Wrapped})
		}
		return refs, nil
	}
	sym, rsa, p256 := kindsFor(cfg.Op)
	if sym {
		if t.sym, err = gen(keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt); err != nil {
			t.close()
			return nil, err
		}
		for _, k := range t.sym {
			iv, aad := random(hsm.GCMIVSize), random(aadSize)
			sealed, err := p.EncryptGCM(ctx, k, iv, plaintext, aad)
			if err != nil {
				t.close()
				return nil, fmt.Errorf("bench: baseline encrypt: %w", err)
			}
			t.sealed = append(t.sealed, directCiphertext{iv, sealed, aad})
		}
	}
	if rsa {
		if t.rsa, err = gen(keys.SpecRSA2048, keys.UsageSignVerify); err != nil {
			t.close()
			return nil, err
		}
	}
	if p256 {
		if t.p256, err = gen(keys.SpecECCNISTP256, keys.UsageSignVerify); err != nil {
			t.close()
			return nil, err
		}
	}
	return t, nil
}

// errNoDomainKey: the baseline needs a token that holds a domain key.
var errNoDomainKey = errors.New("bench: the baseline token holds no hsmbroker domain key; point --token-label at a broker node's token " +
	"(its keys stay untouched: the baseline makes session objects only), or give --baseline-create-domain-key to make one in a scratch token")

func (t *directTarget) do(ctx context.Context, _ int, op Op, k int) error {
	var err error
	switch op {
	case OpEncrypt:
		// As the service does: a fresh IV, the header as additional data.
		_, err = t.p.EncryptGCM(ctx, t.sym[k], random(hsm.GCMIVSize), t.plaintext, random(aadSize))
	case OpDecrypt:
		c := t.sealed[k]
		_, err = t.p.DecryptGCM(ctx, t.sym[k], c.iv, c.sealed, c.aad)
	case OpDataKey:
		// A data key is 32 random bytes from the token, sealed under the key.
		var dk []byte
		if dk, err = t.p.Random(ctx, 32); err == nil {
			_, err = t.p.EncryptGCM(ctx, t.sym[k], random(hsm.GCMIVSize), dk, random(aadSize))
		}
	case OpSignRSA:
		_, err = t.p.SignDigest(ctx, t.rsa[k], keys.SigningRSASSAPKCS1V15SHA256, digest[:])
	case OpSignP256:
		_, err = t.p.SignDigest(ctx, t.p256[k], keys.SigningECDSASHA256, digest[:])
	}
	return err
}

func (t *directTarget) close() { _ = t.p.Close() }
