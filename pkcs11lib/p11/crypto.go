package p11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"hash"
	"math/big"
	"sync"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Mechanism is a CK_MECHANISM, its parameter decoded by the C layer.
type Mechanism struct {
	Type uint64
	// Param is the raw parameter for mechanisms whose parameter is a byte
	// string (the IV of CBC); nil otherwise.
	Param []byte
	// HasParam reports that a parameter structure of the right size was
	// given and decoded into the fields below; BadParam that one was given
	// with the wrong size.
	HasParam, BadParam bool
	// RSA PSS and OAEP.
	HashAlg, MGF, SaltLen uint64
	OAEPSource            uint64
	OAEPLabel             []byte
	// AES GCM and CTR.
	IV, AAD     []byte
	TagBits     uint64
	CounterBits uint64
}

// op kinds.
const (
	opSign = iota
	opVerify
	opEncrypt
	opDecrypt
)

// cryptoOp is an operation between its Init and its end.
type cryptoOp struct {
	// run lets one call at a time work on the operation: its broker calls
	// run without the session's lock, and a multi-part encryption's state
	// moves on with each Update.
	run        sync.Mutex
	kind       int
	mech       Mechanism
	obj        *object
	pub        any
	hash       hash.Hash // for mechanisms that hash in the library
	buf        []byte    // buffered input of a multi-part operation
	parts      bool      // an Update was called
	result     []byte    // computed, waiting for a big enough buffer
	haveResult bool
	// resultSingle: the kept result is the one-call form's (C_Sign,
	// C_Encrypt...), of the input whose SHA-256 is resultInput; otherwise
	// a Final's.
	resultSingle bool
	resultInput  [sha256.Size]byte
	raw          *rawOp
}

func (s *session) slot(kind int) **cryptoOp {
	switch kind {
	case opSign:
		return &s.sign
	case opVerify:
		return &s.verify
	case opEncrypt:
		return &s.enc
	}
	return &s.dec
}

// Mechanisms lists the mechanisms of C_GetMechanismList with their
// CK_MECHANISM_INFO (key sizes in bits, flags).
var Mechanisms = []struct {
	Type, MinKey, MaxKey, Flags uint64
}{
	{CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, CKF_GENERATE_KEY_PAIR},
	{CKM_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA256_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA384_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA512_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY},
	{CKM_RSA_PKCS_OAEP, 2048, 4096, CKF_ENCRYPT | CKF_DECRYPT},
	{CKM_EC_KEY_PAIR_GEN, 256, 521, CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS},
	{CKM_ECDSA, 256, 521, CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS},
	{CKM_ECDSA_SHA256, 256, 521, CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS},
	{CKM_ECDSA_SHA384, 256, 521, CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS},
	{CKM_ECDSA_SHA512, 256, 521, CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS},
	{CKM_AES_KEY_GEN, 32, 32, CKF_GENERATE}, // AES sizes are in bytes
	{CKM_AES_CBC, 32, 32, CKF_ENCRYPT | CKF_DECRYPT},
	{CKM_AES_CBC_PAD, 32, 32, CKF_ENCRYPT | CKF_DECRYPT},
	{CKM_AES_CTR, 32, 32, CKF_ENCRYPT | CKF_DECRYPT},
	{CKM_AES_GCM, 32, 32, CKF_ENCRYPT | CKF_DECRYPT},
}

// MechanismInfo is C_GetMechanismInfo.
func (m *Module) MechanismInfo(slot, typ uint64) (minKey, maxKey, flags uint64, rv uint64) {
	if rv := m.checkSlot(slot); rv != CKR_OK {
		return 0, 0, 0, rv
	}
	for _, mi := range Mechanisms {
		if mi.Type == typ {
			return mi.MinKey, mi.MaxKey, mi.Flags, CKR_OK
		}
	}
	return 0, 0, 0, CKR_MECHANISM_INVALID
}

// hashOf is the hash of a CKM_SHA* or CKG_MGF1_* value.
func hashOfMech(ckm uint64) crypto.Hash {
	switch ckm {
	case CKM_SHA_1:
		return crypto.SHA1
	case CKM_SHA256:
		return crypto.SHA256
	case CKM_SHA384:
		return crypto.SHA384
	case CKM_SHA512:
		return crypto.SHA512
	}
	return 0
}

