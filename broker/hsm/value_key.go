package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// AES modes CryptWithValue runs.
const (
	AESModeCBCPad = "CBC-PAD" // CBC with PKCS#7 padding (CKM_AES_CBC_PAD)
	AESModeCBC    = "CBC"     // CBC, whole blocks only (CKM_AES_CBC)
	AESModeGCM    = "GCM"     // GCM, 96-bit IV, 128-bit tag appended (CKM_AES_GCM)
)

// CryptWithValue encrypts or decrypts data in the token with an AES key
// given by its value: the key becomes a sensitive, non-extractable session
// object for this one call and is destroyed after it. It serves keys whose
// material the broker keeps sealed under a KMS key (KMIP objects), which
// have no domain-wrapped form to load. A decryption that fails its tag or
// padding is ErrDecrypt.
func (p *Partition) CryptWithValue(ctx context.Context, value []byte, encrypt bool, mode string, iv, aad, data []byte) ([]byte, error) {
	if n := len(value); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%w: an AES key is 16, 24 or 32 bytes, got %d", ErrInvalidInput, n)
	}
	if len(data) > MaxGCMInput+GCMTagSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidInput, len(data), MaxGCMInput)
	}
	var mech *pkcs11.Mechanism
	var params *pkcs11.GCMParams
	switch mode {
	case AESModeCBC, AESModeCBCPad:
		if len(iv) != 16 {
			return nil, fmt.Errorf("%w: CBC needs a 16-byte IV, got %d", ErrInvalidInput, len(iv))
		}
		if (mode == AESModeCBC || !encrypt) && len(data)%16 != 0 {
			return nil, fmt.Errorf("%w: CBC data must be whole 16-byte blocks", ErrInvalidInput)
		}
		m := uint(pkcs11.CKM_AES_CBC_PAD)
		if mode == AESModeCBC {
			m = pkcs11.CKM_AES_CBC
		}
		mech = pkcs11.NewMechanism(m, iv)
	case AESModeGCM:
		if len(iv) != GCMIVSize || !encrypt && len(data) < GCMTagSize {
			return nil, fmt.Errorf("%w: GCM needs a %d-byte IV and a %d-byte tag", ErrInvalidInput, GCMIVSize, GCMTagSize)
		}
		params = pkcs11.NewGCMParams(iv, aad, GCMTagSize*8)
		defer params.Free()
		mech = pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)
	default:
		return nil, fmt.Errorf("%w: AES mode %q", ErrUnsupported, mode)
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
		if encrypt {
			if err := p.m.EncryptInit(sh, []*pkcs11.Mechanism{mech}, h); err != nil {
				return wrapP11("C_EncryptInit", err)
			}
			out, err = p.m.Encrypt(sh, data)
			return wrapP11("C_Encrypt", err)
		}
		if err := p.m.DecryptInit(sh, []*pkcs11.Mechanism{mech}, h); err != nil {
			return wrapP11("C_DecryptInit", err)
		}
		out, err = p.m.Decrypt(sh, data)
		if err != nil {
			return p.decryptResult(sh, wrapP11("C_Decrypt", err))
		}
		return nil
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
		if err := p.m.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, o); err != nil {
			return wrapP11("C_SignInit", err)
		}
		out, err = p.m.Sign(sh, message)
		return wrapP11("C_Sign", err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
