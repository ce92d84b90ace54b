package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Sentinel errors. Every error the package returns wraps one of them.
var (
	// ErrNotFound: a token, key or object the call needs does not exist.
	ErrNotFound = errors.New("hsm: not found")
	// ErrInvalidInput: the request is malformed for the token (bad length,
	// wrong key type for the mechanism, a blob that does not unwrap).
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrUnavailable: the token cannot be reached right now (device removed,
	// call timed out, partition closed). Retryable.
	ErrUnavailable = errors.New("hsm: unavailable")
	// ErrBusy: no session became free within Config.SessionWait.
	ErrBusy = errors.New("hsm: busy")
	// ErrLogin: the PIN was refused or the token is locked.
	ErrLogin = errors.New("hsm: login failed")
	// ErrUnsupported: the token lacks a mechanism the call needs.
	ErrUnsupported = errors.New("hsm: unsupported")
	// ErrDecrypt: a decryption or authentication-tag check failed. It is
	// deliberately uninformative so that it cannot serve as an oracle.
	ErrDecrypt = errors.New("hsm: decryption failed")
	// ErrNoDomainKey: the partition holds no domain key, so it can neither
	// make nor use wrapped keys.
	ErrNoDomainKey = errors.New("hsm: no domain key in partition")
	// ErrWrongDomainKey: the partition's domain key is not the cluster's.
	ErrWrongDomainKey = errors.New("hsm: partition holds a different domain key")
	// ErrExists: the object to create exists already.
	ErrExists = errors.New("hsm: already exists")
)

// ckrName is the CKR_* name of a PKCS#11 error, for messages.
func ckrName(code uint) string { return pkcs11.Error(code).Error() }

// sentinelFor maps a CKR_* code onto the sentinel it belongs to.
func sentinelFor(code uint) error {
	switch code {
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return ErrNotFound
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		// The wrapping key of every wrap and unwrap is the partition's own
		// (the domain key, or a join's transport key), never the request's:
		// its handle naming nothing means the token lost it.
		pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID, pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_HOST_MEMORY,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_GENERAL_ERROR,
		pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_SESSION_COUNT:
		return ErrUnavailable
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED,
		pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
		return ErrLogin
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED:
		return ErrUnsupported
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE,
		pkcs11.CKR_SIGNATURE_INVALID:
		return ErrDecrypt
	}
	return ErrInvalidInput
}

// p11Error is a PKCS#11 failure: which call, which CKR code, and the
// sentinel it maps onto.
type p11Error struct {
	op   string
	code uint
}

func (e *p11Error) Error() string { return fmt.Sprintf("hsm: %s: %s", e.op, ckrName(e.code)) }

// Unwrap lets errors.Is find the sentinel.
func (e *p11Error) Unwrap() error { return sentinelFor(e.code) }

// wrapP11 turns a miekg/pkcs11 error into a p11Error naming the call; other
// errors pass through.
func wrapP11(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		return &p11Error{op: op, code: uint(pe)}
	}
	return err
}

// ckrOf extracts the CKR code from an error, if it carries one.
// PINRefused reports whether err is a token refusing the PIN itself
// (wrong, locked, expired or malformed): not a condition that a retry
// clears, and one that retries make worse, since HSMs lock a partition or
// crypto user after repeated wrong PINs.
func PINRefused(err error) bool {
	code, ok := ckrOf(err)
	switch {
	case !ok:
		return false
	case code == pkcs11.CKR_PIN_INCORRECT, code == pkcs11.CKR_PIN_LOCKED, code == pkcs11.CKR_PIN_EXPIRED,
		code == pkcs11.CKR_PIN_INVALID, code == pkcs11.CKR_PIN_LEN_RANGE:
		return true
	}
	return false
}

func ckrOf(err error) (uint, bool) {
	if err == nil {
		// Every successful call asks; errors.As would allocate its target.
		return 0, false
	}
	var pe *p11Error
	if errors.As(err, &pe) {
		return pe.code, true
	}
	var raw pkcs11.Error
	if errors.As(err, &raw) {
		return uint(raw), true
	}
	return 0, false
}

// sessionBroken reports whether err means the session that saw it is no
// longer usable and must be evicted from the pool.
func sessionBroken(err error) bool {
	code, ok := ckrOf(err)
	if !ok {
		return false
	}
	switch code {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return true
	}
	return false
}

// handleLost reports whether err means a cached object handle is gone
// (its session closed, or the slot dropped every handle).
func handleLost(err error) bool {
	code, ok := ckrOf(err)
	if !ok {
		return false
	}
	return code == pkcs11.CKR_OBJECT_HANDLE_INVALID || code == pkcs11.CKR_KEY_HANDLE_INVALID
}