func hashOfMGF(mgf uint64) crypto.Hash {
	switch mgf {
	case CKG_MGF1_SHA1:
		return crypto.SHA1
	case CKG_MGF1_SHA256:
		return crypto.SHA256
	case CKG_MGF1_SHA384:
		return crypto.SHA384
	case CKG_MGF1_SHA512:
		return crypto.SHA512
	}
	return 0
}

func newHash(h crypto.Hash) hash.Hash {
	switch h {
	case crypto.SHA1:
		return sha1.New()
	case crypto.SHA256:
		return sha256.New()
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return nil
}

// signPlan is how a signing mechanism maps to the broker: which hash the
// library computes over the data (0: the data is already a digest or a
// DigestInfo), and whether it is PSS, PKCS #1 v1.5 or ECDSA.
type signPlan struct {
	hash   crypto.Hash
	family int
}

const (
	famPKCS1 = iota
	famPSS
	famECDSA
)

// pssMechHash is the hash each hashing PSS mechanism names.
var pssMechHash = map[uint64]crypto.Hash{CKM_SHA256_RSA_PKCS_PSS: crypto.SHA256, CKM_SHA384_RSA_PKCS_PSS: crypto.SHA384, CKM_SHA512_RSA_PKCS_PSS: crypto.SHA512}

func planSign(mech Mechanism) (signPlan, uint64) {
	switch mech.Type {
	case CKM_RSA_PKCS:
		return signPlan{0, famPKCS1}, CKR_OK
	case CKM_SHA256_RSA_PKCS:
		return signPlan{crypto.SHA256, famPKCS1}, CKR_OK
	case CKM_SHA384_RSA_PKCS:
		return signPlan{crypto.SHA384, famPKCS1}, CKR_OK
	case CKM_SHA512_RSA_PKCS:
		return signPlan{crypto.SHA512, famPKCS1}, CKR_OK
	case CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS:
		if !mech.HasParam {
			return signPlan{}, CKR_MECHANISM_PARAM_INVALID
		}
		h := hashOfMech(mech.HashAlg)
		if h == 0 || h == crypto.SHA1 || hashOfMGF(mech.MGF) != h || mech.SaltLen != uint64(h.Size()) {
			// The broker's PSS salt is as long as the hash, with MGF1 of the same hash.
			return signPlan{}, CKR_MECHANISM_PARAM_INVALID
		}
		if mech.Type == CKM_RSA_PKCS_PSS {
			return signPlan{0, famPSS}, CKR_OK
		}
		// The hashing mechanisms name their hash; the parameters must agree.
		if w := pssMechHash[mech.Type]; w != h {
			return signPlan{}, CKR_MECHANISM_PARAM_INVALID
		}
		return signPlan{h, famPSS}, CKR_OK
	case CKM_ECDSA:
		return signPlan{0, famECDSA}, CKR_OK
	case CKM_ECDSA_SHA256:
		return signPlan{crypto.SHA256, famECDSA}, CKR_OK
	case CKM_ECDSA_SHA384:
		return signPlan{crypto.SHA384, famECDSA}, CKR_OK
	case CKM_ECDSA_SHA512:
		return signPlan{crypto.SHA512, famECDSA}, CKR_OK
	}
	return signPlan{}, CKR_MECHANISM_INVALID
}

// opInit starts an operation of kind on key handle key.
func (m *Module) opInit(h uint64, kind int, mech Mechanism, key uint64) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	s.mu.Lock()
	busy := *s.slot(kind) != nil
	s.mu.Unlock()
	if busy {
		return CKR_OPERATION_ACTIVE
	}
	if mech.BadParam {
		return CKR_MECHANISM_PARAM_INVALID
	}
	o, ok := m.object(s.tok, key)
	if !ok {
		return CKR_KEY_HANDLE_INVALID
	}
	op := &cryptoOp{kind: kind, mech: mech, obj: o}
	if rv := m.prepare(op); rv != CKR_OK {
		return rv
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if *s.slot(kind) != nil {
		return CKR_OPERATION_ACTIVE
	}
	*s.slot(kind) = op
	return CKR_OK
}

// prepare checks that the mechanism suits the key and the operation.
func (m *Module) prepare(op *cryptoOp) uint64 {
	o := op.obj
	usage := o.meta.GetKeyUsage()
	switch op.kind {
	case opSign, opVerify:
		plan, rv := planSign(op.mech)
		if rv != CKR_OK {
			return rv
		}
		want := uint64(CKO_PRIVATE_KEY)
		if op.kind == opVerify {
			want = CKO_PUBLIC_KEY
		}
		if o.class != want && !(op.kind == opVerify && o.class == CKO_PRIVATE_KEY) {
			return CKR_KEY_TYPE_INCONSISTENT
		}
		if (plan.family == famECDSA) != (o.keyType() == CKK_EC) || o.keyType() == CKK_AES {
			return CKR_KEY_TYPE_INCONSISTENT
		}
		if usage != pb.KeyUsage_KEY_USAGE_SIGN_VERIFY {
			return CKR_KEY_FUNCTION_NOT_PERMITTED
		}
		if plan.hash != 0 {
			op.hash = newHash(plan.hash)
		}
	case opEncrypt, opDecrypt:
		if o.keyType() == CKK_AES {
			return m.prepareRaw(op)
		}
		if op.mech.Type != CKM_RSA_PKCS_OAEP {
			// CKM_RSA_PKCS is the token's for signing only (PKCS#1 v1.5
			// encryption is not offered): for this function it is not a
			// mechanism of the token.
			if isAESMech(op.mech.Type) {
				return CKR_KEY_TYPE_INCONSISTENT
			}
			return CKR_MECHANISM_INVALID
		}
		if o.keyType() != CKK_RSA {
			return CKR_KEY_TYPE_INCONSISTENT
		}
		if rv := checkOAEP(op.mech); rv != CKR_OK {
			return rv
		}
		if op.kind == opDecrypt && o.class != CKO_PRIVATE_KEY || op.kind == opEncrypt && o.class != CKO_PUBLIC_KEY {
			return CKR_KEY_TYPE_INCONSISTENT
		}
		if usage != pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT {
			return CKR_KEY_FUNCTION_NOT_PERMITTED
		}
	}
	if o.class != CKO_SECRET_KEY && (op.kind == opVerify || op.kind == opEncrypt || op.mech.Type == CKM_ECDSA || op.mech.Type == CKM_ECDSA_SHA256 || op.mech.Type == CKM_ECDSA_SHA384 || op.mech.Type == CKM_ECDSA_SHA512 || op.kind == opSign) {
		pub, rv := m.publicKey(o)
		if rv != CKR_OK {
			return rv
		}
		op.pub = pub
	}
	return CKR_OK
}

func isAESMech(t uint64) bool {
	return t == CKM_AES_CBC || t == CKM_AES_CBC_PAD || t == CKM_AES_CTR || t == CKM_AES_GCM || t == CKM_AES_ECB
}

// checkOAEP accepts SHA-1 and SHA-256 with MGF1 of the same hash and no label.
func checkOAEP(mech Mechanism) uint64 {
	if !mech.HasParam {
		return CKR_MECHANISM_PARAM_INVALID
	}
	h := hashOfMech(mech.HashAlg)
	if (h != crypto.SHA1 && h != crypto.SHA256) || hashOfMGF(mech.MGF) != h {
		return CKR_MECHANISM_PARAM_INVALID
	}
	if len(mech.OAEPLabel) != 0 || (mech.OAEPSource != 0 && mech.OAEPSource != CKZ_DATA_SPECIFIED) {
		return CKR_MECHANISM_PARAM_INVALID
	}
	return CKR_OK
}

// SignInit, VerifyInit, EncryptInit and DecryptInit are the C_*Init calls.
func (m *Module) SignInit(h uint64, mech Mechanism, key uint64) uint64 {
	return m.opInit(h, opSign, mech, key)
}

func (m *Module) VerifyInit(h uint64, mech Mechanism, key uint64) uint64 {
	return m.opInit(h, opVerify, mech, key)
}

func (m *Module) EncryptInit(h uint64, mech Mechanism, key uint64) uint64 {
	return m.opInit(h, opEncrypt, mech, key)
}

func (m *Module) DecryptInit(h uint64, mech Mechanism, key uint64) uint64 {
	return m.opInit(h, opDecrypt, mech, key)
}

// active returns the session's operation of kind, locked by the session.
func (m *Module) active(h uint64, kind int) (*session, **cryptoOp, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return nil, nil, rv
	}
	s.mu.Lock()
	slot := s.slot(kind)
	if *slot == nil {
		s.mu.Unlock()
		return nil, nil, CKR_OPERATION_NOT_INITIALIZED
	}
	return s, slot, CKR_OK
}

