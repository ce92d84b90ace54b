package p11

import (
	"math/big"

	"google.golang.org/grpc/codes"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Raw AES limits: those of the broker's RawService.
const (
	maxRawInput = 64 << 10
	gcmTagSize  = 16
)

// rawOp is a raw AES operation's broker parameters.
type rawOp struct {
	alg     pb.RawAlgorithm
	iv, aad []byte
	ctrBits uint64
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
		if len(mech.Param) != 16 {
			return CKR_MECHANISM_PARAM_INVALID
		}
		r.alg, r.iv = pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, mech.Param
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

// computeRaw checks the input's length as PKCS#11 words it, then asks the
// broker.
func (m *Module) computeRaw(op *cryptoOp) ([]byte, uint64) {
	in := op.buf
	enc := op.kind == opEncrypt
	r := op.raw
	lenErr := uint64(CKR_DATA_LEN_RANGE)
	if !enc {
		lenErr = CKR_ENCRYPTED_DATA_LEN_RANGE
	}
	switch {
	case len(in) > maxRawInput+gcmTagSize || len(in) > maxRawInput && r.alg != pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC && len(in)%16 != 0:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD && !enc && (len(in) == 0 || len(in)%16 != 0):
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM && !enc && len(in) < gcmTagSize:
		return nil, lenErr
	case r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR && ctrWraps(r.iv, r.ctrBits, len(in)):
		// The broker counts with all 128 bits; a shorter counter that
		// would wrap inside this input would give another keystream.
		return nil, CKR_DATA_LEN_RANGE
	}
	if len(in) == 0 && (r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC || r.alg == pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR) {
		return []byte{}, CKR_OK
	}
	cl, rv := m.conn(op.obj.tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	if enc {
		resp, err := cl.Raw.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: op.obj.keyID, Algorithm: r.alg, Iv: r.iv, AdditionalData: r.aad, Plaintext: in})
		if err != nil {
			return nil, m.rpcRV("RawEncrypt", err)
		}
		return resp.GetCiphertext(), CKR_OK
	}
	resp, err := cl.Raw.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: op.obj.keyID, Algorithm: r.alg, Iv: r.iv, AdditionalData: r.aad, Ciphertext: in})
	if err != nil {
		if client.Code(err) == codes.InvalidArgument {
			// A wrong tag or padding: the ciphertext, not the call.
			return nil, CKR_ENCRYPTED_DATA_INVALID
		}
		return nil, m.rpcRV("RawDecrypt", err)
	}
	return resp.GetPlaintext(), CKR_OK
}

// ctrWraps reports whether the low bits of the counter block wrap while
// counting through n bytes.
func ctrWraps(block []byte, bits uint64, n int) bool {
	if bits >= 128 {
		return false
	}
	blocks := big.NewInt(int64((n + 15) / 16))
	mod := new(big.Int).Lsh(big.NewInt(1), uint(bits))
	low := new(big.Int).Mod(new(big.Int).SetBytes(block), mod)
	return low.Add(low, blocks).Cmp(mod) > 0
}
