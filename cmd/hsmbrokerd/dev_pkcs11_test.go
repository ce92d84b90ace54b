package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
)

// checkPKCS11Seal checks dev.env's sealed admin key: the PIN opens it to
// the admin key file's content, and another PIN does not.
func checkPKCS11Seal(t *testing.T, env map[string]string) {
	t.Helper()
	sealed, err := os.ReadFile(env[p11.EnvSealedKey])
	if err != nil {
		t.Fatal(err)
	}
	key, err := p11.OpenSealedKey(sealed, env[p11.EnvPIN])
	if err != nil {
		t.Fatalf("the PIN of dev.env does not open the sealed key: %v", err)
	}
	want, err := os.ReadFile(env["HSMBROKER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, want) {
		t.Fatal("the sealed key is not the admin key")
	}
	if _, err := p11.OpenSealedKey(sealed, env[p11.EnvPIN]+"x"); err != p11.ErrPINIncorrect {
		t.Fatalf("another PIN: %v", err)
	}
}
