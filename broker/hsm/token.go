package hsm

import (
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// initTokenMu serializes token initialization: finding the free slot and
// initializing it must not interleave.
var initTokenMu sync.Mutex

// InitToken initializes a fresh token in the first slot whose token is not
// yet initialized (SoftHSM always offers one), sets its SO and user PINs,
// and returns its serial number. It is how `hsmbrokerd dev` and the test
// fixtures make tokens without putting a PIN on any command line.
func InitToken(modulePath, label, soPIN, userPIN string) (string, error) {
	if label == "" || len(label) > 32 {
		return "", fmt.Errorf("%w: token label must be 1 to 32 characters", ErrInvalidInput)
	}
	if soPIN == "" || userPIN == "" {
		return "", fmt.Errorf("%w: SO and user PINs are required", ErrLogin)
	}
	ctx, err := loadModule(modulePath)
	if err != nil {
		return "", err
	}
	initTokenMu.Lock()
	defer initTokenMu.Unlock()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return "", wrapP11("C_GetSlotList", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimSpace(ti.Label) == label {
			return "", fmt.Errorf("%w: a token labelled %q exists", ErrExists, label)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 && !found {
			free, found = s, true
		}
	}
	if !found {
		return "", fmt.Errorf("%w: no slot with an uninitialized token", ErrNotFound)
	}
	if err := ctx.InitToken(free, soPIN, label); err != nil {
		return "", fmt.Errorf("initialize token %q: %w", label, wrapP11("C_InitToken", err))
	}
	slot, ti, err := findToken(ctx, label, "")
	if err != nil {
		return "", err
	}
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return "", wrapP11("C_OpenSession", err)
	}
	defer func() { _ = ctx.CloseSession(sh) }()
	if err := ctx.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return "", fmt.Errorf("log in as SO: %w", wrapP11("C_Login", err))
	}
	defer func() { _ = ctx.Logout(sh) }()
	if err := ctx.InitPIN(sh, userPIN); err != nil {
		return "", fmt.Errorf("set user PIN: %w", wrapP11("C_InitPIN", err))
	}
	return strings.TrimSpace(ti.SerialNumber), nil
}
