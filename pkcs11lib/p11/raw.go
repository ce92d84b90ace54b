package p11

import (
	"bytes"
	"math"
	"math/big"

	"google.golang.org/grpc/codes"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Raw AES limits: those of the broker's RawService.
const (
	maxRawInput = 64 << 10
	gcmTagSize  = 16
	aesBlock    = 16
)

// rawOp is a raw AES operation's broker parameters and, for a multi-part
// CBC, CBC_PAD or CTR operation, where it stands.
type rawOp struct {
	alg     pb.RawAlgorithm
	iv, aad []byte
	ctrBits uint64
	// pending is the input not yet processed: less than a block, or in a
	// CBC_PAD decryption one to sixteen bytes (the last block is held back
	// for the padding until Final).
	pending []byte
	// next is the IV of the next part of a CBC or CBC_PAD operation: the
	// last ciphertext block before it.
	next []byte
	// blocks is the number of blocks a CTR operation has processed; the
	// next counter block is iv plus blocks, modulo 2^ctrBits.
	blocks uint64
}

// streams reports whether Update returns output as it comes: every mode
// but GCM, whose tag covers the whole input (an encryption's tag comes
// last, and a decryption may release nothing before checking it).
func (r *rawOp) streams() bool { return r.alg != pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM }

// updateLen is the output of an Update of n more bytes: every whole block
// of the pending input and the new one; in CBC_PAD decryption, all but the
// last one to sixteen bytes.
func (r *rawOp) updateLen(enc bool, n int) int {
	total := len(r.pending) + n
	if r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD && !enc {
		if total == 0 {
			return 0
		}
		return (total - 1) / aesBlock * aesBlock
	}
	return total / aesBlock * aesBlock
}

// isRawKey reports whether a key serves the PKCS#11 AES mechanisms.
func isRawKey(md *pb.KeyMetadata) bool {
	return md.GetKeyUsage() == pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT
}

// prepareRaw checks an AES mechanism and its parameter against a secret
// key. Only keys made for raw AES (RAW_ENCRYPT_DECRYPT, as C_GenerateKey
// makes them) serve: a key of the broker's own ciphertext format gets
// CKR_KEY_FUNCTION_NOT_PERMITTED.
func (m *Module) prepareRaw(op *cryptoOp) uint64 {
	if op.obj.class != CKO_SECRET_KEY {
		return CKR_KEY_TYPE_INCONSISTENT
	}
	mech := op.mech
	r := &rawOp{}
	switch mech.Type {
	case CKM_AES_CBC, CKM_AES_CBC_PAD:
		if len(mech.Param) != aesBlock {
			return CKR_MECHANISM_PARAM_INVALID
		}
		r.alg, r.iv, r.next = pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, mech.Param, mech.Param
		if mech.Type == CKM_AES_CBC_PAD {
			r.alg = pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD
		}
	case CKM_AES_CTR:
		if !mech.HasParam || mech.CounterBits == 0 || mech.CounterBits > 128 {
			return CKR_MECHANISM_PARAM_INVALID
		}
		r.alg, r.iv, r.ctrBits = pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR, mech.IV, mech.CounterBits
	case CKM_AES_GCM:
		// The broker's tag is 128 bits; the IV is the caller's.
		if !mech.HasParam || len(mech.IV) == 0 || len(mech.IV) > 128 || mech.TagBits != 128 {
			return CKR_MECHANISM_PARAM_INVALID
		}
		r.alg, r.iv, r.aad = pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM, mech.IV, mech.AAD
	default:
		return CKR_MECHANISM_INVALID
	}
	if !isRawKey(op.obj.meta) {
		return CKR_KEY_FUNCTION_NOT_PERMITTED
	}
	op.raw = r
	return CKR_OK
}

// LenRangeErr is the error for an input whose length an operation of kind
// (0 sign, 1 verify, 2 encrypt, 3 decrypt, as C_SignInit and its kin
// number them) cannot take: the ciphertext's own code for decryption.
func LenRangeErr(kind int) uint64 {
	if kind == opDecrypt {
		return CKR_ENCRYPTED_DATA_LEN_RANGE
	}
	return CKR_DATA_LEN_RANGE
}

// computeRaw is a single-part operation (C_Encrypt, C_Decrypt) on op.buf,
// or the Final of a GCM one, which buffers: it checks the input's length as
// PKCS#11 words it, then asks the broker, in one call (CTR: two where a
// counter of fewer than 128 bits wraps).
func (m *Module) computeRaw(op *cryptoOp) ([]byte, uint64) {
	in := op.buf
	enc := op.kind == opEncrypt
	r := op.raw
	lenErr := LenRangeErr(op.kind)
	// The broker's limits (hsm.RawOp.Check): a plaintext of at most
	// maxRawInput bytes; a GCM or CBC_PAD ciphertext one tag or padding
	// block longer, so that what C_Encrypt made C_Decrypt opens.
	limit := maxRawInput
	if !enc && (r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM || r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD) {
		limit += aesBlock
	}
	switch {
	case len(in) > limit:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC && len(in)%aesBlock != 0:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD && !enc && (len(in) == 0 || len(in)%aesBlock != 0):
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM && !enc && len(in) < gcmTagSize:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR:
		return m.ctrRun(op, 0, in)
	}
	if len(in) == 0 && r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC {
		return []byte{}, CKR_OK
	}
	return m.rawCall(op, r.alg, r.iv, in)
}

// rawUpdate is C_EncryptUpdate or C_DecryptUpdate of CBC, CBC_PAD or CTR:
// it returns the output of every whole block it can release (see
// updateLen) and keeps the rest; the state moves on only on success.
func (m *Module) rawUpdate(op *cryptoOp, data []byte) ([]byte, uint64) {
	r := op.raw
	all := append(bytes.Clone(r.pending), data...)
	n := r.updateLen(op.kind == opEncrypt, len(data))
	out, rv := m.rawBlocks(op, all[:n])
	if rv != CKR_OK {
		return nil, rv
	}
	r.pending = bytes.Clone(all[n:])
	return out, CKR_OK
}

// rawBlocks processes whole blocks of a multi-part operation, at most
// maxRawInput bytes a call, and moves its chaining on: in CBC (and the
// middle parts of CBC_PAD, which are plain CBC) each part's IV is the last
// ciphertext block before it; in CTR the counter advances by the blocks.
func (m *Module) rawBlocks(op *cryptoOp, in []byte) ([]byte, uint64) {
	r := op.raw
	if len(in) == 0 {
		return []byte{}, CKR_OK
	}
	if r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR {
		out, rv := m.ctrRun(op, r.blocks, in)
		if rv == CKR_OK {
			r.blocks += uint64(len(in) / aesBlock)
		}
		return out, rv
	}
	out := make([]byte, 0, len(in))
	next := r.next
	for off := 0; off < len(in); {
		part := in[off:min(len(in), off+maxRawInput)]
		res, rv := m.rawCall(op, pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, next, part)
		if rv != CKR_OK {
			return nil, rv
		}
		if len(res) != len(part) {
			m.log.Error("raw CBC: the broker's output is not as long as the input", "key", op.obj.keyID)
			return nil, CKR_DEVICE_ERROR
		}
		ct := res
		if op.kind == opDecrypt {
			ct = part
		}
		next = bytes.Clone(ct[len(ct)-aesBlock:])
		out = append(out, res...)
		off += len(part)
	}
	r.next = next
	return out, CKR_OK
}

// rawFinal is C_EncryptFinal or C_DecryptFinal of CBC, CBC_PAD or CTR: the
// pending input, which in CBC must be none, in CBC_PAD decryption exactly
// the last block (its padding checked by the broker), in CBC_PAD encryption
// gets its padding, and in CTR is the last partial block.
func (m *Module) rawFinal(op *cryptoOp) ([]byte, uint64) {
	r := op.raw
	enc := op.kind == opEncrypt
	switch r.alg {
	case pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC:
		if len(r.pending) != 0 {
			return nil, LenRangeErr(op.kind)
		}
		return []byte{}, CKR_OK
	case pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR:
		return m.ctrRun(op, r.blocks, r.pending)
	}
	if !enc && len(r.pending) != aesBlock {
		return nil, CKR_ENCRYPTED_DATA_LEN_RANGE
	}
	return m.rawCall(op, pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD, r.next, r.pending)
}

// ctrRun encrypts or decrypts in (CTR is its own inverse) from block
// number first of the operation. The counter is the low ctrBits bits of
// the counter block and counts modulo 2^ctrBits, as PKCS#11 defines
// CK_AES_CTR_PARAMS; the bits above it stay. The broker counts with all
// 128 bits (and wraps them itself), so where a shorter counter wraps inside
// the input the library starts a new call from the wrapped block. An
// operation longer than 2^ctrBits blocks would use a counter block twice
// (the keystream would repeat): CKR_DATA_LEN_RANGE.
func (m *Module) ctrRun(op *cryptoOp, first uint64, in []byte) ([]byte, uint64) {
	r := op.raw
	nblocks := uint64(len(in)+aesBlock-1) / aesBlock
	if r.ctrBits < 64 && first+nblocks > 1<<r.ctrBits {
		return nil, CKR_DATA_LEN_RANGE
	}
	out := make([]byte, 0, len(in))
	for len(in) > 0 {
		cb := ctrAdd(r.iv, r.ctrBits, first)
		take := min(len(in), maxRawInput)
		if room := ctrRoom(cb, r.ctrBits); uint64(take+aesBlock-1)/aesBlock > room {
			take = int(room) * aesBlock
		}
		res, rv := m.rawCall(op, r.alg, cb, in[:take])
		if rv != CKR_OK {
			return nil, rv
		}
		if len(res) != take {
			m.log.Error("raw CTR: the broker's output is not as long as the input", "key", op.obj.keyID)
			return nil, CKR_DEVICE_ERROR
		}
		out = append(out, res...)
		in = in[take:]
		first += uint64(take / aesBlock)
	}
	return out, CKR_OK
}

// ctrAdd is counter block cb advanced by k blocks: its low bits (the
// counter) plus k modulo 2^bits, its high bits unchanged.
func ctrAdd(cb []byte, bits, k uint64) []byte {
	mod := new(big.Int).Lsh(big.NewInt(1), uint(bits))
	c := new(big.Int).SetBytes(cb)
	low := new(big.Int).Mod(c, mod)
	high := c.Sub(c, low)
	low.Add(low, new(big.Int).SetUint64(k)).Mod(low, mod)
	return high.Add(high, low).FillBytes(make([]byte, aesBlock))
}

// ctrRoom is the number of blocks from counter block cb before a counter
// of bits bits (fewer than 128) wraps to zero, the block cb included; for
// 128 bits the broker wraps, and there is no limit here.
func ctrRoom(cb []byte, bits uint64) uint64 {
	if bits >= 128 {
		return math.MaxUint64
	}
	mod := new(big.Int).Lsh(big.NewInt(1), uint(bits))
	room := new(big.Int).Sub(mod, new(big.Int).Mod(new(big.Int).SetBytes(cb), mod))
	if !room.IsUint64() {
		return math.MaxUint64
	}
	return room.Uint64()
}

// rawCall is one RawEncrypt or RawDecrypt of the operation's key.
func (m *Module) rawCall(op *cryptoOp, alg pb.RawAlgorithm, iv, in []byte) ([]byte, uint64) {
	cl, rv := m.conn(op.obj.tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	if op.kind == opEncrypt {
		resp, err := cl.Raw.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: op.obj.keyID, Algorithm: alg, Iv: iv, AdditionalData: op.raw.aad, Plaintext: in})
		if err != nil {
			return nil, m.rpcRV("RawEncrypt", err)
		}
		return resp.GetCiphertext(), CKR_OK
	}
	resp, err := cl.Raw.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: op.obj.keyID, Algorithm: alg, Iv: iv, AdditionalData: op.raw.aad, Ciphertext: in})
	if err != nil {
		if client.Code(err) == codes.InvalidArgument {
			// A wrong tag or padding: the ciphertext, not the call.
			return nil, CKR_ENCRYPTED_DATA_INVALID
		}
		return nil, m.rpcRV("RawDecrypt", err)
	}
	return resp.GetPlaintext(), CKR_OK
}
