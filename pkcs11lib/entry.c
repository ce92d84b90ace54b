// The C face of libhsmbroker-pkcs11.so: the CK_FUNCTION_LIST, the fork
// guard and unaligned writes of the caller's output integers. Every
// supported call goes on to a Go function of the same name with a "go"
// prefix (export.go); every other answers CKR_FUNCTION_NOT_SUPPORTED here.
//
// The fork rule: a Go runtime does not survive fork(2) (only the forking
// thread exists in the child; golang/go#15538). The process id at load time
// is kept, and every entry point compares it with getpid() first: in a
// forked child every call but C_GetFunctionList answers
// CKR_CRYPTOKI_NOT_INITIALIZED (C_Initialize too, since the child can never
// use the library) without entering Go. A child must exec a fresh process.

#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include "hsmb.h"
#include "_cgo_export.h"

static pid_t hsmb_pid;

__attribute__((constructor)) static void hsmb_record_pid(void) { hsmb_pid = getpid(); }

#define GUARD() do { if (getpid() != hsmb_pid) return CKR_CRYPTOKI_NOT_INITIALIZED; } while (0)
// GUARD_INIT is GUARD for the functions answered here without Go: they
// too answer CKR_CRYPTOKI_NOT_INITIALIZED before C_Initialize.
#define GUARD_INIT() do { GUARD(); if (goInitialized() != CKR_OK) return CKR_CRYPTOKI_NOT_INITIALIZED; } while (0)

void hsmb_put_ulong(void *p, CK_ULONG v) { memcpy(p, &v, sizeof v); }
CK_ULONG hsmb_get_ulong(const void *p) { CK_ULONG v; memcpy(&v, p, sizeof v); return v; }
void hsmb_get_attr(const CK_ATTRIBUTE *t, CK_ULONG i, CK_ATTRIBUTE *out) { memcpy(out, (const char *)t + i * sizeof(CK_ATTRIBUTE), sizeof *out); }
void hsmb_set_attr_len(CK_ATTRIBUTE *t, CK_ULONG i, CK_ULONG len) {
	char *a = (char *)t + i * sizeof(CK_ATTRIBUTE) + offsetof(CK_ATTRIBUTE, ulValueLen);
	memcpy(a, &len, sizeof len);
}

static CK_FUNCTION_LIST hsmb_functions;

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
	if (list == NULL) return CKR_ARGUMENTS_BAD;
	CK_FUNCTION_LIST_PTR p = &hsmb_functions;
	memcpy(list, &p, sizeof p);
	return CKR_OK;
}

CK_RV C_Initialize(CK_VOID_PTR args) {
	GUARD();
	CK_C_INITIALIZE_ARGS a;
	int present = args != NULL;
	if (present) memcpy(&a, args, sizeof a); else memset(&a, 0, sizeof a);
	return goInitialize(present, &a);
}

CK_RV C_Finalize(CK_VOID_PTR reserved) {
	GUARD();
	if (reserved != NULL) return CKR_ARGUMENTS_BAD;
	return goFinalize();
}

CK_RV C_GetInfo(CK_INFO_PTR info) {
	GUARD();
	if (info == NULL) return CKR_ARGUMENTS_BAD;
	CK_INFO v;
	CK_RV rv = goGetInfo(&v);
	if (rv == CKR_OK) memcpy(info, &v, sizeof v);
	return rv;
}

// list_call runs a Go function that fills a CK_ULONG list with the PKCS#11
// two-call convention.
CK_RV C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count) {
	GUARD();
	if (count == NULL) return CKR_ARGUMENTS_BAD;
	CK_ULONG n = hsmb_get_ulong(count);
	CK_RV rv = goGetSlotList(list, &n);
	if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) hsmb_put_ulong(count, n);
	return rv;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) {
	GUARD();
	if (info == NULL) return CKR_ARGUMENTS_BAD;
	CK_SLOT_INFO v;
	CK_RV rv = goGetSlotInfo(slot, &v);
	if (rv == CKR_OK) memcpy(info, &v, sizeof v);
	return rv;
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
	GUARD();
	if (info == NULL) return CKR_ARGUMENTS_BAD;
	CK_TOKEN_INFO v;
	CK_RV rv = goGetTokenInfo(slot, &v);
	if (rv == CKR_OK) memcpy(info, &v, sizeof v);
	return rv;
}

CK_RV C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) {
	GUARD();
	if (count == NULL) return CKR_ARGUMENTS_BAD;
	CK_ULONG n = hsmb_get_ulong(count);
	CK_RV rv = goGetMechanismList(slot, list, &n);
	if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) hsmb_put_ulong(count, n);
	return rv;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info) {
	GUARD();
	if (info == NULL) return CKR_ARGUMENTS_BAD;
	CK_MECHANISM_INFO v;
	CK_RV rv = goGetMechanismInfo(slot, type, &v);
	if (rv == CKR_OK) memcpy(info, &v, sizeof v);
	return rv;
}

