package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// CryptWithValue encrypts or decrypts data in the token with an AES key
// given by its value: the key becomes a sensitive, non-extractable session
// object for this one call and is destroyed after it. It serves keys whose
// material the broker keeps sealed under a KMS key (KMIP objects), which
// have no domain-wrapped form to load. The operation's mode, IV and
// additional data are a RawOp, checked as raw operations are (CTR is not
// offered here). A decryption that fails its tag or padding is ErrDecrypt.
func (p *Partition) CryptWithValue(ctx context.Context, value []byte, encrypt bool, o RawOp, data []byte) ([]byte, error) {
	if n := len(value); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%w: an AES key is 16, 24 or 32 bytes, got %d", ErrInvalidInput, n)
	}
	if o.Mode == RawCTR {
		return nil, fmt.Errorf("%w: AES mode CTR with a key given by value", ErrUnsupported)
	}
	if err := o.Check(data, encrypt); err != nil {
		return nil, err
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, encrypt),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, !encrypt),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}
	var out []byte
	err := p.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		h, err := p.m.CreateObject(sh, tmpl)
		if err != nil {
			return wrapP11("C_CreateObject", err)
		}
		defer func() { _ = p.m.DestroyObject(sh, h) }()
		out, err = p.cryptOnce(sh, h, o, encrypt, data)
		return err
	})
	if err != nil && !encrypt {
		if errors.Is(err, ErrDecrypt) {
			return nil, ErrDecrypt
		}
		if code, ok := ckrOf(err); ok {
			switch sentinelFor(code) {
			case ErrDecrypt, ErrInvalidInput:
				return nil, ErrDecrypt
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MACWithValue computes an HMAC (SHA-256, SHA-384 or SHA-512) of message
// in the token with a key given by its value, which becomes a sensitive,
// non-extractable generic secret session object for this one call and is
// destroyed after it, as in CryptWithValue. PKCS#11 tokens refuse HMAC
// keys shorter than the hash's output (SoftHSM does); that is
// ErrInvalidInput.
func (p *Partition) MACWithValue(ctx context.Context, value []byte, h crypto.Hash, message []byte) ([]byte, error) {
	mech, ok := hmacMechs[h]
	if !ok {
		return nil, fmt.Errorf("%w: HMAC with %v", ErrUnsupported, h)
	}
	if len(value) < h.Size() || len(value) > 512 {
		return nil, fmt.Errorf("%w: an HMAC %s key is %d to 512 bytes, got %d", ErrInvalidInput, h.String(), h.Size(), len(value))
	}
	if len(message) > MaxGCMInput {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidInput, len(message), MaxGCMInput)
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}
	var out []byte
	err := p.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		o, err := p.m.CreateObject(sh, tmpl)
		if err != nil {
			return wrapP11("C_CreateObject", err)
		}
		defer func() { _ = p.m.DestroyObject(sh, o) }()
		out, err = p.m.Once(sh, onceArgs{op: opSign, mech: mech, key: o, in: message, outLen: h.Size()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
