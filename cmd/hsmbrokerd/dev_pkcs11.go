package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
)

// devPKCS11Env prepares what libhsmbroker-pkcs11.so needs in dev mode: the
// admin's private key sealed under a PIN (made once, kept in dir), so that
// C_Login(CKU_USER) with HSMBROKER_PKCS11_PIN opens it and a wrong PIN gets
// CKR_PIN_INCORRECT. It returns the dev.env lines.
func devPKCS11Env(dir, adminKey string) ([][2]string, error) {
	pinFile := filepath.Join(dir, "pkcs11.pin")
	sealedFile := filepath.Join(dir, "tls", "admin-key.pkcs11.pem")
	pin, err := os.ReadFile(pinFile)
	if errors.Is(err, fs.ErrNotExist) {
		p, err := randomPIN()
		if err != nil {
			return nil, err
		}
		if err := pki.WriteFileAtomic(pinFile, []byte(p+"\n"), 0o600); err != nil {
			return nil, err
		}
		pin = []byte(p)
	} else if err != nil {
		return nil, fmt.Errorf("PKCS#11 PIN: %w", err)
	}
	keyPEM, err := os.ReadFile(adminKey)
	if err != nil {
		return nil, err
	}
	// Sealed again at each start: the admin key may have been reissued.
	sealed, err := p11.SealKey(keyPEM, strings.TrimSpace(string(pin)))
	clear(keyPEM)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(sealedFile, sealed, 0o600); err != nil {
		return nil, err
	}
	return [][2]string{
		{"# libhsmbroker-pkcs11.so: the admin key sealed under the PIN that C_Login takes", ""},
		{p11.EnvSealedKey, sealedFile},
		{p11.EnvPIN, strings.TrimSpace(string(pin))},
	}, nil
}