CK_RV C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session) {
	GUARD();
	(void)app; (void)notify; // the library makes no callbacks
	if (session == NULL) return CKR_ARGUMENTS_BAD;
	CK_SESSION_HANDLE h = 0;
	CK_RV rv = goOpenSession(slot, flags, &h);
	if (rv == CKR_OK) hsmb_put_ulong(session, h);
	return rv;
}

CK_RV C_CloseSession(CK_SESSION_HANDLE h) { GUARD(); return goCloseSession(h); }
CK_RV C_CloseAllSessions(CK_SLOT_ID slot) { GUARD(); return goCloseAllSessions(slot); }

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info) {
	GUARD();
	if (info == NULL) return goArgumentsBad(h);
	CK_SESSION_INFO v;
	CK_RV rv = goGetSessionInfo(h, &v);
	if (rv == CKR_OK) memcpy(info, &v, sizeof v);
	return rv;
}

CK_RV C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len) {
	GUARD();
	if (pin == NULL && len != 0) return goArgumentsBad(h);
	return goLogin(h, user, pin, len);
}

CK_RV C_Logout(CK_SESSION_HANDLE h) { GUARD(); return goLogout(h); }

CK_RV C_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR obj) {
	GUARD();
	if (obj == NULL || (tmpl == NULL && n != 0)) return goArgumentsBad(h);
	CK_OBJECT_HANDLE o = 0;
	CK_RV rv = goCreateObject(h, tmpl, n, &o);
	if (rv == CKR_OK) hsmb_put_ulong(obj, o);
	return rv;
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj) { GUARD(); return goDestroyObject(h, obj); }

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n) {
	GUARD();
	if (tmpl == NULL && n != 0) return goArgumentsBad(h);
	return goGetAttributeValue(h, obj, tmpl, n);
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n) {
	GUARD();
	if (tmpl == NULL && n != 0) return goArgumentsBad(h);
	return goFindObjectsInit(h, tmpl, n);
}

CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR objs, CK_ULONG max, CK_ULONG_PTR count) {
	GUARD();
	if (count == NULL || (objs == NULL && max != 0)) return goArgumentsBad(h);
	CK_ULONG n = 0;
	CK_RV rv = goFindObjects(h, objs, max, &n);
	if (rv == CKR_OK) hsmb_put_ulong(count, n);
	return rv;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE h) { GUARD(); return goFindObjectsFinal(h); }

// Operations with output follow one pattern: the caller's length is read
// and written back with memcpy; Go returns the result's length in it. A
// call refused here ends the session's operation of kind, as any error but
// CKR_BUFFER_TOO_SMALL does (goEndOp).
#define OUT_CALL(call, outlen, kind) do { \
	if ((outlen) == NULL) return goEndOp(h, (kind), CKR_ARGUMENTS_BAD); \
	CK_ULONG n = hsmb_get_ulong(outlen); \
	CK_RV rv = (call); \
	if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) hsmb_put_ulong((outlen), n); \
	return rv; \
} while (0)

#define IN_OK(p, len) ((p) != NULL || (len) == 0)

CK_RV C_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	GUARD();
	if (mech == NULL) return goArgumentsBad(h);
	return goOpInit(h, 2, mech, key);
}
CK_RV C_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 2, CKR_ARGUMENTS_BAD);
	OUT_CALL(goOpFinish(h, 2, 1, in, inlen, out, &n), outlen, 2);
}
CK_RV C_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 2, CKR_ARGUMENTS_BAD);
	OUT_CALL(goCryptUpdate(h, 2, in, inlen, out, &n), outlen, 2);
}
CK_RV C_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	OUT_CALL(goOpFinish(h, 2, 0, NULL, 0, out, &n), outlen, 2);
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	GUARD();
	if (mech == NULL) return goArgumentsBad(h);
	return goOpInit(h, 3, mech, key);
}
CK_RV C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 3, CKR_ARGUMENTS_BAD);
	OUT_CALL(goOpFinish(h, 3, 1, in, inlen, out, &n), outlen, 3);
}
CK_RV C_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 3, CKR_ARGUMENTS_BAD);
	OUT_CALL(goCryptUpdate(h, 3, in, inlen, out, &n), outlen, 3);
}
CK_RV C_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	OUT_CALL(goOpFinish(h, 3, 0, NULL, 0, out, &n), outlen, 3);
}