// EndOperation ends session h's active operation of kind (0 sign, 1
// verify, 2 encrypt, 3 decrypt, as C_SignInit and its kin number them) and
// returns rv: the error of a call refused before it reached the operation
// (a NULL buffer, an input over MaxBuffered), or the session's error if
// h names no open session (ArgumentsError). PKCS#11 ends the operation on
// every error of C_Encrypt, C_EncryptUpdate and their kin other than
// CKR_BUFFER_TOO_SMALL, so the next Init must not answer
// CKR_OPERATION_ACTIVE.
func (m *Module) EndOperation(h uint64, kind int, rv uint64) uint64 {
	if kind < opSign || kind > opDecrypt {
		return rv
	}
	s, slot, r := m.active(h, kind)
	switch r {
	case CKR_OK:
	case CKR_OPERATION_NOT_INITIALIZED:
		return rv
	default:
		// The session's own error (invalid, closed, library not
		// initialized) comes before the call's.
		return r
	}
	*slot = nil
	s.mu.Unlock()
	return rv
}

// update feeds data to a multi-part signature or verification.
func (m *Module) update(h uint64, kind int, data []byte) uint64 {
	s, slot, op, rv := m.lockOp(h, kind)
	if rv != CKR_OK {
		return rv
	}
	defer op.run.Unlock()
	defer s.mu.Unlock()
	if op.haveResult {
		// A result was computed (a length query) and waits for its
		// buffer: more input would be dropped from it, so it is refused,
		// and, as PKCS#11 has an Update's errors do, ends the operation.
		*slot = nil
		return CKR_OPERATION_ACTIVE
	}
	op.parts = true
	if op.hash != nil {
		op.hash.Write(data)
		return CKR_OK
	}
	if len(op.buf)+len(data) > MaxBuffered {
		*slot = nil
		return CKR_DATA_LEN_RANGE
	}
	op.buf = append(op.buf, data...)
	return CKR_OK
}

