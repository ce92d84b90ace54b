// Package hsm is the PKCS#11 partition layer of hsmbroker: module loading,
// login, sessions, the capability probe, the cluster domain key, key
// generation and wrapping, the cache of loaded key handles, and every
// cryptographic operation. It is the only package that imports
// github.com/miekg/pkcs11.
//
// # Key material
//
// Customer keys are generated inside the token as session objects, wrapped at
// once under the domain key with CKM_AES_KEY_WRAP_PAD, and destroyed; only the
// wrapped blob leaves the package. To use a key, the blob is unwrapped into a
// session object with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, and its
// handle is kept in a bounded LRU cache keyed by key id and version. There is
// no C_FindObjects on the hot path.
//
// # Concurrency
//
// A Partition is safe for concurrent use. Operations borrow a session from a
// bounded pool (withSession); a caller waits at most Config.SessionWait for
// one and then gets ErrBusy. Loaded key objects are created on one long-lived
// anchor session, because SoftHSM destroys session objects with the session
// that made them and drops every handle of a slot when its last session
// closes. When the anchor is lost, or an operation reports an invalid handle,
// the cache is purged and the key is unwrapped again, once, transparently.
//
// Every PKCS#11 call runs under a deadline (Config.CallTimeout, or the
// context's, whichever is sooner). A call that overruns returns ErrUnavailable
// to its caller; the session it holds is closed when the call finally returns,
// so a stalled token shows up as a full pool (ErrBusy) rather than as hung
// callers.
//
// # Errors
//
// CKR_* codes map onto a few sentinels (ErrNotFound, ErrInvalidInput,
// ErrUnavailable, ErrBusy, ErrLogin, ErrUnsupported, ErrDecrypt); callers test
// them with errors.Is. Error text never carries a PIN, key material or
// plaintext.
package hsm
