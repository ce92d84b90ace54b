package hsm

/*
#cgo CFLAGS: -I/usr/include/p11-kit-1 -Wall
#cgo LDFLAGS: -ldl
#cgo noescape hsm_once
#cgo nocallback hsm_once
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

// The steps of a one-crossing call, reported back so that an error names
// the PKCS#11 function that failed.
enum { STEP_RANDOM = 1, STEP_INIT = 2, STEP_OP = 3 };

// Operations of hsm_once.
enum { OP_ENCRYPT = 1, OP_DECRYPT = 2, OP_SIGN = 3 };

static CK_BYTE hsm_empty[1];

// hsm_function_list finds the function list of a library that is already
// loaded (by miekg/pkcs11); dlopen hands back the same handle, which is
// never closed, as the library is never finalized (module.go).
static CK_RV hsm_function_list(const char *path, CK_FUNCTION_LIST_PTR *fl) {
	void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (h == NULL) {
		return CKR_GENERAL_ERROR;
	}
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
	if (get == NULL) {
		return CKR_GENERAL_ERROR;
	}
	return get(fl);
}

static CK_RV hsm_op(CK_FUNCTION_LIST_PTR fl, int op, CK_SESSION_HANDLE sh,
		CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
	switch (op) {
	case OP_ENCRYPT:
		return fl->C_Encrypt(sh, in, in_len, out, out_len);
	case OP_DECRYPT:
		return fl->C_Decrypt(sh, in, in_len, out, out_len);
	default:
		return fl->C_Sign(sh, in, in_len, out, out_len);
	}
}

// hsm_once runs an Init and its single-part operation in one call. With
// random_len > 0 it first fills in[0:random_len] from C_GenerateRandom (a
// random draw larger than a data key, sealed with it). iv non-NULL selects
// CKM_AES_GCM parameters with a 128-bit tag, which hold pointers and so
// are built here; otherwise param (possibly NULL) is the mechanism's
// parameter as it is. out must be large enough for the result: there is
// no size query.
static CK_RV hsm_once(CK_FUNCTION_LIST_PTR fl, int op, CK_SESSION_HANDLE sh,
		CK_MECHANISM_TYPE mech, CK_VOID_PTR param, CK_ULONG param_len, CK_OBJECT_HANDLE key,
		CK_BYTE_PTR iv, CK_ULONG iv_len, CK_BYTE_PTR aad, CK_ULONG aad_len,
		CK_ULONG random_len, CK_BYTE_PTR in, CK_ULONG in_len,
		CK_BYTE_PTR out, CK_ULONG_PTR out_len, int *step) {
	CK_RV rv;
	if (in == NULL) {
		in = hsm_empty;
	}
	if (random_len > 0) {
		*step = STEP_RANDOM;
		rv = fl->C_GenerateRandom(sh, in, random_len);
		if (rv != CKR_OK) {
			return rv;
		}
	}
	CK_GCM_PARAMS gcm = {iv, iv_len, iv_len * 8, aad_len > 0 ? aad : NULL, aad_len, 128};
	CK_MECHANISM m = {mech, param, param_len};
	if (iv != NULL) {
		m.pParameter = &gcm;
		m.ulParameterLen = sizeof gcm;
	}
	*step = STEP_INIT;
	switch (op) {
	case OP_ENCRYPT:
		rv = fl->C_EncryptInit(sh, &m, key);
		break;
	case OP_DECRYPT:
		rv = fl->C_DecryptInit(sh, &m, key);
		break;
	case OP_SIGN:
		rv = fl->C_SignInit(sh, &m, key);
		break;
	default:
		return CKR_ARGUMENTS_BAD;
	}
	if (rv != CKR_OK) {
		return rv;
	}
	*step = STEP_OP;
	rv = hsm_op(fl, op, sh, in, in_len, out, out_len);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		// The operation is still active; finish it into a scratch buffer
		// so that the session goes back to the pool clean, and report the
		// error (the caller sized out wrongly).
		CK_ULONG need = *out_len;
		CK_BYTE_PTR scratch = malloc(need > 0 ? need : 1);
		if (scratch != NULL) {
			hsm_op(fl, op, sh, in, in_len, scratch, &need);
			memset(scratch, 0, need);
			free(scratch);
		}
	}
	return rv;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// p11Module is the loaded library: miekg/pkcs11's context for object,
// session and key management calls, and the library's own function list
// for encryption, decryption, signatures and MACs, which make an
// operation's PKCS#11 calls in one crossing from Go into C. Through
// miekg/pkcs11 a GenerateDataKey took about ten crossings (each C_* call,
// its size query's buffer, the mechanism's parameters and their frees);
// here it takes one, into a buffer Go allocated, with no size query and no
// copy of the result left on the C heap (docs/BENCHMARKS.md, issue 13).
type p11Module struct {
	*pkcs11.Ctx
	fl C.CK_FUNCTION_LIST_PTR
}

func newP11Module(path string, ctx *pkcs11.Ctx) (*p11Module, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var fl C.CK_FUNCTION_LIST_PTR
	if rv := C.hsm_function_list(cpath, &fl); rv != C.CKR_OK || fl == nil {
		return nil, fmt.Errorf("%w: PKCS#11 module %s: no function list (C_GetFunctionList: %#x)", ErrInvalidInput, path, uint(rv))
	}
	return &p11Module{Ctx: ctx, fl: fl}, nil
}

// onceOp is the operation Once makes.
type onceOp int

const (
	opEncrypt onceOp = C.OP_ENCRYPT
	opDecrypt onceOp = C.OP_DECRYPT
	opSign    onceOp = C.OP_SIGN
)

// onceArgs is one operation for Once. Byte slices may be empty.
type onceArgs struct {
	op   onceOp
	mech uint
	// param is the mechanism's parameter, which must hold no pointers: an
	// IV, CK_AES_CTR_PARAMS, CK_RSA_PKCS_PSS_PARAMS, or
	// CK_RSA_PKCS_OAEP_PARAMS without a label (oaepParams).
	param     []byte
	key       pkcs11.ObjectHandle
	iv, aad   []byte // iv non-empty: AES-GCM with a 128-bit tag, and no param
	randomLen int    // > 0: fill in[:randomLen] from the token's RNG first
	in        []byte
	outLen    int // the largest result
}

// stepNames are the PKCS#11 functions of each operation, by step.
var stepNames = map[onceOp][3]string{
	opEncrypt: {"C_GenerateRandom", "C_EncryptInit", "C_Encrypt"},
	opDecrypt: {"C_GenerateRandom", "C_DecryptInit", "C_Decrypt"},
	opSign:    {"C_GenerateRandom", "C_SignInit", "C_Sign"},
}

// Once makes the operation's calls in one crossing. A failure is a
// *p11Error naming the function that returned it.
func (m *p11Module) Once(sh pkcs11.SessionHandle, a onceArgs) ([]byte, error) {
	// Never a NULL output: C_Encrypt and its kin would take that for a size
	// query and leave the operation active.
	out := make([]byte, max(a.outLen, 1))
	outLen := C.CK_ULONG(len(out))
	var step C.int
	rv := C.hsm_once(m.fl, C.int(a.op), C.CK_SESSION_HANDLE(sh), C.CK_MECHANISM_TYPE(a.mech),
		C.CK_VOID_PTR(bytePtr(a.param)), C.CK_ULONG(len(a.param)), C.CK_OBJECT_HANDLE(a.key),
		bytePtr(a.iv), C.CK_ULONG(len(a.iv)), bytePtr(a.aad), C.CK_ULONG(len(a.aad)),
		C.CK_ULONG(a.randomLen), bytePtr(a.in), C.CK_ULONG(len(a.in)),
		bytePtr(out), &outLen, &step)
	if rv != C.CKR_OK {
		return nil, &p11Error{op: stepNames[a.op][step-C.STEP_RANDOM], code: uint(rv)}
	}
	if int(outLen) > len(out) {
		return nil, &p11Error{op: stepNames[a.op][2], code: pkcs11.CKR_BUFFER_TOO_SMALL}
	}
	return out[:outLen], nil
}

// oaepParams is CK_RSA_PKCS_OAEP_PARAMS with an empty label: hash, MGF1
// of the same hash, and no source data.
func oaepParams(hash, mgf uint) []byte {
	p := C.CK_RSA_PKCS_OAEP_PARAMS{hashAlg: C.CK_MECHANISM_TYPE(hash), mgf: C.CK_RSA_PKCS_MGF_TYPE(mgf), source: C.CKZ_DATA_SPECIFIED}
	return C.GoBytes(unsafe.Pointer(&p), C.int(unsafe.Sizeof(p)))
}

func bytePtr(b []byte) C.CK_BYTE_PTR {
	if len(b) == 0 {
		return nil
	}
	return C.CK_BYTE_PTR(unsafe.Pointer(&b[0]))
}
