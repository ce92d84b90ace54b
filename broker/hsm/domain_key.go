package hsm

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// The domain key is one AES-256 token object per cluster, present in every
// member partition. It wraps and unwraps customer key material, and wraps
// backup digests into authenticators (backup_auth.go), and does nothing
// else (CKA_ENCRYPT and CKA_DECRYPT are false). It is extractable
// only so that it can travel HSM-to-HSM to a joining node under an RSA
// transport key; see TransportKey.

func (p *Partition) domainKeyTemplate(id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, true),
		attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_UNWRAP, true),
		attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_SIGN, false), attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_LABEL, p.cfg.DomainKeyLabel), attr(pkcs11.CKA_ID, id),
	}
}

// findDomainKeyLocked looks the domain key up by label on the anchor.
func (p *Partition) findDomainKeyLocked() (pkcs11.ObjectHandle, error) {
	hs, err := p.findObjects(p.anchor, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_LABEL, p.cfg.DomainKeyLabel),
	})
	if err != nil {
		return 0, fmt.Errorf("find domain key: %w", err)
	}
	switch len(hs) {
	case 0:
		return 0, ErrNoDomainKey
	case 1:
		p.domainKeySeen.Store(true)
		return hs[0], nil
	}
	return 0, fmt.Errorf("%w: %d objects labelled %q in token %q; expected one domain key", ErrInvalidInput, len(hs), p.cfg.DomainKeyLabel, p.info.Label)
}

// domainKeyHandle returns the domain key's handle, or ErrNoDomainKey.
func (p *Partition) domainKeyHandle(ctx context.Context) (pkcs11.ObjectHandle, error) {
	var dk pkcs11.ObjectHandle
	err := p.anchorDo(ctx, func(pkcs11.SessionHandle) error {
		if p.domainKey == 0 {
			h, err := p.findDomainKeyLocked()
			if err != nil {
				return err
			}
			p.domainKey = h
		}
		dk = p.domainKey
		return nil
	})
	if err != nil {
		return 0, err
	}
	return dk, nil
}

// HeldDomainKey reports whether the partition has held a domain key since
// it was opened. One that did and does not now (HasDomainKey false) lost it:
// the token's storage was lost or replaced under it. SoftHSM does not show
// objects again whose storage came back while it ran, so such a node needs
// its token restored and a restart.
func (p *Partition) HeldDomainKey() bool { return p.domainKeySeen.Load() }

// HasDomainKey reports whether the partition holds a domain key.
func (p *Partition) HasDomainKey(ctx context.Context) (bool, error) {
	_, err := p.domainKeyHandle(ctx)
	if errors.Is(err, ErrNoDomainKey) {
		return false, nil
	}
	return err == nil, err
}

// CreateDomainKey generates the domain key as a token object (cluster
// bootstrap). It fails with ErrExists if the partition has one.
func (p *Partition) CreateDomainKey(ctx context.Context) error {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	return p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		if h, err := p.findDomainKeyLocked(); err == nil && h != 0 {
			return fmt.Errorf("%w: token %q already holds a domain key", ErrExists, p.info.Label)
		} else if !errors.Is(err, ErrNoDomainKey) {
			return err
		}
		h, err := p.m.GenerateKey(anchor, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			append(p.domainKeyTemplate(id), attr(pkcs11.CKA_VALUE_LEN, 32)))
		if err != nil {
			return fmt.Errorf("generate domain key: %w", wrapP11("C_GenerateKey", err))
		}
		p.domainKey = h
		p.domainKeySeen.Store(true)
		p.log.Info("domain key created", "token", p.info.Label)
		return nil
	})
}

// DomainKeyCheck makes a check blob: a throwaway AES key wrapped under the
// domain key. Stored with the cluster's state, it lets any partition prove
// it holds the same domain key (VerifyDomainKey) without the key ever
// leaving a token: AES key wrap carries an integrity check, so a blob
// unwraps only under the key that made it.
func (p *Partition) DomainKeyCheck(ctx context.Context) ([]byte, error) {
	g, err := p.GenerateKey(ctx, "SYMMETRIC_DEFAULT")
	if err != nil {
		return nil, err
	}
	return g.Wrapped, nil
}

// VerifyDomainKey checks a blob from DomainKeyCheck against this
// partition's domain key: nil if it unwraps, ErrWrongDomainKey if not,
// ErrNoDomainKey if the partition has none, ErrInvalidInput if there is no
// blob (a state that never recorded one proves nothing).
func (p *Partition) VerifyDomainKey(ctx context.Context, check []byte) error {
	if len(check) == 0 {
		return fmt.Errorf("%w: no domain key check to verify the domain key against", ErrInvalidInput)
	}
	dk, err := p.domainKeyHandle(ctx)
	if err != nil {
		return err
	}
	tmpl, _ := unwrapTemplate(KeyRef{Spec: "SYMMETRIC_DEFAULT", Usage: "ENCRYPT_DECRYPT"}, true)
	return p.do(ctx, func(sh pkcs11.SessionHandle) error {
		h, err := p.m.UnwrapKey(sh, wrapPadMech, dk, check, tmpl)
		if err != nil {
			p.domainKeyGone(err)
			err = wrapP11("C_UnwrapKey", err)
			if p.inputRejected(sh, err) {
				return fmt.Errorf("%w: token %q", ErrWrongDomainKey, p.info.Label)
			}
			return err
		}
		_ = p.m.DestroyObject(sh, h)
		return nil
	})
}

// transportPair is the RSA key pair a joining partition makes to receive
// the domain key. The private half can only unwrap and never leaves the
// token; both halves are session objects on the anchor, so they vanish
// with it.
type transportPair struct {
	pub, priv pkcs11.ObjectHandle
}

