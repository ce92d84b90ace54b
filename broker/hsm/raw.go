package hsm

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/hsmbroker/hsmbroker/keys"
)

// RawMode is the AES mode of a raw operation, as PKCS#11 names it.
type RawMode int

// Raw AES modes.
const (
	RawCBC RawMode = iota + 1
	RawCBCPad
	RawCTR
	RawGCM
)

// Limits of raw operations.
const (
	MaxRawInput  = 64 << 10
	MaxRawAAD    = 64 << 10
	MaxRawGCMIV  = 128
	rawBlockSize = 16
)

// RawOp is one raw AES operation on a RAW_ENCRYPT_DECRYPT key: the mode,
// the caller's IV (the initial counter block for CTR) and, for GCM, the
// additional data.
type RawOp struct {
	Mode RawMode
	IV   []byte
	AAD  []byte
}

// Check validates the operation's parameters and the input size; in is the
// plaintext (encrypt) or ciphertext (decrypt).
func (o RawOp) Check(in []byte, encrypt bool) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, a...)...)
	}
	if len(o.AAD) > 0 && o.Mode != RawGCM {
		return bad("additional data is for GCM only")
	}
	switch o.Mode {
	case RawCBC, RawCBCPad, RawCTR:
		if len(o.IV) != rawBlockSize {
			return bad("the IV must be %d bytes, got %d", rawBlockSize, len(o.IV))
		}
	case RawGCM:
		if len(o.IV) < 1 || len(o.IV) > MaxRawGCMIV {
			return bad("the GCM IV must be 1 to %d bytes, got %d", MaxRawGCMIV, len(o.IV))
		}
		if len(o.AAD) > MaxRawAAD {
			return bad("additional data must be at most %d bytes, got %d", MaxRawAAD, len(o.AAD))
		}
	default:
		return bad("unknown raw mode %d", o.Mode)
	}
	// A ciphertext may be longer than its plaintext by GCM's tag or
	// CBC_PAD's padding block: what MaxRawInput bytes encrypt to must
	// decrypt in one call too.
	limit := MaxRawInput
	if !encrypt && (o.Mode == RawGCM || o.Mode == RawCBCPad) {
		limit += rawBlockSize
	}
	if len(in) > limit {
		return bad("input of %d bytes exceeds %d", len(in), limit)
	}
	switch {
	case o.Mode == RawCBC && len(in)%rawBlockSize != 0:
		return bad("CBC input must be a multiple of %d bytes, got %d", rawBlockSize, len(in))
	case o.Mode == RawCBCPad && !encrypt && (len(in) == 0 || len(in)%rawBlockSize != 0):
		return bad("CBC_PAD ciphertext must be a non-zero multiple of %d bytes, got %d", rawBlockSize, len(in))
	case o.Mode == RawGCM && !encrypt && len(in) < GCMTagSize:
		return bad("GCM ciphertext must hold the %d-byte tag", GCMTagSize)
	}
	return nil
}

// args is the operation o on in with key object h, for Once.
func (o RawOp) args(h pkcs11.ObjectHandle, encrypt bool, in []byte) onceArgs {
	op, outLen := opDecrypt, len(in)
	if encrypt {
		// At most a block of padding (CBC_PAD) or a tag (GCM) more.
		op, outLen = opEncrypt, len(in)+rawBlockSize
	}
	a := onceArgs{op: op, key: h, in: in, outLen: outLen}
	switch o.Mode {
	case RawCBC:
		a.mech, a.param = pkcs11.CKM_AES_CBC, o.IV
	case RawCBCPad:
		a.mech, a.param = pkcs11.CKM_AES_CBC_PAD, o.IV
	case RawCTR:
		// CK_AES_CTR_PARAMS: CK_ULONG ulCounterBits, then the 16-byte block.
		p := make([]byte, 8+rawBlockSize)
		binary.NativeEndian.PutUint64(p, 128)
		copy(p[8:], o.IV)
		a.mech, a.param = pkcs11.CKM_AES_CTR, p
	default:
		a.mech, a.iv, a.aad = pkcs11.CKM_AES_GCM, o.IV, o.AAD
	}
	return a
}

func checkRawKey(k KeyRef) error {
	if k.Spec != keys.SpecSymmetricDefault || k.Usage != keys.UsageRawEncryptDecrypt {
		return fmt.Errorf("%w: raw AES needs a SYMMETRIC_DEFAULT key of usage %s, not %s %s", ErrInvalidInput, keys.UsageRawEncryptDecrypt, k.Spec, k.Usage)
	}
	return nil
}

// EncryptRaw encrypts with AES in the operation's mode inside the HSM.
func (p *Partition) EncryptRaw(ctx context.Context, k KeyRef, o RawOp, plaintext []byte) ([]byte, error) {
	if err := checkRawKey(k); err != nil {
		return nil, err
	}
	if err := o.Check(plaintext, true); err != nil {
		return nil, err
	}
	out, err := p.rawOnce(ctx, k, o, true, plaintext)
	if err != nil {
		return nil, fmt.Errorf("raw encrypt with key %s: %w", k.ID, err)
	}
	return out, nil
}

// DecryptRaw decrypts with AES in the operation's mode inside the HSM. A
// GCM tag that does not verify or a CBC_PAD padding that is wrong is
// ErrDecrypt.
func (p *Partition) DecryptRaw(ctx context.Context, k KeyRef, o RawOp, ciphertext []byte) ([]byte, error) {
	if err := checkRawKey(k); err != nil {
		return nil, err
	}
	if err := o.Check(ciphertext, false); err != nil {
		return nil, err
	}
	out, err := p.rawOnce(ctx, k, o, false, ciphertext)
	if err != nil {
		return nil, decryptError(k, err)
	}
	return out, nil
}

// rawOnce runs one raw operation, checked by its caller, under k's handle.
func (p *Partition) rawOnce(ctx context.Context, k KeyRef, o RawOp, encrypt bool, in []byte) ([]byte, error) {
	var out []byte
	err := p.withKey(ctx, k, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		var err error
		out, err = p.cryptOnce(sh, h, o, encrypt, in)
		return err
	})
	if err != nil {
		return nil, err // out is not read: an abandoned call may still set it
	}
	return out, nil
}

// cryptOnce runs one single-part encryption or decryption with key object
// h on session sh. A decryption the token rejects for its input (a tag
// or padding that does not verify) is ErrDecrypt.
func (p *Partition) cryptOnce(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, o RawOp, encrypt bool, in []byte) ([]byte, error) {
	out, err := p.m.Once(sh, o.args(h, encrypt, in))
	if encrypt {
		return out, err
	}
	return out, p.decryptResult(sh, err)
}