CK_RV C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	GUARD();
	if (mech == NULL) return goArgumentsBad(h);
	return goOpInit(h, 0, mech, key);
}
CK_RV C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 0, CKR_ARGUMENTS_BAD);
	OUT_CALL(goOpFinish(h, 0, 1, in, inlen, out, &n), outlen, 0);
}
CK_RV C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 0, CKR_ARGUMENTS_BAD);
	return goOpUpdate(h, 0, in, inlen);
}
CK_RV C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen) {
	GUARD();
	OUT_CALL(goOpFinish(h, 0, 0, NULL, 0, out, &n), outlen, 0);
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	GUARD();
	if (mech == NULL) return goArgumentsBad(h);
	return goOpInit(h, 1, mech, key);
}
CK_RV C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig, CK_ULONG siglen) {
	GUARD();
	if (!IN_OK(in, inlen) || !IN_OK(sig, siglen)) return goEndOp(h, 1, CKR_ARGUMENTS_BAD);
	return goVerify(h, 1, in, inlen, sig, siglen);
}
CK_RV C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen) {
	GUARD();
	if (!IN_OK(in, inlen)) return goEndOp(h, 1, CKR_ARGUMENTS_BAD);
	return goOpUpdate(h, 1, in, inlen);
}
CK_RV C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen) {
	GUARD();
	if (!IN_OK(sig, siglen)) return goEndOp(h, 1, CKR_ARGUMENTS_BAD);
	return goVerify(h, 0, NULL, 0, sig, siglen);
}

CK_RV C_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key) {
	GUARD();
	if (mech == NULL || key == NULL || !IN_OK(tmpl, n)) return goArgumentsBad(h);
	CK_OBJECT_HANDLE k = 0;
	CK_RV rv = goGenerateKey(h, mech, tmpl, n, &k);
	if (rv == CKR_OK) hsmb_put_ulong(key, k);
	return rv;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pubt, CK_ULONG pubn,
		CK_ATTRIBUTE_PTR privt, CK_ULONG privn, CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv) {
	GUARD();
	if (mech == NULL || pub == NULL || priv == NULL || !IN_OK(pubt, pubn) || !IN_OK(privt, privn)) return goArgumentsBad(h);
	CK_OBJECT_HANDLE a = 0, b = 0;
	CK_RV rv = goGenerateKeyPair(h, mech, pubt, pubn, privt, privn, &a, &b);
	if (rv == CKR_OK) { hsmb_put_ulong(pub, a); hsmb_put_ulong(priv, b); }
	return rv;
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len) {
	GUARD();
	if (!IN_OK(out, len)) return goArgumentsBad(h);
	return goGenerateRandom(h, out, len);
}

CK_RV C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len) {
	GUARD_INIT(); (void)h; (void)seed; (void)len;
	return CKR_RANDOM_SEED_NOT_SUPPORTED;
}

// Not supported. The arguments are named only to match the prototypes.
#define UNSUPPORTED return CKR_FUNCTION_NOT_SUPPORTED
CK_RV C_InitToken(CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; UNSUPPORTED; }
CK_RV C_InitPIN(CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_SetPIN(CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_GetOperationState(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_SetOperationState(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_CopyObject(CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_GetObjectSize(CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ULONG_PTR c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_SetAttributeValue(CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; UNSUPPORTED; }
CK_RV C_DigestInit(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b) { GUARD_INIT(); (void)a; (void)b; UNSUPPORTED; }
CK_RV C_Digest(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_DigestUpdate(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_DigestKey(CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b) { GUARD_INIT(); (void)a; (void)b; UNSUPPORTED; }
CK_RV C_DigestFinal(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_SignRecoverInit(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_SignRecover(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }
CK_RV C_VerifyRecover(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; UNSUPPORTED; }
CK_RV C_WrapKey(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; UNSUPPORTED; }
CK_RV C_UnwrapKey(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR k) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; (void)g; (void)k; UNSUPPORTED; }
CK_RV C_DeriveKey(CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f) { GUARD_INIT(); (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; UNSUPPORTED; }
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE a) { GUARD_INIT(); (void)a; return CKR_FUNCTION_NOT_PARALLEL; }
CK_RV C_CancelFunction(CK_SESSION_HANDLE a) { GUARD_INIT(); (void)a; return CKR_FUNCTION_NOT_PARALLEL; }
CK_RV C_WaitForSlotEvent(CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c) { GUARD_INIT(); (void)a; (void)b; (void)c; UNSUPPORTED; }

static CK_FUNCTION_LIST hsmb_functions = {
	{2, 40},
	C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList, C_GetSlotInfo,
	C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN, C_SetPIN,
	C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,
	C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, C_DestroyObject,
	C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit, C_FindObjects,
	C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit,
	C_Decrypt, C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate,
	C_DigestKey, C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit,
	C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal, C_VerifyRecoverInit,
	C_VerifyRecover, C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate,
	C_DecryptVerifyUpdate, C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey,
	C_SeedRandom, C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent,
};
