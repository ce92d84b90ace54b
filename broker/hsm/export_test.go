package hsm

import (
	"context"
	"io"
	"time"

	"github.com/miekg/pkcs11"
)

// Test-only access to internals, for the external test package.

// LoadedAttributes reads boolean attributes of k's loaded working copy.
func (p *Partition) LoadedAttributes(ctx context.Context, k KeyRef) (map[string]bool, error) {
	h, err := p.load(ctx, k)
	if err != nil {
		return nil, err
	}
	names := map[uint]string{
		pkcs11.CKA_SENSITIVE: "CKA_SENSITIVE", pkcs11.CKA_EXTRACTABLE: "CKA_EXTRACTABLE",
		pkcs11.CKA_TOKEN: "CKA_TOKEN", pkcs11.CKA_PRIVATE: "CKA_PRIVATE",
		pkcs11.CKA_ALWAYS_SENSITIVE: "CKA_ALWAYS_SENSITIVE", pkcs11.CKA_NEVER_EXTRACTABLE: "CKA_NEVER_EXTRACTABLE",
		pkcs11.CKA_WRAP: "CKA_WRAP", pkcs11.CKA_UNWRAP: "CKA_UNWRAP",
	}
	out := map[string]bool{}
	err = p.do(ctx, func(sh pkcs11.SessionHandle) error {
		for t, name := range names {
			attrs, err := p.m.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(t, nil)})
			if IsCKR(err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID) {
				continue // not an attribute of this object class
			}
			if err != nil {
				return wrapP11("C_GetAttributeValue", err)
			}
			out[name] = len(attrs[0].Value) == 1 && attrs[0].Value[0] == 1
		}
		return nil
	})
	return out, err
}

// ReadLoadedValue tries to read the secret part (CKA_VALUE, or
// CKA_PRIVATE_EXPONENT for RSA) of k's loaded copy.
func (p *Partition) ReadLoadedValue(ctx context.Context, k KeyRef) error {
	h, err := p.load(ctx, k)
	if err != nil {
		return err
	}
	return p.do(ctx, func(sh pkcs11.SessionHandle) error {
		secret := uint(pkcs11.CKA_VALUE)
		if k.Spec.IsRSA() {
			secret = pkcs11.CKA_PRIVATE_EXPONENT
		}
		_, err := p.m.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(secret, nil)})
		return wrapP11("C_GetAttributeValue", err)
	})
}

// WrapLoadedOut tries to wrap k's loaded copy under the domain key.
func (p *Partition) WrapLoadedOut(ctx context.Context, k KeyRef) error {
	h, err := p.load(ctx, k)
	if err != nil {
		return err
	}
	dk, err := p.domainKeyHandle(ctx)
	if err != nil {
		return err
	}
	return p.do(ctx, func(sh pkcs11.SessionHandle) error {
		_, err := p.m.WrapKey(sh, wrapPadMech, dk, h)
		return wrapP11("C_WrapKey", err)
	})
}

// KillAnchor closes the anchor session behind the partition's back, as a
// token restart or a network HSM's connection loss would.
func (p *Partition) KillAnchor() {
	p.anchorLock <- struct{}{}
	_ = p.m.CloseSession(p.anchor)
	<-p.anchorLock
}

// IsCKR reports whether err carries the given CKR code.
func IsCKR(err error, code uint) bool {
	c, ok := ckrOf(err)
	return ok && c == code
}

// CKRKeyUnextractable and friends, for assertions.
const (
	CKRKeyUnextractable    = pkcs11.CKR_KEY_UNEXTRACTABLE
	CKRTemplateInconsist   = pkcs11.CKR_TEMPLATE_INCONSISTENT
	CKRAttributeSensitive  = pkcs11.CKR_ATTRIBUTE_SENSITIVE
	CKRKeyFunctionNotAllow = pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED
)

// EncryptGCMInto is EncryptGCM with the output buffer's size chosen by the
// caller, to test a buffer the token finds too small.
func (p *Partition) EncryptGCMInto(ctx context.Context, k KeyRef, iv, plaintext []byte, outLen int) ([]byte, error) {
	var out []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		a := gcmArgs(opEncrypt, h, iv, nil, plaintext, 0)
		a.outLen = outLen
		var err error
		out, err = p.m.Once(sh, a)
		return err
	})
	return out, err
}

// SetRandomMask makes p's pooled random draws take their XOR mask from r
// instead of crypto/rand.
func (p *Partition) SetRandomMask(r io.Reader) {
	p.rnd.mu.Lock()
	defer p.rnd.mu.Unlock()
	p.rnd.mask = r
}

// SetRandomBlockLife replaces how long p's pool keeps a block.
func (p *Partition) SetRandomBlockLife(d time.Duration) {
	p.rnd.mu.Lock()
	defer p.rnd.mu.Unlock()
	p.rnd.life = d
}

// PooledLen is how many of the token's random bytes p's pool holds.
func (p *Partition) PooledLen() int {
	p.rnd.mu.Lock()
	defer p.rnd.mu.Unlock()
	return len(p.rnd.buf)
}
