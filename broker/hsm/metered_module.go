package hsm

import (
	"errors"
	"time"

	"github.com/miekg/pkcs11"
)

// meteredModule is a module whose calls are timed and whose errors are
// counted (metrics.go). Open puts it outermost, so injected faults count
// like real ones.
type meteredModule struct {
	m   module
	obs map[string]callObserver
}

var _ module = (*meteredModule)(nil)

func newMeteredModule(m module) *meteredModule {
	w := &meteredModule{m: m, obs: map[string]callObserver{}}
	for _, name := range []string{
		"C_GetSlotList", "C_GetTokenInfo", "C_GetMechanismList", "C_GetInfo", "C_OpenSession",
		"C_CloseSession", "C_GetSessionInfo", "C_Login", "C_FindObjectsInit", "C_FindObjects",
		"C_FindObjectsFinal", "C_CreateObject", "C_DestroyObject", "C_GetAttributeValue",
		"C_GenerateKey", "C_GenerateKeyPair", "C_WrapKey", "C_UnwrapKey", "C_EncryptInit", "C_Encrypt",
		"C_DecryptInit", "C_Decrypt", "C_SignInit", "C_Sign", "C_GenerateRandom",
	} {
		w.obs[name] = newCallObserver(name)
	}
	return w
}

func (w *meteredModule) GetSlotList(tp bool) ([]uint, error) {
	start := time.Now()
	r0, err := w.m.GetSlotList(tp)
	w.obs["C_GetSlotList"].done(start, err)
	return r0, err
}

func (w *meteredModule) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	start := time.Now()
	r0, err := w.m.GetTokenInfo(slot)
	w.obs["C_GetTokenInfo"].done(start, err)
	return r0, err
}

func (w *meteredModule) GetMechanismList(slot uint) ([]*pkcs11.Mechanism, error) {
	start := time.Now()
	r0, err := w.m.GetMechanismList(slot)
	w.obs["C_GetMechanismList"].done(start, err)
	return r0, err
}

func (w *meteredModule) GetInfo() (pkcs11.Info, error) {
	start := time.Now()
	r0, err := w.m.GetInfo()
	w.obs["C_GetInfo"].done(start, err)
	return r0, err
}

func (w *meteredModule) OpenSession(slot uint, flags uint) (pkcs11.SessionHandle, error) {
	start := time.Now()
	r0, err := w.m.OpenSession(slot, flags)
	w.obs["C_OpenSession"].done(start, err)
	return r0, err
}

func (w *meteredModule) CloseSession(sh pkcs11.SessionHandle) (err error) {
	start := time.Now()
	err = w.m.CloseSession(sh)
	w.obs["C_CloseSession"].done(start, err)
	return err
}

func (w *meteredModule) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	start := time.Now()
	r0, err := w.m.GetSessionInfo(sh)
	w.obs["C_GetSessionInfo"].done(start, err)
	return r0, err
}

func (w *meteredModule) Login(sh pkcs11.SessionHandle, ut uint, pin string) (err error) {
	start := time.Now()
	err = w.m.Login(sh, ut, pin)
	w.obs["C_Login"].done(start, err)
	return err
}

func (w *meteredModule) FindObjectsInit(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) (err error) {
	start := time.Now()
	err = w.m.FindObjectsInit(sh, t)
	w.obs["C_FindObjectsInit"].done(start, err)
	return err
}

func (w *meteredModule) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	start := time.Now()
	r0, r1, err := w.m.FindObjects(sh, max)
	w.obs["C_FindObjects"].done(start, err)
	return r0, r1, err
}

func (w *meteredModule) FindObjectsFinal(sh pkcs11.SessionHandle) (err error) {
	start := time.Now()
	err = w.m.FindObjectsFinal(sh)
	w.obs["C_FindObjectsFinal"].done(start, err)
	return err
}

func (w *meteredModule) CreateObject(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	start := time.Now()
	r0, err := w.m.CreateObject(sh, t)
	w.obs["C_CreateObject"].done(start, err)
	return r0, err
}

func (w *meteredModule) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) (err error) {
	start := time.Now()
	err = w.m.DestroyObject(sh, oh)
	w.obs["C_DestroyObject"].done(start, err)
	return err
}

func (w *meteredModule) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	start := time.Now()
	r0, err := w.m.GetAttributeValue(sh, o, a)
	w.obs["C_GetAttributeValue"].done(start, err)
	return r0, err
}

func (w *meteredModule) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	start := time.Now()
	r0, err := w.m.GenerateKey(sh, m, t)
	w.obs["C_GenerateKey"].done(start, err)
	return r0, err
}

func (w *meteredModule) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	start := time.Now()
	r0, r1, err := w.m.GenerateKeyPair(sh, m, pub, priv)
	w.obs["C_GenerateKeyPair"].done(start, err)
	return r0, r1, err
}

func (w *meteredModule) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wk, k pkcs11.ObjectHandle) ([]byte, error) {
	start := time.Now()
	r0, err := w.m.WrapKey(sh, m, wk, k)
	w.obs["C_WrapKey"].done(start, err)
	return r0, err
}

func (w *meteredModule) UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, uk pkcs11.ObjectHandle, wrapped []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	start := time.Now()
	r0, err := w.m.UnwrapKey(sh, m, uk, wrapped, a)
	w.obs["C_UnwrapKey"].done(start, err)
	return r0, err
}

func (w *meteredModule) GenerateRandom(sh pkcs11.SessionHandle, n int) ([]byte, error) {
	start := time.Now()
	r0, err := w.m.GenerateRandom(sh, n)
	w.obs["C_GenerateRandom"].done(start, err)
	return r0, err
}

// Once is timed as its operation (C_Encrypt, C_Decrypt, C_Sign): the
// Init and any C_GenerateRandom before it are in the same crossing and
// not timed apart. A failure counts against the function that failed.
func (w *meteredModule) Once(sh pkcs11.SessionHandle, a onceArgs) ([]byte, error) {
	start := time.Now()
	r0, err := w.m.Once(sh, a)
	name := stepNames[a.op][2]
	if pe := (*p11Error)(nil); err != nil && errors.As(err, &pe) {
		name = pe.op
	}
	w.obs[name].done(start, err)
	return r0, err
}