// Sign is C_Sign; SignUpdate and SignFinal its multi-part form.
func (m *Module) Sign(h uint64, data []byte, out Out) ([]byte, uint64) {
	return m.finish(h, opSign, data, true, out)
}

func (m *Module) SignUpdate(h uint64, data []byte) uint64 { return m.update(h, opSign, data) }

func (m *Module) SignFinal(h uint64, out Out) ([]byte, uint64) {
	return m.finish(h, opSign, nil, false, out)
}

// Decrypt is C_Decrypt; DecryptUpdate and DecryptFinal its multi-part form.
func (m *Module) Decrypt(h uint64, data []byte, out Out) ([]byte, uint64) {
	return m.finish(h, opDecrypt, data, true, out)
}

func (m *Module) DecryptFinal(h uint64, out Out) ([]byte, uint64) {
	return m.finish(h, opDecrypt, nil, false, out)
}

// Encrypt is C_Encrypt; EncryptUpdate and EncryptFinal its multi-part form.
func (m *Module) Encrypt(h uint64, data []byte, out Out) ([]byte, uint64) {
	return m.finish(h, opEncrypt, data, true, out)
}

func (m *Module) EncryptFinal(h uint64, out Out) ([]byte, uint64) {
	return m.finish(h, opEncrypt, nil, false, out)
}

// EncryptUpdate and DecryptUpdate are C_EncryptUpdate and C_DecryptUpdate.
// They return the part's output, its length and the return value. AES CBC,
// CBC_PAD and CTR return output as it comes (see rawUpdate); GCM and OAEP
// buffer their input and return it all at Final. The output follows the
// two-call convention: a length query (out.Query) or a short buffer
// (CKR_BUFFER_TOO_SMALL) gets the length, consumes nothing and keeps the
// operation, and the length is known without asking the broker.
func (m *Module) EncryptUpdate(h uint64, data []byte, out Out) ([]byte, uint64, uint64) {
	return m.cryptUpdate(h, opEncrypt, data, out)
}

