package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/hsmbroker/hsmbroker/keys"
	"github.com/miekg/pkcs11"
)

// KeyRef names one version of a customer key and carries what is needed to
// load it: its spec and usage (for the object template) and its blob,
// wrapped under the domain key.
type KeyRef struct {
	ID      string
	Version uint32
	Spec    keys.Spec
	Usage   keys.Usage
	Wrapped []byte
}

// Generated is a freshly generated key: the blob to store and, for
// asymmetric keys, the public half as DER SubjectPublicKeyInfo.
type Generated struct {
	Wrapped   []byte
	PublicKey []byte
}

var wrapPadMech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}

// curveOIDs are the DER-encoded namedCurve OIDs used as CKA_EC_PARAMS.
var curveOIDs = map[keys.Spec]asn1.ObjectIdentifier{
	keys.SpecECCNISTP256: {1, 2, 840, 10045, 3, 1, 7},
	keys.SpecECCNISTP384: {1, 3, 132, 0, 34},
	keys.SpecECCNISTP521: {1, 3, 132, 0, 35},
}

var curves = map[keys.Spec]elliptic.Curve{
	keys.SpecECCNISTP256: elliptic.P256(),
	keys.SpecECCNISTP384: elliptic.P384(),
	keys.SpecECCNISTP521: elliptic.P521(),
}

func hmacLen(s keys.Spec) int {
	switch s {
	case keys.SpecHMAC256:
		return 32
	case keys.SpecHMAC384:
		return 48
	case keys.SpecHMAC512:
		return 64
	}
	return 0
}

func attr(t uint, v any) *pkcs11.Attribute { return pkcs11.NewAttribute(t, v) }

// GenerateKey makes a key of the given spec inside the token as session
// objects, wraps the secret or private part under the domain key, reads the
// public part, and destroys the objects. Key material exists only inside
// the token.
func (p *Partition) GenerateKey(ctx context.Context, spec keys.Spec) (Generated, error) {
	if !spec.Valid() {
		return Generated{}, fmt.Errorf("%w: key spec %q", ErrInvalidInput, spec)
	}
	dk, err := p.domainKeyHandle(ctx)
	if err != nil {
		return Generated{}, err
	}
	// The closure may outlive an abandoned call (see call), so it shares
	// nothing with this frame but g, which is read only on success.
	var g Generated
	err = p.do(ctx, func(sh pkcs11.SessionHandle) error {
		var err error
		g = Generated{}
		// Generated objects are session objects that can be wrapped once
		// (extractable) but never read (sensitive).
		common := []*pkcs11.Attribute{
			attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, true),
			attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, true),
		}
		var secret, public pkcs11.ObjectHandle
		switch {
		case spec == keys.SpecSymmetricDefault:
			secret, err = p.m.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
				append(common, attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
					attr(pkcs11.CKA_VALUE_LEN, 32)))
			err = wrapP11("C_GenerateKey", err)
		case spec.IsHMAC():
			secret, err = p.m.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)},
				append(common, attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
					attr(pkcs11.CKA_VALUE_LEN, hmacLen(spec)), attr(pkcs11.CKA_SIGN, true)))
			err = wrapP11("C_GenerateKey", err)
		case spec.IsRSA():
			public, secret, err = p.m.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
				[]*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_MODULUS_BITS, spec.RSABits()),
					attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})},
				common)
			err = wrapP11("C_GenerateKeyPair", err)
		case spec.IsEC():
			oid, _ := asn1.Marshal(curveOIDs[spec])
			public, secret, err = p.m.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
				[]*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_EC_PARAMS, oid)},
				common)
			err = wrapP11("C_GenerateKeyPair", err)
		}
		if err != nil {
			return fmt.Errorf("generate %s: %w", spec, err)
		}
		defer func() {
			_ = p.m.DestroyObject(sh, secret)
			if public != 0 {
				_ = p.m.DestroyObject(sh, public)
			}
		}()
		if public != 0 {
			if g.PublicKey, err = p.publicKeyDER(sh, spec, public); err != nil {
				return err
			}
		}
		g.Wrapped, err = p.m.WrapKey(sh, wrapPadMech, dk, secret)
		if err != nil {
			p.domainKeyGone(err)
			return fmt.Errorf("wrap new %s key under the domain key: %w", spec, wrapP11("C_WrapKey", err))
		}
		return nil
	})
	if err != nil {
		return Generated{}, err
	}
	return g, nil
}