// transportBits is the size of the transport key.
const transportBits = 3072

// TransportKey makes (or returns the pending) transport key pair in this
// partition and returns its public half as DER SPKI, for a join request.
func (p *Partition) TransportKey(ctx context.Context) ([]byte, error) {
	var der []byte
	err := p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		if p.transport == nil {
			pub, priv, err := p.m.GenerateKeyPair(anchor,
				[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
				[]*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_MODULUS_BITS, transportBits),
					attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}), attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_ENCRYPT, false)},
				[]*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, true),
					attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
					attr(pkcs11.CKA_UNWRAP, true), attr(pkcs11.CKA_DECRYPT, false), attr(pkcs11.CKA_SIGN, false)})
			if err != nil {
				return fmt.Errorf("generate transport key: %w", wrapP11("C_GenerateKeyPair", err))
			}
			p.transport = &transportPair{pub: pub, priv: priv}
		}
		var err error
		der, err = p.publicKeyDER(anchor, "RSA_3072", p.transport.pub)
		return err
	})
	if err != nil {
		return nil, err
	}
	return der, nil
}

// transportMechanism is how the domain key travels: RSA-OAEP with SHA-1,
// the variant SoftHSM 2.6 and every production HSM accept for C_WrapKey.
// The OAEP hash does not weaken the wrap (it is not used as a signature).
const transportMechanism = "CKM_RSA_PKCS_OAEP/SHA-1"

func transportMech() []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, pkcs11.CKZ_DATA_SPECIFIED, nil))}
}

// ParseTransportPublicKey parses a joining partition's transport public key
// (DER SubjectPublicKeyInfo, RSA 2048 to 4096 bits, as TransportKey makes
// it) for WrapDomainKeyFor; anything else is ErrInvalidInput. A join
// parses it once, before it spends the join token.
func ParseTransportPublicKey(der []byte) (*rsa.PublicKey, error) {
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: transport public key is not DER SubjectPublicKeyInfo: %v", ErrInvalidInput, err)
	}
	rk, ok := pk.(*rsa.PublicKey)
	if !ok || rk.N.BitLen() < 2048 || rk.N.BitLen() > 4096 {
		return nil, fmt.Errorf("%w: transport public key must be RSA 2048 to 4096 bits", ErrInvalidInput)
	}
	return rk, nil
}

// WrapDomainKeyFor wraps this partition's domain key to a joining
// partition's transport public key (from ParseTransportPublicKey), inside
// the token. It returns the wrapped key and the mechanism's name.
func (p *Partition) WrapDomainKeyFor(ctx context.Context, rk *rsa.PublicKey) ([]byte, string, error) {
	if rk == nil {
		return nil, "", fmt.Errorf("%w: no transport public key", ErrInvalidInput)
	}
	dk, err := p.domainKeyHandle(ctx)
	if err != nil {
		return nil, "", err
	}
	var wrapped []byte
	err = p.do(ctx, func(sh pkcs11.SessionHandle) error {
		pub, err := p.m.CreateObject(sh, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_ENCRYPT, false),
			attr(pkcs11.CKA_MODULUS, rk.N.Bytes()), attr(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(rk.E)).Bytes()),
		})
		if err != nil {
			return fmt.Errorf("import transport public key: %w", wrapP11("C_CreateObject", err))
		}
		defer func() { _ = p.m.DestroyObject(sh, pub) }()
		wrapped, err = p.m.WrapKey(sh, transportMech(), pub, dk)
		if err != nil {
			p.domainKeyGone(err)
			return fmt.Errorf("wrap domain key for transport: %w", wrapP11("C_WrapKey", err))
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return wrapped, transportMechanism, nil
}

// ImportDomainKey unwraps a domain key sent by WrapDomainKeyFor with the
// pending transport private key and stores it as this partition's domain
// key (a token object). The transport pair is destroyed afterwards. It
// fails with ErrExists if the partition has a domain key already.
func (p *Partition) ImportDomainKey(ctx context.Context, wrapped []byte, mechanism string) error {
	if mechanism != transportMechanism {
		return fmt.Errorf("%w: domain key transport mechanism %q (want %s)", ErrUnsupported, mechanism, transportMechanism)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	return p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		if p.transport == nil {
			return fmt.Errorf("%w: no transport key pending; call TransportKey first", ErrInvalidInput)
		}
		if h, err := p.findDomainKeyLocked(); err == nil && h != 0 {
			return fmt.Errorf("%w: token %q already holds a domain key", ErrExists, p.info.Label)
		} else if !errors.Is(err, ErrNoDomainKey) {
			return err
		}
		h, err := p.m.UnwrapKey(anchor, transportMech(), p.transport.priv, wrapped, p.domainKeyTemplate(id))
		if err != nil {
			return fmt.Errorf("unwrap transported domain key: %w", wrapP11("C_UnwrapKey", err))
		}
		p.domainKey = h
		p.domainKeySeen.Store(true)
		p.closeTransportLocked()
		p.log.Info("domain key imported", "token", p.info.Label)
		return nil
	})
}

// closeTransportLocked destroys the pending transport pair; the anchor
// lock is held.
func (p *Partition) closeTransportLocked() {
	if p.transport != nil && p.anchor != 0 {
		_ = p.m.DestroyObject(p.anchor, p.transport.priv)
		_ = p.m.DestroyObject(p.anchor, p.transport.pub)
	}
	p.transport = nil
}

// dropTransportLocked forgets the transport pair whose objects died with
// the anchor session.
func (p *Partition) dropTransportLocked() { p.transport = nil }
