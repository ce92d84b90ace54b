package hsm

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/miekg/pkcs11"
)

// module is the narrow seam over exactly the PKCS#11 calls this package
// makes. *pkcs11.Ctx satisfies it; faultModule wraps one to inject
// failures for tests.
type module interface {
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	GetMechanismList(slotID uint) ([]*pkcs11.Mechanism, error)
	GetInfo() (pkcs11.Info, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error)
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingkey, key pkcs11.ObjectHandle) ([]byte, error)
	UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingkey pkcs11.ObjectHandle, wrappedkey []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	GenerateRandom(sh pkcs11.SessionHandle, length int) ([]byte, error)
	// Once is an operation's Init and single-part call (after
	// C_GenerateRandom, for a random draw larger than a data key) in one
	// crossing into C (direct.go): every encryption, decryption, signature
	// and MAC goes through it.
	Once(sh pkcs11.SessionHandle, a onceArgs) ([]byte, error)
}

var _ module = (*p11Module)(nil)

// loadedModules holds one initialized module per library path for the
// life of the process. A PKCS#11 library is a process-wide singleton
// (dlopen returns the same handle, C_Initialize may run once), so every
// Partition on the same library shares one context. Libraries are never
// finalized: another user in the process (crypto11, a second partition)
// may still hold sessions.
var loadedModules = struct {
	sync.Mutex
	byPath map[string]*p11Module
}{byPath: map[string]*p11Module{}}

// loadModule returns the shared, initialized context for path.
func loadModule(path string) (*p11Module, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no PKCS#11 module path configured", ErrInvalidInput)
	}
	loadedModules.Lock()
	defer loadedModules.Unlock()
	if m, ok := loadedModules.byPath[path]; ok {
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: PKCS#11 module %s: %v", ErrNotFound, path, err)
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: PKCS#11 module %s could not be loaded (not a PKCS#11 library?)", ErrInvalidInput, path)
	}
	if err := ctx.Initialize(); err != nil {
		var pe pkcs11.Error
		if !errors.As(err, &pe) || uint(pe) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			ctx.Destroy()
			return nil, fmt.Errorf("initialize PKCS#11 module %s: %w", path, wrapP11("C_Initialize", err))
		}
	}
	m, err := newP11Module(path, ctx)
	if err != nil {
		return nil, err
	}
	loadedModules.byPath[path] = m
	return m, nil
}