// publicKeyDER reads a public key object and encodes it as DER SPKI.
func (p *Partition) publicKeyDER(sh pkcs11.SessionHandle, spec keys.Spec, h pkcs11.ObjectHandle) ([]byte, error) {
	var pub any
	if spec.IsRSA() {
		a, err := p.m.GetAttributeValue(sh, h, []*pkcs11.Attribute{attr(pkcs11.CKA_MODULUS, nil), attr(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, fmt.Errorf("read RSA public key: %w", wrapP11("C_GetAttributeValue", err))
		}
		e := new(big.Int).SetBytes(a[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, fmt.Errorf("%w: RSA public exponent out of range", ErrInvalidInput)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(e.Int64())}
	} else {
		a, err := p.m.GetAttributeValue(sh, h, []*pkcs11.Attribute{attr(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("read EC public key: %w", wrapP11("C_GetAttributeValue", err))
		}
		// CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point.
		var raw []byte
		if rest, err := asn1.Unmarshal(a[0].Value, &raw); err != nil || len(rest) != 0 {
			raw = a[0].Value
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(curves[spec], raw)
		if err != nil {
			return nil, fmt.Errorf("%w: EC point from token is not on %s: %v", ErrInvalidInput, spec, err)
		}
		pub = pk
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return der, nil
}

// unwrapTemplate is the template of a loaded (working) copy: a session
// object that is sensitive, never extractable, and allowed only what its
// usage needs.
//
// private sets CKA_PRIVATE. A working copy is public (private false) when
// the token allows it: a session object is visible only to this process's
// sessions, all of which are logged in, and never reaches the token's
// storage, so CKA_PRIVATE would decide only whether the token keeps the
// key encrypted under its own key in the same memory and decrypts it again
// on every C_SignInit and C_EncryptInit (SoftHSM does; docs/SECURITY.md,
// "HSM attribute policy"). A token that refuses a public private key gets
// private copies (Partition.privateCopies).
func unwrapTemplate(k KeyRef, private bool) ([]*pkcs11.Attribute, error) {
	t := []*pkcs11.Attribute{
		attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, private),
		attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_UNWRAP, false),
	}
	enc := k.Usage == keys.UsageEncryptDecrypt
	sign := k.Usage == keys.UsageSignVerify || k.Usage == keys.UsageGenerateVerifyMAC
	switch {
	case k.Spec == keys.SpecSymmetricDefault:
		return append(t, attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			attr(pkcs11.CKA_WRAP, false), attr(pkcs11.CKA_ENCRYPT, true), attr(pkcs11.CKA_DECRYPT, true)), nil
	case k.Spec.IsHMAC():
		return append(t, attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_WRAP, false), attr(pkcs11.CKA_SIGN, true)), nil
	case k.Spec.IsRSA():
		return append(t, attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			attr(pkcs11.CKA_DECRYPT, enc), attr(pkcs11.CKA_SIGN, sign)), nil
	case k.Spec.IsEC():
		return append(t, attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			attr(pkcs11.CKA_SIGN, true)), nil
	}
	return nil, fmt.Errorf("%w: key spec %q", ErrInvalidInput, k.Spec)
}

// load returns the handle of k's working copy, unwrapping it on a miss.
func (p *Partition) load(ctx context.Context, k KeyRef) (pkcs11.ObjectHandle, error) {
	if h, ok := p.cache.get(k); ok {
		return h, nil
	}
	return p.unwrapIntoCache(ctx, k)
}

// Preload loads k's working copy into the handle cache ahead of its first
// use, so that the use does not pay for C_UnwrapKey. It counts no cache
// hit or miss, and it loads nothing when k is loaded already or the cache
// is full (a preload never evicts a key that was used). loaded reports
// whether it unwrapped k.
func (p *Partition) Preload(ctx context.Context, k KeyRef) (loaded bool, err error) {
	if _, ok := p.cache.peek(k); ok || p.cache.len() >= p.cfg.CacheSize {
		return false, nil
	}
	if _, err := p.unwrapIntoCache(ctx, k); err != nil {
		return false, err
	}
	return true, nil
}

// unwrapIntoCache unwraps k under the domain key into a session object of
// the anchor session and caches its handle.
func (p *Partition) unwrapIntoCache(ctx context.Context, k KeyRef) (pkcs11.ObjectHandle, error) {
	if err := checkLoadable(k); err != nil {
		return 0, err
	}
	var h pkcs11.ObjectHandle
	load := func(anchor pkcs11.SessionHandle) error {
		if cached, ok := p.cache.lookup(k); ok {
			h = cached // another caller loaded it while we waited
			return nil
		}
		nh, err := p.unwrapLoaded(anchor, k)
		if err != nil {
			return err
		}
		h = nh
		for _, old := range p.cache.put(k, nh) {
			_ = p.m.DestroyObject(anchor, old)
		}
		return nil
	}
	err := p.anchorDo(ctx, load)
	if sessionBroken(err) {
		// The anchor died under us; anchorDo reopens it on the next call.
		err = p.anchorDo(ctx, load)
	}
	if err != nil {
		return 0, err // h is not read: an abandoned load may still set it
	}
	return h, nil
}

// CheckUnwraps unwraps k's blob under the domain key and destroys the copy
// at once, without caching it: it tells whether the blob is usable on this
// partition before anything depends on it (a restore checks every version
// of a backup's keys). A blob that does not unwrap answers
// ErrWrongDomainKey, as a use of it would.
func (p *Partition) CheckUnwraps(ctx context.Context, k KeyRef) error {
	if err := checkLoadable(k); err != nil {
		return err
	}
	return p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		h, err := p.unwrapLoaded(anchor, k)
		if err != nil {
			return err
		}
		return wrapP11("C_DestroyObject", p.m.DestroyObject(anchor, h))
	})
}

// checkLoadable refuses a KeyRef no working copy can be made of.
func checkLoadable(k KeyRef) error {
	if _, err := unwrapTemplate(k, true); err != nil { // a spec no copy can have
		return err
	}
	if len(k.Wrapped) == 0 {
		return fmt.Errorf("%w: key %s version %d has no wrapped blob", ErrInvalidInput, k.ID, k.Version)
	}
	return nil
}

// unwrapLoaded makes k's working copy on the anchor session; a blob the
// token refuses is ErrWrongDomainKey.
func (p *Partition) unwrapLoaded(anchor pkcs11.SessionHandle, k KeyRef) (pkcs11.ObjectHandle, error) {
	if p.domainKey == 0 {
		return 0, ErrNoDomainKey
	}
	h, err := p.unwrapCopy(anchor, k)
	if p.domainKeyGone(err) && p.checkDomainKeyLocked() == nil {
		h, err = p.unwrapCopy(anchor, k) // found again under a new handle
	}
	if err != nil {
		err = wrapP11("C_UnwrapKey", err)
		if p.inputRejected(anchor, err) {
			// Blame the blob only once the domain key is known to be there:
			// a token that lost it may answer as if the blob were bad.
			p.domainKeyLost.Store(true)
			if cerr := p.checkDomainKeyLocked(); cerr != nil {
				return 0, fmt.Errorf("load key %s version %d: %w (the token answered %v)", k.ID, k.Version, cerr, err)
			}
			return 0, fmt.Errorf("%w: key %s version %d does not unwrap under this partition's domain key (different domain key, or a damaged blob)", ErrWrongDomainKey, k.ID, k.Version)
		}
		return 0, fmt.Errorf("load key %s version %d: %w", k.ID, k.Version, err)
	}
	return h, nil
}

// unwrapCopy unwraps k's working copy on the anchor session, public if
// the token allows it. A token that refuses the public template
// (CKR_TEMPLATE_INCONSISTENT or CKR_ATTRIBUTE_VALUE_INVALID) is asked again
// for a private copy, and only if that succeeds does the partition keep to
// private copies from then on: a blob that does not unwrap fails both and
// changes nothing.
func (p *Partition) unwrapCopy(anchor pkcs11.SessionHandle, k KeyRef) (pkcs11.ObjectHandle, error) {
	private := p.privateCopies.Load()
	tmpl, _ := unwrapTemplate(k, private)
	h, err := p.m.UnwrapKey(anchor, wrapPadMech, p.domainKey, k.Wrapped, tmpl)
	if code, ok := ckrOf(err); private || !ok || (code != pkcs11.CKR_TEMPLATE_INCONSISTENT && code != pkcs11.CKR_ATTRIBUTE_VALUE_INVALID) {
		return h, err
	}
	tmpl, _ = unwrapTemplate(k, true)
	h, perr := p.m.UnwrapKey(anchor, wrapPadMech, p.domainKey, k.Wrapped, tmpl)
	if perr != nil {
		return 0, perr // the later answer: a session that died meanwhile shows in it
	}
	if !p.privateCopies.Swap(true) {
		p.log.Info("the token refuses public session keys; working copies are private from now on",
			"refused", wrapP11("C_UnwrapKey", err).Error())
	}
	return h, nil
}

// inputRejected tells input the token refuses (a blob that does not
// unwrap, a ciphertext that does not authenticate) from a token that is
// failing. Tokens report bad input as CKR_WRAPPED_KEY_INVALID,
// CKR_ENCRYPTED_DATA_INVALID and kin, but SoftHSM answers CKR_GENERAL_ERROR
// for a GCM tag mismatch, bad OAEP padding or a wrapped private key that
// does not decode; that counts as rejected input only if the session that
// saw it is still healthy.
func (p *Partition) inputRejected(sh pkcs11.SessionHandle, err error) bool {
	code, ok := ckrOf(err)
	if !ok {
		return false
	}
	if sentinelFor(code) == ErrDecrypt {
		return true
	}
	if code != pkcs11.CKR_GENERAL_ERROR && code != pkcs11.CKR_TEMPLATE_INCONSISTENT {
		return false
	}
	si, serr := p.m.GetSessionInfo(sh)
	return serr == nil && si.State == pkcs11.CKS_RW_USER_FUNCTIONS
}

// withKey runs fn with k loaded, on a pooled session. If the loaded handle
// turns out to be gone (its anchor session died), the key is loaded again
// and fn retried once.
func (p *Partition) withKey(ctx context.Context, k KeyRef, fn func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var h pkcs11.ObjectHandle
		h, err = p.load(ctx, k)
		if err != nil {
			return err
		}
		err = p.do(ctx, func(sh pkcs11.SessionHandle) error { return fn(sh, h) })
		if !handleLost(err) {
			return err
		}
		// The reload re-checks the anchor session (ensureAnchorLocked) and
		// reopens it if it died.
		p.cache.drop(k, h)
	}
	return err
}

// Evict forgets the loaded copies of every version of key id and destroys
// them; the broker calls it when a key is deleted.
func (p *Partition) Evict(ctx context.Context, id string) {
	p.destroyLoaded(ctx, p.cache.evictKey(id))
}

// EvictAll forgets and destroys every loaded key copy (after the
// replicated state was replaced by a snapshot).
func (p *Partition) EvictAll(ctx context.Context) {
	p.destroyLoaded(ctx, p.cache.evictAll())
}

func (p *Partition) destroyLoaded(ctx context.Context, hs []pkcs11.ObjectHandle) {
	if len(hs) == 0 {
		return
	}
	_ = p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		for _, h := range hs {
			_ = p.m.DestroyObject(anchor, h)
		}
		return nil
	})
}

// CacheStats reports the handle cache's size and hit/miss counters.
func (p *Partition) CacheStats() (size int, hits, misses uint64) {
	return p.cache.len(), p.cache.hits.Load(), p.cache.misses.Load()
}