func (m *Module) DecryptUpdate(h uint64, data []byte, out Out) ([]byte, uint64, uint64) {
	return m.cryptUpdate(h, opDecrypt, data, out)
}

// lockOp takes the operation of kind in session h for one call, with its
// run lock and the session's lock held; the caller unlocks both.
func (m *Module) lockOp(h uint64, kind int) (*session, **cryptoOp, *cryptoOp, uint64) {
	s, slot, rv := m.active(h, kind)
	if rv != CKR_OK {
		return nil, nil, nil, rv
	}
	op := *slot
	s.mu.Unlock()
	op.run.Lock()
	s.mu.Lock()
	if *slot != op {
		s.mu.Unlock()
		op.run.Unlock()
		return nil, nil, nil, CKR_OPERATION_NOT_INITIALIZED
	}
	return s, slot, op, CKR_OK
}

func (m *Module) cryptUpdate(h uint64, kind int, data []byte, out Out) ([]byte, uint64, uint64) {
	s, slot, op, rv := m.lockOp(h, kind)
	if rv != CKR_OK {
		return nil, 0, rv
	}
	s.mu.Unlock()
	defer op.run.Unlock()
	end := func(rv uint64) ([]byte, uint64, uint64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if *slot == op {
			*slot = nil
		}
		return nil, 0, rv
	}
	if op.haveResult {
		// A result waits for its buffer: no more input (see update).
		return end(CKR_OPERATION_ACTIVE)
	}
	if op.raw == nil || !op.raw.streams() {
		if len(op.buf)+len(data) > MaxBuffered {
			return end(CKR_DATA_LEN_RANGE)
		}
		if !out.Query {
			op.buf = append(op.buf, data...)
			op.parts = true
		}
		return []byte{}, 0, CKR_OK
	}
	need := uint64(op.raw.updateLen(kind == opEncrypt, len(data)))
	if out.Query {
		return nil, need, CKR_OK
	}
	if need > out.Cap {
		return nil, need, CKR_BUFFER_TOO_SMALL
	}
	res, rv := m.rawUpdate(op, data)
	if rv != CKR_OK {
		return end(rv)
	}
	if uint64(len(res)) != need {
		m.log.Error("raw AES: an Update's output is not the length announced", "key", op.obj.keyID)
		return end(CKR_DEVICE_ERROR)
	}
	op.parts = true
	return res, need, CKR_OK
}

// finish computes (or returns the kept) result of an operation. single is
// true for the one-call form, whose data is the whole input.
func (m *Module) finish(h uint64, kind int, data []byte, single bool, out Out) ([]byte, uint64) {
	s, slot, op, rv := m.lockOp(h, kind)
	if rv != CKR_OK {
		return nil, rv
	}
	defer op.run.Unlock()
	if op.haveResult {
		switch {
		case single != op.resultSingle:
			// A Final's result, asked for its length, then the one-call
			// form, or the reverse: the kept result is not of this call's
			// input. Refused, and (as C_Sign and its kin end the operation
			// on every error but a short buffer) ended.
			*slot = nil
			s.mu.Unlock()
			return nil, CKR_OPERATION_ACTIVE
		case single && sha256.Sum256(data) != op.resultInput:
			// The one-call form again, with other input than its length
			// query: the answer is this input's.
			op.result, op.haveResult = nil, false
			if op.hash != nil {
				op.hash.Reset()
			}
		default:
			res, rv := deliver(slot, op.result, out)
			s.mu.Unlock()
			return res, rv
		}
	}
	if single && op.parts {
		// The one-call form after an Update: refused and ended.
		*slot = nil
		s.mu.Unlock()
		return nil, CKR_OPERATION_ACTIVE
	}
	if single {
		if op.hash != nil {
			op.hash.Write(data)
		} else {
			if len(data) > MaxBuffered {
				*slot = nil
				s.mu.Unlock()
				return nil, CKR_DATA_LEN_RANGE
			}
			op.buf = data
		}
	}
	s.mu.Unlock()
	// The broker call runs without the session's lock; the operation stays
	// in its slot, so a second Init on the session still answers
	// CKR_OPERATION_ACTIVE.
	res, rv := m.compute(op, single)
	s.mu.Lock()
	defer s.mu.Unlock()
	if *slot != op {
		return nil, CKR_OPERATION_NOT_INITIALIZED
	}
	if rv != CKR_OK {
		*slot = nil
		return nil, rv
	}
	if single && (out.Query || uint64(len(res)) > out.Cap) {
		// Kept for the call that brings the buffer (deliver).
		op.resultSingle, op.resultInput = true, sha256.Sum256(data)
	}
	return deliver(slot, res, out)
}

