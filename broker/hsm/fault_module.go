package hsm

import (
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// CKR codes that fault rules commonly inject, so callers need not import
// miekg/pkcs11.
const (
	CKRGeneralError         = pkcs11.CKR_GENERAL_ERROR
	CKRDeviceError          = pkcs11.CKR_DEVICE_ERROR
	CKRDeviceRemoved        = pkcs11.CKR_DEVICE_REMOVED
	CKRTokenNotPresent      = pkcs11.CKR_TOKEN_NOT_PRESENT
	CKRSessionHandleInvalid = pkcs11.CKR_SESSION_HANDLE_INVALID
	CKRSessionClosed        = pkcs11.CKR_SESSION_CLOSED
	CKRUserNotLoggedIn      = pkcs11.CKR_USER_NOT_LOGGED_IN
	CKRObjectHandleInvalid  = pkcs11.CKR_OBJECT_HANDLE_INVALID
	CKRKeyHandleInvalid     = pkcs11.CKR_KEY_HANDLE_INVALID
	CKRMechanismInvalid     = pkcs11.CKR_MECHANISM_INVALID
	CKRArgumentsBad         = pkcs11.CKR_ARGUMENTS_BAD
	CKRPinIncorrect         = pkcs11.CKR_PIN_INCORRECT
)

// FaultRule makes matching PKCS#11 calls fail or stall.
type FaultRule struct {
	// Call is the PKCS#11 function name ("C_Sign", "C_UnwrapKey", ...), or
	// "*" for every call.
	Call string
	// Code is the CKR_* code the call returns instead of running; 0 lets the
	// call run (after any Stall).
	Code uint
	// Stall delays the call by this long before it runs or fails.
	Stall time.Duration
	// After lets this many matching calls through untouched first.
	After int
	// Times is how many matching calls the rule affects; 0 means all.
	Times int
}

// Faults is a set of fault rules applied on top of a real PKCS#11 module
// (Config.Faults). It is safe for concurrent use, and rules may be added
// or cleared while the partition is serving.
type Faults struct {
	mu    sync.Mutex
	rules []*faultState
	calls map[string]int
}

type faultState struct {
	FaultRule
	seen, hit int
}

// Add installs a rule.
func (f *Faults) Add(r FaultRule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &faultState{FaultRule: r})
}

// Clear removes every rule.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Calls is how many times the named PKCS#11 function was called through
// the wrapper (faulted or not).
func (f *Faults) Calls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

// before is consulted by every wrapped call; it stalls and/or returns the
// injected error.
func (f *Faults) before(name string) error {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[name]++
	var stall time.Duration
	var code uint
	for _, r := range f.rules {
		if r.Call != "*" && r.Call != name {
			continue
		}
		r.seen++
		if r.seen <= r.After || (r.Times > 0 && r.hit >= r.Times) {
			continue
		}
		r.hit++
		stall += r.Stall
		if code == 0 {
			code = r.Code
		}
	}
	f.mu.Unlock()
	if stall > 0 {
		time.Sleep(stall)
	}
	if code != 0 {
		return pkcs11.Error(code)
	}
	return nil
}

// faultModule is a module whose calls first pass through Faults.
type faultModule struct {
	m module
	f *Faults
}

func (w faultModule) GetSlotList(tp bool) ([]uint, error) {
	if err := w.f.before("C_GetSlotList"); err != nil {
		return nil, err
	}
	return w.m.GetSlotList(tp)
}

func (w faultModule) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	if err := w.f.before("C_GetTokenInfo"); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	return w.m.GetTokenInfo(slot)
}

func (w faultModule) GetMechanismList(slot uint) ([]*pkcs11.Mechanism, error) {
	if err := w.f.before("C_GetMechanismList"); err != nil {
		return nil, err
	}
	return w.m.GetMechanismList(slot)
}

func (w faultModule) GetInfo() (pkcs11.Info, error) {
	if err := w.f.before("C_GetInfo"); err != nil {
		return pkcs11.Info{}, err
	}
	return w.m.GetInfo()
}

func (w faultModule) OpenSession(slot uint, flags uint) (pkcs11.SessionHandle, error) {
	if err := w.f.before("C_OpenSession"); err != nil {
		return 0, err
	}
	return w.m.OpenSession(slot, flags)
}

func (w faultModule) CloseSession(sh pkcs11.SessionHandle) error {
	if err := w.f.before("C_CloseSession"); err != nil {
		return err
	}
	return w.m.CloseSession(sh)
}

func (w faultModule) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	if err := w.f.before("C_GetSessionInfo"); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	return w.m.GetSessionInfo(sh)
}

func (w faultModule) Login(sh pkcs11.SessionHandle, ut uint, pin string) error {
	if err := w.f.before("C_Login"); err != nil {
		return err
	}
	return w.m.Login(sh, ut, pin)
}

func (w faultModule) FindObjectsInit(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) error {
	if err := w.f.before("C_FindObjectsInit"); err != nil {
		return err
	}
	return w.m.FindObjectsInit(sh, t)
}

func (w faultModule) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	if err := w.f.before("C_FindObjects"); err != nil {
		return nil, false, err
	}
	return w.m.FindObjects(sh, max)
}

func (w faultModule) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	if err := w.f.before("C_FindObjectsFinal"); err != nil {
		return err
	}
	return w.m.FindObjectsFinal(sh)
}

func (w faultModule) CreateObject(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := w.f.before("C_CreateObject"); err != nil {
		return 0, err
	}
	return w.m.CreateObject(sh, t)
}

func (w faultModule) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
	if err := w.f.before("C_DestroyObject"); err != nil {
		return err
	}
	return w.m.DestroyObject(sh, oh)
}

func (w faultModule) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if err := w.f.before("C_GetAttributeValue"); err != nil {
		return nil, err
	}
	return w.m.GetAttributeValue(sh, o, a)
}

func (w faultModule) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := w.f.before("C_GenerateKey"); err != nil {
		return 0, err
	}
	return w.m.GenerateKey(sh, m, t)
}

func (w faultModule) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := w.f.before("C_GenerateKeyPair"); err != nil {
		return 0, 0, err
	}
	return w.m.GenerateKeyPair(sh, m, pub, priv)
}

func (w faultModule) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wk, k pkcs11.ObjectHandle) ([]byte, error) {
	if err := w.f.before("C_WrapKey"); err != nil {
		return nil, err
	}
	return w.m.WrapKey(sh, m, wk, k)
}

func (w faultModule) UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, uk pkcs11.ObjectHandle, wrapped []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := w.f.before("C_UnwrapKey"); err != nil {
		return 0, err
	}
	return w.m.UnwrapKey(sh, m, uk, wrapped, a)
}

func (w faultModule) GenerateRandom(sh pkcs11.SessionHandle, n int) ([]byte, error) {
	if err := w.f.before("C_GenerateRandom"); err != nil {
		return nil, err
	}
	return w.m.GenerateRandom(sh, n)
}

// Once consults the rules for each call the operation makes, in order,
// before it makes any: a fault on the operation itself (C_Encrypt) fails
// it with nothing run, as a fault on the second of two separate calls
// would, except that no Init is left active.
func (w faultModule) Once(sh pkcs11.SessionHandle, a onceArgs) ([]byte, error) {
	names := stepNames[a.op]
	first := 1
	if a.randomLen > 0 {
		first = 0
	}
	for _, name := range names[first:] {
		if err := w.f.before(name); err != nil {
			return nil, wrapP11(name, err)
		}
	}
	return w.m.Once(sh, a)
}
