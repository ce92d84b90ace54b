package broker

import (
	"context"
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
	// GCM followed by its tag), at most hsm.MaxRawInput bytes.
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
	ct, err := r.s.hsm.EncryptRaw(ctx, ref, op, req.Data)
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
	pt, err := r.s.hsm.DecryptRaw(ctx, ref, op, req.Data)
	if err != nil {
		return RawResult{}, err
	}
	return RawResult{KeyID: k.ID, Data: pt}, nil
}