func (m *Module) compute(op *cryptoOp, single bool) ([]byte, uint64) {
	if op.raw != nil {
		if !single && op.raw.streams() {
			return m.rawFinal(op)
		}
		return m.computeRaw(op)
	}
	input := op.buf
	if op.hash != nil {
		input = op.hash.Sum(nil)
	}
	switch op.kind {
	case opSign:
		return m.sign(op, input)
	case opDecrypt:
		return m.decryptOAEP(op, input)
	case opEncrypt:
		pub, ok := op.pub.(*rsa.PublicKey)
		if !ok {
			return nil, CKR_KEY_TYPE_INCONSISTENT
		}
		ct, err := rsa.EncryptOAEP(newHash(hashOfMech(op.mech.HashAlg)), rand.Reader, pub, input, nil)
		if err != nil {
			return nil, CKR_DATA_LEN_RANGE
		}
		return ct, CKR_OK
	}
	return nil, CKR_GENERAL_ERROR
}

func pkcs1Alg(h crypto.Hash) pb.SigningAlgorithm {
	switch h {
	case crypto.SHA256:
		return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256
	case crypto.SHA384:
		return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_384
	}
	return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_512
}

func pssAlg(h crypto.Hash) pb.SigningAlgorithm {
	switch h {
	case crypto.SHA256:
		return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256
	case crypto.SHA384:
		return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_384
	}
	return pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_512
}

// ecSize is the byte size of the curve's order, and the broker's ECDSA
// algorithm (whose digest size the input is fitted to) for the key spec.
func ecSize(spec pb.KeySpec) (int, int, pb.SigningAlgorithm) {
	switch spec {
	case pb.KeySpec_KEY_SPEC_ECC_NIST_P256:
		return 32, 32, pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256
	case pb.KeySpec_KEY_SPEC_ECC_NIST_P384:
		return 48, 48, pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_384
	}
	return 66, 64, pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_512
}

