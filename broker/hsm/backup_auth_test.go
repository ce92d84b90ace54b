package hsm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestBackupAuthenticator: an authenticator is the same in every partition
// holding the domain key, verifies there, and fails for other bytes, another
// domain key, a changed authenticator and a partition with no domain key.
func TestBackupAuthenticator(t *testing.T) {
	ps := hsmtest.SharedDomainPartitions(t, 2)
	a, b := ps[0], ps[1]
	ctx := ctxT(t)
	digest := sha256.Sum256([]byte("a backup"))
	auth, err := a.BackupAuthenticator(ctx, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if len(auth) != hsm.BackupAuthenticatorSize {
		t.Fatalf("authenticator of %d bytes, want %d", len(auth), hsm.BackupAuthenticatorSize)
	}
	again, err := b.BackupAuthenticator(ctx, digest[:])
	if err != nil || !bytes.Equal(again, auth) {
		t.Fatalf("the other partition's authenticator %x (%v), want %x", again, err, auth)
	}
	if err := b.VerifyBackupAuthenticator(ctx, digest[:], auth); err != nil {
		t.Fatalf("verify in the other partition: %v", err)
	}

	other := sha256.Sum256([]byte("a backup, edited"))
	if otherAuth, err := a.BackupAuthenticator(ctx, other[:]); err != nil || bytes.Equal(otherAuth, auth) {
		t.Fatalf("another digest gave %x (%v)", otherAuth, err)
	}
	if err := b.VerifyBackupAuthenticator(ctx, other[:], auth); !errors.Is(err, hsm.ErrNotAuthentic) {
		t.Fatalf("verify against other bytes: %v, want ErrNotAuthentic", err)
	}
	for i := range auth {
		changed := bytes.Clone(auth)
		changed[i] ^= 0x80
		if err := a.VerifyBackupAuthenticator(ctx, digest[:], changed); !errors.Is(err, hsm.ErrNotAuthentic) {
			t.Fatalf("byte %d changed: %v, want ErrNotAuthentic", i, err)
		}
	}
	for _, bad := range [][]byte{nil, auth[:39], append(bytes.Clone(auth), 0)} {
		if err := a.VerifyBackupAuthenticator(ctx, digest[:], bad); !errors.Is(err, hsm.ErrNotAuthentic) {
			t.Fatalf("an authenticator of %d bytes: %v, want ErrNotAuthentic", len(bad), err)
		}
	}
	if _, err := a.BackupAuthenticator(ctx, digest[:31]); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("a 31-byte digest: %v, want ErrInvalidInput", err)
	}

	// Another domain key: another authenticator, and this one fails.
	c := hsmtest.NewPartition(t)
	if err := c.VerifyBackupAuthenticator(ctx, digest[:], auth); !errors.Is(err, hsm.ErrNotAuthentic) {
		t.Fatalf("verify under another domain key: %v, want ErrNotAuthentic", err)
	}
	// No domain key: nothing to verify with.
	d := hsmtest.Open(t, hsmtest.NewToken(t))
	if err := d.VerifyBackupAuthenticator(ctx, digest[:], auth); !errors.Is(err, hsm.ErrNoDomainKey) {
		t.Fatalf("verify without a domain key: %v, want ErrNoDomainKey", err)
	}
}
