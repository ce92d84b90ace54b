package broker

import (
	"context"
	"math/big"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
)

// RawAES is the core of RawService (raw_grpc.go), for
// libhsmbroker-pkcs11.so: AES in the caller's mode and IV on keys born
// with usage RAW_ENCRYPT_DECRYPT, which serve nothing else and never
// rotate, so raw calls can neither forge nor open the broker's ciphertext
// format. Its errors name the fields of RawService's messages.
type RawAES struct{ s *Service }

// Raw returns the raw AES core of s.
func (s *Service) Raw() *RawAES { return &RawAES{s: s} }

// RawRequest is one raw AES operation.
type RawRequest struct {
	KeyID string      // id, ARN or alias of a RAW_ENCRYPT_DECRYPT key
	Mode  hsm.RawMode // hsm.RawCBC, RawCBCPad, RawCTR or RawGCM
	IV    []byte      // 16 bytes; GCM 1 to hsm.MaxRawGCMIV
	AAD   []byte      // GCM only
	// Data is the plaintext to encrypt or the ciphertext to decrypt (in
	// GCM followed by its tag): a plaintext of at most hsm.MaxRawInput
	// bytes, and a GCM or CBC_PAD ciphertext of at most 16 more.
	Data []byte
}

// RawResult is the output of a raw operation.
type RawResult struct {
	KeyID string // the key's id
	Data  []byte // in GCM, the ciphertext is followed by its tag
}

// rawOp validates a raw request's mode, IV, additional data and input, all
// before the key is looked up.
func rawOp(req RawRequest, encrypt bool) (hsm.RawOp, error) {
	switch req.Mode {
	case hsm.RawCBC, hsm.RawCBCPad, hsm.RawCTR, hsm.RawGCM:
	default:
		return hsm.RawOp{}, &keys.FieldError{Field: "Algorithm", Problem: "must be one of AES_CBC, AES_CBC_PAD, AES_CTR, AES_GCM"}
	}
	op := hsm.RawOp{Mode: req.Mode, IV: req.IV, AAD: req.AAD}
	if err := op.Check(req.Data, encrypt); err != nil {
		return op, &keys.FieldError{Field: "Iv, AdditionalData or data", Problem: strings.TrimPrefix(err.Error(), hsm.ErrInvalidInput.Error()+": ")}
	}
	return op, nil
}

// key resolves and authorizes a RAW_ENCRYPT_DECRYPT key and returns the
// HSM's handle on its one version.
func (r *RawAES) key(ctx context.Context, ref string) (cluster.Key, hsm.KeyRef, error) {
	k, err := r.s.resolveUsable(ctx, "KeyId", ref, keys.UsageRawEncryptDecrypt)
	if err != nil {
		return k, hsm.KeyRef{}, err
	}
	h, ok := hsmRef(k, k.CurrentVersion)
	if !ok {
		return k, h, errInvalidCiphertext
	}
	return k, h, nil
}

// Encrypt encrypts with AES in the caller's mode and IV.
func (r *RawAES) Encrypt(ctx context.Context, req RawRequest) (RawResult, error) {
	op, err := rawOp(req, true)
	if err != nil {
		return RawResult{}, err
	}
	k, ref, err := r.key(ctx, req.KeyID)
	if err != nil {
		return RawResult{}, err
	}
	ct, err := r.crypt(ctx, ref, op, req.Data, true)
	if err != nil {
		return RawResult{}, err
	}
	return RawResult{KeyID: k.ID, Data: ct}, nil
}

// Decrypt decrypts with AES in the caller's mode and IV.
func (r *RawAES) Decrypt(ctx context.Context, req RawRequest) (RawResult, error) {
	op, err := rawOp(req, false)
	if err != nil {
		return RawResult{}, err
	}
	k, ref, err := r.key(ctx, req.KeyID)
	if err != nil {
		return RawResult{}, err
	}
	pt, err := r.crypt(ctx, ref, op, req.Data, false)
	if err != nil {
		return RawResult{}, err
	}
	return RawResult{KeyID: k.ID, Data: pt}, nil
}

// crypt runs op over data in the HSM. In CTR the counter block counts
// modulo 2^128 (PKCS#11's CKM_AES_CTR with ulCounterBits 128): the block
// after ff..ff is 00..00. A token may refuse to wrap the counter within one
// call (SoftHSM answers CKR_DATA_LEN_RANGE, an input error the checks
// above do not expect, so it would go back as Internal), so an input that
// wraps it is run as two calls, the second from the all-zero block.
func (r *RawAES) crypt(ctx context.Context, ref hsm.KeyRef, op hsm.RawOp, data []byte, encrypt bool) ([]byte, error) {
	call := r.s.hsm.DecryptRaw
	if encrypt {
		call = r.s.hsm.EncryptRaw
	}
	at := len(data)
	if op.Mode == hsm.RawCTR {
		at = ctrWrapAt(op.IV, len(data))
	}
	if at == len(data) {
		return call(ctx, ref, op, data)
	}
	first, err := call(ctx, ref, op, data[:at])
	if err != nil {
		return nil, err
	}
	op.IV = make([]byte, len(op.IV))
	rest, err := call(ctx, ref, op, data[at:])
	if err != nil {
		return nil, err
	}
	return append(first, rest...), nil
}

// ctrWrapAt is the number of bytes of an n-byte CTR input that come
// before its 128-bit counter block wraps to zero, starting from the block
// cb; n when it does not wrap.
func ctrWrapAt(cb []byte, n int) int {
	room := new(big.Int).Lsh(big.NewInt(1), 128)
	room.Sub(room, new(big.Int).SetBytes(cb)) // blocks up to and including ff..ff
	if room.Cmp(big.NewInt(int64((n+15)/16))) >= 0 {
		return n
	}
	return int(room.Int64()) * 16
}
