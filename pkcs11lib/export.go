// Command pkcs11lib is libhsmbroker-pkcs11.so, built with
// `go build -buildmode=c-shared` (make build writes
// bin/libhsmbroker-pkcs11.so): a PKCS#11 v2.40 library with a slot per
// configured token, each an hsmbroker cluster (or a key prefix of one). entry.c is its C face (the function list, the fork
// guard, unaligned writes); the functions here convert C arguments and call
// package p11, which holds the logic. docs/PKCS11.md is the user guide.
package main

/*
#cgo CFLAGS: -I/usr/include/p11-kit-1 -Wall
#include <stdlib.h>
#include <string.h>
#include "hsmb.h"
*/
import "C"

import (
	"unsafe"

	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
)

func main() {}

var mod = p11.New(nil)

func rv(v uint64) C.CK_RV { return C.CK_RV(v) }

// bytesOf copies n bytes at p into Go memory.
func bytesOf(p *C.CK_BYTE, n C.CK_ULONG) []byte {
	if p == nil || n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// padded fills a blank-padded, unterminated PKCS#11 string field.
func padded(dst []C.uchar, s string) {
	for i := range dst {
		if i < len(s) {
			dst[i] = C.uchar(s[i])
		} else {
			dst[i] = ' '
		}
	}
}

//export goInitialize
func goInitialize(present C.int, a *C.CK_C_INITIALIZE_ARGS) C.CK_RV {
	args := p11.InitArgs{Present: present != 0}
	if args.Present {
		args.Flags = uint64(a.flags)
		args.LibraryCantCreateThrds = a.flags&C.CKF_LIBRARY_CANT_CREATE_OS_THREADS != 0
		for _, set := range []bool{a.CreateMutex != nil, a.DestroyMutex != nil, a.LockMutex != nil, a.UnlockMutex != nil} {
			if set {
				args.MutexFuncs++
			}
		}
		if a.pReserved != nil {
			return C.CKR_ARGUMENTS_BAD
		}
	}
	return rv(mod.Initialize(args))
}

// goInitialized is CKR_OK once C_Initialize has been called (and not
// C_Finalize since), else CKR_CRYPTOKI_NOT_INITIALIZED: the check of the
// functions the C side answers alone.
//
//export goInitialized
func goInitialized() C.CK_RV {
	if !mod.Initialized() {
		return C.CKR_CRYPTOKI_NOT_INITIALIZED
	}
	return C.CKR_OK
}

//export goFinalize
func goFinalize() C.CK_RV { return rv(mod.Finalize()) }

//export goGetInfo
func goGetInfo(info *C.CK_INFO) C.CK_RV {
	i, r := mod.GetInfo()
	if r != p11.CKR_OK {
		return rv(r)
	}
	info.cryptokiVersion.major, info.cryptokiVersion.minor = 2, 40
	padded(info.manufacturerID[:], i.Manufacturer)
	info.flags = 0
	padded(info.libraryDescription[:], i.Description)
	info.libraryVersion.major, info.libraryVersion.minor = C.uchar(i.Major), C.uchar(i.Minor)
	return C.CKR_OK
}

// putList writes a list with the two-call convention: n is the caller's
// capacity on entry and the list's length on return.
func putList(list *C.CK_ULONG, n *C.CK_ULONG, vals []uint64) C.CK_RV {
	have := *n
	*n = C.CK_ULONG(len(vals))
	if list == nil {
		return C.CKR_OK
	}
	if uint64(have) < uint64(len(vals)) {
		return C.CKR_BUFFER_TOO_SMALL
	}
	for i, v := range vals {
		C.hsmb_put_ulong(unsafe.Add(unsafe.Pointer(list), i*C.sizeof_CK_ULONG), C.CK_ULONG(v))
	}
	return C.CKR_OK
}

//export goGetSlotList
func goGetSlotList(list *C.CK_SLOT_ID, n *C.CK_ULONG) C.CK_RV {
	slots, r := mod.SlotList()
	if r != p11.CKR_OK {
		return rv(r)
	}
	return putList(list, n, slots)
}

//export goGetSlotInfo
func goGetSlotInfo(slot C.CK_SLOT_ID, info *C.CK_SLOT_INFO) C.CK_RV {
	si, r := mod.GetSlotInfo(uint64(slot))
	if r != p11.CKR_OK {
		return rv(r)
	}
	padded(info.slotDescription[:], si.Description)
	padded(info.manufacturerID[:], si.Manufacturer)
	info.flags = C.CK_FLAGS(si.Flags)
	info.hardwareVersion.major, info.hardwareVersion.minor = 1, 0
	info.firmwareVersion.major, info.firmwareVersion.minor = 1, 0
	return C.CKR_OK
}

//export goGetTokenInfo
func goGetTokenInfo(slot C.CK_SLOT_ID, info *C.CK_TOKEN_INFO) C.CK_RV {
	ti, r := mod.GetTokenInfo(uint64(slot))
	if r != p11.CKR_OK {
		return rv(r)
	}
	padded(info.label[:], ti.Label)
	padded(info.manufacturerID[:], ti.Manufacturer)
	padded(info.model[:], ti.Model)
	padded(info.serialNumber[:], ti.Serial)
	info.flags = C.CK_FLAGS(ti.Flags)
	info.ulMaxSessionCount = C.CK_ULONG(p11.MaxSessions)
	info.ulSessionCount = C.CK_ULONG(ti.Sessions)
	info.ulMaxRwSessionCount = C.CK_ULONG(p11.MaxSessions)
	info.ulRwSessionCount = C.CK_ULONG(ti.RWSessions)
	info.ulMaxPinLen, info.ulMinPinLen = C.CK_ULONG(ti.MaxPIN), C.CK_ULONG(ti.MinPIN)
	unavailable := C.CK_ULONG(p11.CK_UNAVAILABLE_INFORMATION)
	info.ulTotalPublicMemory, info.ulFreePublicMemory = unavailable, unavailable
	info.ulTotalPrivateMemory, info.ulFreePrivateMemory = unavailable, unavailable
	info.hardwareVersion.major, info.firmwareVersion.major = 1, 1
	info.hardwareVersion.minor, info.firmwareVersion.minor = 0, 0
	padded(info.utcTime[:], "")
	return C.CKR_OK
}

//export goGetMechanismList
func goGetMechanismList(slot C.CK_SLOT_ID, list *C.CK_MECHANISM_TYPE, n *C.CK_ULONG) C.CK_RV {
	if _, _, _, r := mod.MechanismInfo(uint64(slot), p11.CKM_RSA_PKCS); r != p11.CKR_OK {
		return rv(r)
	}
	var types []uint64
	for _, mi := range p11.Mechanisms {
		types = append(types, mi.Type)
	}
	return putList(list, n, types)
}

//export goGetMechanismInfo
func goGetMechanismInfo(slot C.CK_SLOT_ID, typ C.CK_MECHANISM_TYPE, info *C.CK_MECHANISM_INFO) C.CK_RV {
	lo, hi, flags, r := mod.MechanismInfo(uint64(slot), uint64(typ))
	if r != p11.CKR_OK {
		return rv(r)
	}
	info.ulMinKeySize, info.ulMaxKeySize, info.flags = C.CK_ULONG(lo), C.CK_ULONG(hi), C.CK_FLAGS(flags)
	return C.CKR_OK
}

//export goOpenSession
func goOpenSession(slot C.CK_SLOT_ID, flags C.CK_FLAGS, h *C.CK_SESSION_HANDLE) C.CK_RV {
	s, r := mod.OpenSession(uint64(slot), uint64(flags))
	*h = C.CK_SESSION_HANDLE(s)
	return rv(r)
}

//export goCloseSession
func goCloseSession(h C.CK_SESSION_HANDLE) C.CK_RV { return rv(mod.CloseSession(uint64(h))) }

//export goCloseAllSessions
func goCloseAllSessions(slot C.CK_SLOT_ID) C.CK_RV { return rv(mod.CloseAllSessions(uint64(slot))) }

//export goGetSessionInfo
func goGetSessionInfo(h C.CK_SESSION_HANDLE, info *C.CK_SESSION_INFO) C.CK_RV {
	si, r := mod.GetSessionInfo(uint64(h))
	if r != p11.CKR_OK {
		return rv(r)
	}
	info.slotID, info.state, info.flags, info.ulDeviceError = C.CK_SLOT_ID(si.Slot), C.CK_STATE(si.State), C.CK_FLAGS(si.Flags), 0
	return C.CKR_OK
}

//export goLogin
func goLogin(h C.CK_SESSION_HANDLE, user C.CK_USER_TYPE, pin *C.CK_UTF8CHAR, n C.CK_ULONG) C.CK_RV {
	if n > 4096 {
		return C.CKR_PIN_LEN_RANGE
	}
	b := bytesOf((*C.CK_BYTE)(pin), n)
	r := mod.Login(uint64(h), uint64(user), b)
	clear(b)
	return rv(r)
}

//export goLogout
func goLogout(h C.CK_SESSION_HANDLE) C.CK_RV { return rv(mod.Logout(uint64(h))) }

// template copies a C template into Go, bounded by p11.MaxTemplateAttrs
// and p11.MaxAttrValue.
func template(t *C.CK_ATTRIBUTE, n C.CK_ULONG) ([]p11.Attribute, C.CK_RV) {
	if n > p11.MaxTemplateAttrs {
		return nil, C.CKR_TEMPLATE_INCONSISTENT
	}
	out := make([]p11.Attribute, 0, int(n))
	for i := C.CK_ULONG(0); i < n; i++ {
		var a C.CK_ATTRIBUTE
		C.hsmb_get_attr(t, i, &a)
		if a.ulValueLen > p11.MaxAttrValue {
			return nil, C.CKR_ATTRIBUTE_VALUE_INVALID
		}
		if a.pValue == nil && a.ulValueLen != 0 {
			return nil, C.CKR_ATTRIBUTE_VALUE_INVALID
		}
		out = append(out, p11.Attribute{Type: uint64(a._type), Value: bytesOf((*C.CK_BYTE)(a.pValue), a.ulValueLen)})
	}
	return out, C.CKR_OK
}

//export goCreateObject
func goCreateObject(h C.CK_SESSION_HANDLE, t *C.CK_ATTRIBUTE, n C.CK_ULONG, obj *C.CK_OBJECT_HANDLE) C.CK_RV {
	attrs, r := template(t, n)
	if r != C.CKR_OK {
		return r
	}
	o, r2 := mod.CreateObject(uint64(h), attrs)
	*obj = C.CK_OBJECT_HANDLE(o)
	return rv(r2)
}

//export goDestroyObject
func goDestroyObject(h C.CK_SESSION_HANDLE, obj C.CK_OBJECT_HANDLE) C.CK_RV {
	return rv(mod.DestroyObject(uint64(h), uint64(obj)))
}

// goGetAttributeValue follows PKCS#11's rules: every attribute is
// processed; a sensitive or unknown one gets CK_UNAVAILABLE_INFORMATION as
// its length and its error is returned at the end; a NULL value gets the
// length; a short buffer gets CK_UNAVAILABLE_INFORMATION and
// CKR_BUFFER_TOO_SMALL.
//
//export goGetAttributeValue
func goGetAttributeValue(h C.CK_SESSION_HANDLE, obj C.CK_OBJECT_HANDLE, t *C.CK_ATTRIBUTE, n C.CK_ULONG) C.CK_RV {
	if r := mod.CheckObject(uint64(h), uint64(obj)); r != p11.CKR_OK {
		return rv(r)
	}
	if n > 4096 {
		return C.CKR_ARGUMENTS_BAD
	}
	result := C.CK_RV(C.CKR_OK)
	unavailable := C.CK_ULONG(p11.CK_UNAVAILABLE_INFORMATION)
	for i := C.CK_ULONG(0); i < n; i++ {
		var a C.CK_ATTRIBUTE
		C.hsmb_get_attr(t, i, &a)
		val, r := mod.GetAttribute(uint64(h), uint64(obj), uint64(a._type))
		switch r {
		case p11.CKR_OK:
		case p11.CKR_ATTRIBUTE_SENSITIVE, p11.CKR_ATTRIBUTE_TYPE_INVALID:
			C.hsmb_set_attr_len(t, i, unavailable)
			result = rv(r)
			continue
		default:
			return rv(r)
		}
		switch {
		case a.pValue == nil:
			C.hsmb_set_attr_len(t, i, C.CK_ULONG(len(val)))
		case uint64(a.ulValueLen) < uint64(len(val)):
			C.hsmb_set_attr_len(t, i, unavailable)
			result = C.CKR_BUFFER_TOO_SMALL
		default:
			if len(val) > 0 {
				C.memcpy(a.pValue, unsafe.Pointer(&val[0]), C.size_t(len(val)))
			}
			C.hsmb_set_attr_len(t, i, C.CK_ULONG(len(val)))
		}
	}
	return result
}

//export goFindObjectsInit
func goFindObjectsInit(h C.CK_SESSION_HANDLE, t *C.CK_ATTRIBUTE, n C.CK_ULONG) C.CK_RV {
	attrs, r := template(t, n)
	if r != C.CKR_OK {
		return r
	}
	return rv(mod.FindObjectsInit(uint64(h), attrs))
}

//export goFindObjects
func goFindObjects(h C.CK_SESSION_HANDLE, objs *C.CK_OBJECT_HANDLE, max C.CK_ULONG, n *C.CK_ULONG) C.CK_RV {
	found, r := mod.FindObjects(uint64(h), uint64(max))
	if r != p11.CKR_OK {
		return rv(r)
	}
	for i, o := range found {
		C.hsmb_put_ulong(unsafe.Add(unsafe.Pointer(objs), i*C.sizeof_CK_ULONG), C.CK_ULONG(o))
	}
	*n = C.CK_ULONG(len(found))
	return C.CKR_OK
}

//export goFindObjectsFinal
func goFindObjectsFinal(h C.CK_SESSION_HANDLE) C.CK_RV { return rv(mod.FindObjectsFinal(uint64(h))) }

// mechanism decodes a CK_MECHANISM and its parameter.
func mechanism(cm *C.CK_MECHANISM) p11.Mechanism {
	var raw C.CK_MECHANISM
	C.memcpy(unsafe.Pointer(&raw), unsafe.Pointer(cm), C.sizeof_CK_MECHANISM)
	m := p11.Mechanism{Type: uint64(raw.mechanism)}
	p, n := raw.pParameter, raw.ulParameterLen
	if p == nil && n != 0 || n > p11.MaxAttrValue {
		m.BadParam = true
		return m
	}
	switch m.Type {
	case p11.CKM_RSA_PKCS_PSS, p11.CKM_SHA256_RSA_PKCS_PSS, p11.CKM_SHA384_RSA_PKCS_PSS, p11.CKM_SHA512_RSA_PKCS_PSS:
		if n != C.sizeof_CK_RSA_PKCS_PSS_PARAMS {
			m.BadParam = n != 0
			return m
		}
		var v C.CK_RSA_PKCS_PSS_PARAMS
		C.memcpy(unsafe.Pointer(&v), p, C.size_t(n))
		m.HasParam, m.HashAlg, m.MGF, m.SaltLen = true, uint64(v.hashAlg), uint64(v.mgf), uint64(v.sLen)
	case p11.CKM_RSA_PKCS_OAEP:
		if n != C.sizeof_CK_RSA_PKCS_OAEP_PARAMS {
			m.BadParam = n != 0
			return m
		}
		var v C.CK_RSA_PKCS_OAEP_PARAMS
		C.memcpy(unsafe.Pointer(&v), p, C.size_t(n))
		if v.ulSourceDataLen > p11.MaxAttrValue || v.pSourceData == nil && v.ulSourceDataLen != 0 {
			m.BadParam = true
			return m
		}
		m.HasParam, m.HashAlg, m.MGF, m.OAEPSource = true, uint64(v.hashAlg), uint64(v.mgf), uint64(v.source)
		m.OAEPLabel = bytesOf((*C.CK_BYTE)(v.pSourceData), v.ulSourceDataLen)
	case p11.CKM_AES_GCM:
		if n != C.sizeof_CK_GCM_PARAMS {
			m.BadParam = true
			return m
		}
		var v C.CK_GCM_PARAMS
		C.memcpy(unsafe.Pointer(&v), p, C.size_t(n))
		if v.ulIvLen > 256 || v.ulAADLen > p11.MaxAttrValue || v.pIv == nil && v.ulIvLen != 0 || v.pAAD == nil && v.ulAADLen != 0 {
			m.BadParam = true
			return m
		}
		m.HasParam, m.TagBits = true, uint64(v.ulTagBits)
		m.IV = bytesOf((*C.CK_BYTE)(v.pIv), v.ulIvLen)
		m.AAD = bytesOf((*C.CK_BYTE)(v.pAAD), v.ulAADLen)
	case p11.CKM_AES_CTR:
		if n != C.sizeof_CK_AES_CTR_PARAMS {
			m.BadParam = true
			return m
		}
		var v C.CK_AES_CTR_PARAMS
		C.memcpy(unsafe.Pointer(&v), p, C.size_t(n))
		m.HasParam, m.CounterBits = true, uint64(v.ulCounterBits)
		m.IV = C.GoBytes(unsafe.Pointer(&v.cb[0]), 16)
	default:
		m.Param = bytesOf((*C.CK_BYTE)(p), n)
		m.HasParam = n != 0
	}
	return m
}

//export goOpInit
func goOpInit(h C.CK_SESSION_HANDLE, kind C.int, cm *C.CK_MECHANISM, key C.CK_OBJECT_HANDLE) C.CK_RV {
	m := mechanism(cm)
	switch kind {
	case 0:
		return rv(mod.SignInit(uint64(h), m, uint64(key)))
	case 1:
		return rv(mod.VerifyInit(uint64(h), m, uint64(key)))
	case 2:
		return rv(mod.EncryptInit(uint64(h), m, uint64(key)))
	}
	return rv(mod.DecryptInit(uint64(h), m, uint64(key)))
}

// goEndOp ends session h's active operation of kind (0 sign, 1 verify,
// 2 encrypt, 3 decrypt) and returns r: for a call refused before it
// reached the operation, which PKCS#11 ends on any error but
// CKR_BUFFER_TOO_SMALL.
//
// goArgumentsBad answers a call on session h that a NULL pointer
// argument refused before Go saw it (Module.ArgumentsError).
//
//export goArgumentsBad
func goArgumentsBad(h C.CK_SESSION_HANDLE) C.CK_RV {
	return C.CK_RV(mod.ArgumentsError(uint64(h)))
}

//export goEndOp
func goEndOp(h C.CK_SESSION_HANDLE, kind C.int, r C.CK_RV) C.CK_RV {
	return C.CK_RV(mod.EndOperation(uint64(h), int(kind), uint64(r)))
}

//export goOpUpdate
func goOpUpdate(h C.CK_SESSION_HANDLE, kind C.int, in *C.CK_BYTE, n C.CK_ULONG) C.CK_RV {
	if n > p11.MaxBuffered {
		return goEndOp(h, kind, C.CKR_DATA_LEN_RANGE)
	}
	data := bytesOf(in, n)
	if kind == 0 {
		return rv(mod.SignUpdate(uint64(h), data))
	}
	return rv(mod.VerifyUpdate(uint64(h), data))
}

// goCryptUpdate is C_EncryptUpdate (kind 2) and C_DecryptUpdate (kind 3).
// *n is the caller's capacity on entry and the part's output length on
// return (also for a NULL buffer and for CKR_BUFFER_TOO_SMALL).
//
//export goCryptUpdate
func goCryptUpdate(h C.CK_SESSION_HANDLE, kind C.int, in *C.CK_BYTE, inLen C.CK_ULONG, out *C.CK_BYTE, n *C.CK_ULONG) C.CK_RV {
	if inLen > p11.MaxBuffered {
		return goEndOp(h, kind, C.CK_RV(p11.LenRangeErr(int(kind))))
	}
	data := bytesOf(in, inLen)
	o := p11.Out{Query: out == nil, Cap: uint64(*n)}
	update := mod.DecryptUpdate
	if kind == 2 {
		update = mod.EncryptUpdate
	}
	res, length, r := update(uint64(h), data, o)
	if r == p11.CKR_OK || r == p11.CKR_BUFFER_TOO_SMALL {
		*n = C.CK_ULONG(length)
	}
	if r == p11.CKR_OK && out != nil && len(res) > 0 {
		C.memcpy(unsafe.Pointer(out), unsafe.Pointer(&res[0]), C.size_t(len(res)))
	}
	return rv(r)
}

// goOpFinish is C_Sign/C_Encrypt/C_Decrypt (single != 0) and their Final
// forms. *n is the caller's capacity on entry and the result's length on
// return.
//
//export goOpFinish
func goOpFinish(h C.CK_SESSION_HANDLE, kind, single C.int, in *C.CK_BYTE, inLen C.CK_ULONG, out *C.CK_BYTE, n *C.CK_ULONG) C.CK_RV {
	if inLen > p11.MaxBuffered {
		return goEndOp(h, kind, C.CK_RV(p11.LenRangeErr(int(kind))))
	}
	data := bytesOf(in, inLen)
	o := p11.Out{Query: out == nil, Cap: uint64(*n)}
	var (
		res []byte
		r   uint64
	)
	switch {
	case kind == 0 && single != 0:
		res, r = mod.Sign(uint64(h), data, o)
	case kind == 0:
		res, r = mod.SignFinal(uint64(h), o)
	case kind == 2 && single != 0:
		res, r = mod.Encrypt(uint64(h), data, o)
	case kind == 2:
		res, r = mod.EncryptFinal(uint64(h), o)
	case single != 0:
		res, r = mod.Decrypt(uint64(h), data, o)
	default:
		res, r = mod.DecryptFinal(uint64(h), o)
	}
	if r == p11.CKR_OK || r == p11.CKR_BUFFER_TOO_SMALL {
		*n = C.CK_ULONG(len(res))
	}
	if r == p11.CKR_OK && out != nil && len(res) > 0 {
		C.memcpy(unsafe.Pointer(out), unsafe.Pointer(&res[0]), C.size_t(len(res)))
	}
	return rv(r)
}

//export goVerify
func goVerify(h C.CK_SESSION_HANDLE, single C.int, in *C.CK_BYTE, inLen C.CK_ULONG, sig *C.CK_BYTE, sigLen C.CK_ULONG) C.CK_RV {
	switch {
	case inLen > p11.MaxBuffered:
		return goEndOp(h, 1, C.CKR_DATA_LEN_RANGE)
	case sigLen > 4096:
		return goEndOp(h, 1, C.CKR_SIGNATURE_LEN_RANGE)
	}
	if single != 0 {
		return rv(mod.Verify(uint64(h), bytesOf(in, inLen), bytesOf(sig, sigLen)))
	}
	return rv(mod.VerifyFinal(uint64(h), bytesOf(sig, sigLen)))
}

//export goGenerateKey
func goGenerateKey(h C.CK_SESSION_HANDLE, cm *C.CK_MECHANISM, t *C.CK_ATTRIBUTE, n C.CK_ULONG, key *C.CK_OBJECT_HANDLE) C.CK_RV {
	attrs, r := template(t, n)
	if r != C.CKR_OK {
		return r
	}
	k, r2 := mod.GenerateKey(uint64(h), mechanism(cm), attrs)
	*key = C.CK_OBJECT_HANDLE(k)
	return rv(r2)
}

//export goGenerateKeyPair
func goGenerateKeyPair(h C.CK_SESSION_HANDLE, cm *C.CK_MECHANISM, pt *C.CK_ATTRIBUTE, pn C.CK_ULONG, st *C.CK_ATTRIBUTE, sn C.CK_ULONG, pub, priv *C.CK_OBJECT_HANDLE) C.CK_RV {
	pubAttrs, r := template(pt, pn)
	if r != C.CKR_OK {
		return r
	}
	privAttrs, r := template(st, sn)
	if r != C.CKR_OK {
		return r
	}
	a, b, r2 := mod.GenerateKeyPair(uint64(h), mechanism(cm), pubAttrs, privAttrs)
	*pub, *priv = C.CK_OBJECT_HANDLE(a), C.CK_OBJECT_HANDLE(b)
	return rv(r2)
}

//export goGenerateRandom
func goGenerateRandom(h C.CK_SESSION_HANDLE, out *C.CK_BYTE, n C.CK_ULONG) C.CK_RV {
	if n > p11.MaxBuffered {
		return C.CKR_DATA_LEN_RANGE
	}
	buf := make([]byte, int(n))
	r := mod.GenerateRandom(uint64(h), buf)
	if r == p11.CKR_OK && n > 0 {
		C.memcpy(unsafe.Pointer(out), unsafe.Pointer(&buf[0]), C.size_t(n))
	}
	return rv(r)
}
