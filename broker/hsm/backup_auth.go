package hsm

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// A backup authenticator ties a backup's bytes to the cluster's domain key,
// so that a backup edited where it is kept (a principal made admin, a
// policy loosened, one key's blob moved to another's entry) is refused by a
// restore even when its SHA-256 was recomputed.
//
// It is computed in the token from the backup's SHA-256 and nothing else a
// restore does not have: the digest, prefixed with backupAuthContext and
// hashed again, becomes the value of a throwaway session secret, which the
// token wraps under the domain key with AES key wrap (RFC 3394, the
// unpadded variant, CKM_AES_KEY_WRAP). AES key wrap is deterministic and
// keyed, so wrapping the same digest again in any partition that holds the
// domain key gives the same 40 bytes, and no one without the domain key
// can make them. A restore recomputes it and compares.
//
// The broker wraps every key it keeps with the padded variant (RFC 5649,
// CKM_AES_KEY_WRAP_PAD), whose initial value differs from the unpadded
// one's, and never wraps a value a client chose; so no blob in the
// replicated state, whatever its owner made, is the authenticator of
// anything. The domain key's holders, the cluster's HSMs, are the only
// ones who can make one: an operator who can write backups but not use a
// cluster's HSM cannot.
//
// What it does not prove: that the backup is the newest one (an older,
// intact backup of the same cluster passes), or which cluster made it
// beyond its domain key (every cluster sharing a domain key, a restored
// one included, can authenticate the others' backups).

// backupAuthContext separates the authenticator's input from any other
// digest of the same bytes.
const backupAuthContext = "hsmbroker backup authenticator v1\x00"

// BackupAuthenticatorSize is the length of an authenticator: AES key wrap
// of a 32-byte value.
const BackupAuthenticatorSize = 40

// ErrNotAuthentic is matched by the error for a backup whose authenticator
// does not match its bytes.
var ErrNotAuthentic = errors.New("hsm: backup authenticator does not match")

var wrapMech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}

// BackupAuthenticator returns the authenticator of a backup whose SHA-256
// is digest, made under this partition's domain key.
func (p *Partition) BackupAuthenticator(ctx context.Context, digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("%w: a backup digest of %d bytes, want %d (SHA-256)", ErrInvalidInput, len(digest), sha256.Size)
	}
	dk, err := p.domainKeyHandle(ctx)
	if err != nil {
		return nil, err
	}
	value := sha256.Sum256(append([]byte(backupAuthContext), digest...))
	var out []byte
	err = p.do(ctx, func(sh pkcs11.SessionHandle) error {
		h, err := p.m.CreateObject(sh, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, false),
			attr(pkcs11.CKA_SENSITIVE, false), attr(pkcs11.CKA_EXTRACTABLE, true),
			attr(pkcs11.CKA_SIGN, false), attr(pkcs11.CKA_VERIFY, false),
			attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_DECRYPT, false),
			attr(pkcs11.CKA_WRAP, false), attr(pkcs11.CKA_UNWRAP, false), attr(pkcs11.CKA_DERIVE, false),
			attr(pkcs11.CKA_VALUE, value[:]),
		})
		if err != nil {
			return fmt.Errorf("backup authenticator: %w", wrapP11("C_CreateObject", err))
		}
		defer func() { _ = p.m.DestroyObject(sh, h) }()
		out, err = p.m.WrapKey(sh, wrapMech, dk, h)
		if err != nil {
			p.domainKeyGone(err)
			return fmt.Errorf("backup authenticator: %w", wrapP11("C_WrapKey", err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) != BackupAuthenticatorSize {
		return nil, fmt.Errorf("%w: the token made a backup authenticator of %d bytes, want %d", ErrUnsupported, len(out), BackupAuthenticatorSize)
	}
	return out, nil
}

// VerifyBackupAuthenticator checks auth against the backup whose SHA-256
// is digest: nil if this partition's domain key made it, ErrNotAuthentic
// if not.
func (p *Partition) VerifyBackupAuthenticator(ctx context.Context, digest, auth []byte) error {
	if len(auth) != BackupAuthenticatorSize {
		return fmt.Errorf("%w: an authenticator of %d bytes, want %d", ErrNotAuthentic, len(auth), BackupAuthenticatorSize)
	}
	want, err := p.BackupAuthenticator(ctx, digest)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(want, auth) != 1 {
		return ErrNotAuthentic
	}
	return nil
}