func (m *Module) sign(op *cryptoOp, input []byte) ([]byte, uint64) {
	plan, _ := planSign(op.mech)
	spec := op.obj.meta.GetKeySpec()
	var (
		alg    pb.SigningAlgorithm
		digest []byte
	)
	switch plan.family {
	case famPKCS1:
		if plan.hash != 0 {
			alg, digest = pkcs1Alg(plan.hash), input
			break
		}
		if h, d, ok := keys.SplitDigestInfo(input); ok {
			alg, digest = pkcs1Alg(h), d
		}
		if digest == nil {
			// The broker signs DigestInfos of SHA-256, SHA-384 and SHA-512 only.
			return nil, CKR_DATA_INVALID
		}
	case famPSS:
		h := hashOfMech(op.mech.HashAlg)
		if plan.hash == 0 && len(input) != h.Size() {
			return nil, CKR_DATA_LEN_RANGE
		}
		alg, digest = pssAlg(h), input
	case famECDSA:
		// ECDSA uses the leftmost bits of the hash, as many as the order
		// has: a shorter hash is the same number left-padded with zeros, a
		// longer one is cut. Either way the broker's digest size fits.
		size, dsize, a := ecSize(spec)
		// P-521's order has 521 bits, and the broker signs digests of at
		// most 64 bytes: the leftmost 521 bits of a longer input are a
		// number it cannot be given. No standard hash is that long.
		if len(input) == 0 || len(input) > dsize && dsize < size {
			return nil, CKR_DATA_LEN_RANGE
		}
		alg = a
		digest = make([]byte, dsize)
		if len(input) >= dsize {
			copy(digest, input[:dsize])
		} else {
			copy(digest[dsize-len(input):], input)
		}
	}
	cl, rv := m.conn(op.obj.tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := cl.Crypto.Sign(ctx, &pb.SignRequest{KeyId: op.obj.keyID, Message: digest,
		MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST, SigningAlgorithm: alg})
	if err != nil {
		return nil, m.rpcRV("Sign", err)
	}
	sig := resp.GetSignature()
	if plan.family != famECDSA {
		return sig, CKR_OK
	}
	size, _, _ := ecSize(spec)
	raw, ok := ecdsaDERToRaw(sig, size)
	if !ok {
		m.log.Error("Sign: the broker's ECDSA signature is not DER", "key", op.obj.keyID)
		return nil, CKR_DEVICE_ERROR
	}
	return raw, CKR_OK
}

// ecdsaDERToRaw turns an ECDSA-Sig-Value into r || s, each size bytes, as
// PKCS#11 returns ECDSA signatures.
func ecdsaDERToRaw(der []byte, size int) ([]byte, bool) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 ||
		sig.R.BitLen() > size*8 || sig.S.BitLen() > size*8 {
		return nil, false
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, true
}

func (m *Module) decryptOAEP(op *cryptoOp, input []byte) ([]byte, uint64) {
	alg := pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1
	if hashOfMech(op.mech.HashAlg) == crypto.SHA256 {
		alg = pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256
	}
	if pub, ok := op.pub.(*rsa.PublicKey); ok && len(input) != pub.Size() {
		return nil, CKR_ENCRYPTED_DATA_LEN_RANGE
	}
	cl, rv := m.conn(op.obj.tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := cl.Crypto.Decrypt(ctx, &pb.DecryptRequest{KeyId: op.obj.keyID, CiphertextBlob: input, EncryptionAlgorithm: alg})
	if err != nil {
		if rv := m.rpcRV("Decrypt", err); rv != CKR_ARGUMENTS_BAD && rv != CKR_KEY_FUNCTION_NOT_PERMITTED {
			return nil, rv
		}
		return nil, CKR_ENCRYPTED_DATA_INVALID
	}
	return resp.GetPlaintext(), CKR_OK
}

// Verify is C_Verify, checked in the library with the public key read
// from the broker; VerifyUpdate and VerifyFinal its multi-part form.
func (m *Module) Verify(h uint64, data, sig []byte) uint64 {
	return m.verifyFinish(h, data, true, sig)
}

func (m *Module) VerifyUpdate(h uint64, data []byte) uint64 { return m.update(h, opVerify, data) }

func (m *Module) VerifyFinal(h uint64, sig []byte) uint64 {
	return m.verifyFinish(h, nil, false, sig)
}

func (m *Module) verifyFinish(h uint64, data []byte, single bool, sig []byte) uint64 {
	s, slot, op, rv := m.lockOp(h, opVerify)
	if rv != CKR_OK {
		return rv
	}
	defer op.run.Unlock()
	defer s.mu.Unlock()
	*slot = nil
	if single && op.parts {
		return CKR_OPERATION_ACTIVE
	}
	input := op.buf
	if single {
		input = data
		if op.hash != nil {
			op.hash.Write(data)
		}
	}
	if op.hash != nil {
		input = op.hash.Sum(nil)
	}
	plan, _ := planSign(op.mech)
	switch pub := op.pub.(type) {
	case *rsa.PublicKey:
		if len(sig) != pub.Size() {
			return CKR_SIGNATURE_LEN_RANGE
		}
		var err error
		switch plan.family {
		case famPKCS1:
			err = rsa.VerifyPKCS1v15(pub, plan.hash, input, sig)
		case famPSS:
			h := hashOfMech(op.mech.HashAlg)
			err = rsa.VerifyPSS(pub, h, input, sig, &rsa.PSSOptions{SaltLength: int(op.mech.SaltLen), Hash: h})
		}
		if err != nil {
			return CKR_SIGNATURE_INVALID
		}
		return CKR_OK
	case *ecdsa.PublicKey:
		size, _, _ := ecSize(op.obj.meta.GetKeySpec())
		if len(sig) != 2*size {
			return CKR_SIGNATURE_LEN_RANGE
		}
		r, sv := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(pub, input, r, sv) {
			return CKR_SIGNATURE_INVALID
		}
		return CKR_OK
	}
	return CKR_KEY_TYPE_INCONSISTENT
}
