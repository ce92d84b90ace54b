package hsm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/miekg/pkcs11"
)

// AuditKeyLabel labels the partition's audit MAC key.
//
// The audit key is one HMAC-SHA-256 key per partition (so per node: each
// node has its own partition), a token object generated in the HSM the
// first time it is needed and found by this label after that. It is
// sensitive and never extractable, and it can only sign (CKA_SIGN): it
// MACs the audit chain heads a node checkpoints through Raft, and a MAC is
// checked by computing it again, in the same HSM. A key per cluster would
// have to travel between HSMs the way the domain key does, and so be
// extractable; a key per node never leaves its token, at the price that
// only the node that made a checkpoint can check its MAC (hsmctl audit
// verify asks that node). See docs/SECURITY.md.
const AuditKeyLabel = "hsmbroker-audit-mac"

// MaxAuditMACInput bounds the message AuditMAC accepts.
const MaxAuditMACInput = 4096

func auditKeyTemplate(id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_SIGN, true), attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_WRAP, false), attr(pkcs11.CKA_UNWRAP, false), attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_LABEL, AuditKeyLabel), attr(pkcs11.CKA_ID, id), attr(pkcs11.CKA_VALUE_LEN, 32),
	}
}

// auditKeyLocked finds the audit key on the anchor, generating it if the
// partition has none yet.
func (p *Partition) auditKeyLocked(anchor pkcs11.SessionHandle) (pkcs11.ObjectHandle, error) {
	hs, err := p.findObjects(anchor, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_LABEL, AuditKeyLabel),
	})
	if err != nil {
		return 0, fmt.Errorf("find audit key: %w", err)
	}
	switch len(hs) {
	case 1:
		return hs[0], nil
	case 0:
	default:
		return 0, fmt.Errorf("%w: %d objects labelled %q in token %q; expected one audit key", ErrInvalidInput, len(hs), AuditKeyLabel, p.info.Label)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return 0, err
	}
	h, err := p.m.GenerateKey(anchor, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, auditKeyTemplate(id))
	if err != nil {
		return 0, fmt.Errorf("generate audit key: %w", wrapP11("C_GenerateKey", err))
	}
	p.log.Info("audit MAC key created", "token", p.info.Label)
	return h, nil
}

// AuditMAC returns the HMAC-SHA-256 of msg under the partition's audit
// key, creating the key the first time.
func (p *Partition) AuditMAC(ctx context.Context, msg []byte) ([]byte, error) {
	if len(msg) == 0 || len(msg) > MaxAuditMACInput {
		return nil, fmt.Errorf("%w: audit MAC input of %d bytes, want 1 to %d", ErrInvalidInput, len(msg), MaxAuditMACInput)
	}
	var mac []byte
	err := p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		h, err := p.auditKeyLocked(anchor)
		if err != nil {
			return err
		}
		mac, err = p.m.Once(anchor, onceArgs{op: opSign, mech: pkcs11.CKM_SHA256_HMAC, key: h, in: msg, outLen: sha256.Size})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit MAC: %w", err)
	}
	return mac, nil
}

// VerifyAuditMAC computes msg's audit MAC again and compares it with mac
// in constant time.
func (p *Partition) VerifyAuditMAC(ctx context.Context, msg, mac []byte) (bool, error) {
	want, err := p.AuditMAC(ctx, msg)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(want, mac) == 1, nil
}
