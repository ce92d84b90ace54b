package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// The anchor session creates and owns every loaded key object. SoftHSM
// destroys session objects with the session that created them, and drops
// all handles of a slot when its last session closes; keeping one session
// for object ownership makes "which objects are alive" one question with
// one answer, and the pool's sessions can come and go freely.

func (p *Partition) lockAnchor(ctx context.Context) error {
	select {
	case p.anchorLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the HSM anchor session: %w", ErrUnavailable, ctx.Err())
	}
}

func (p *Partition) unlockAnchor() { <-p.anchorLock }

// anchorDo runs fn on a valid, logged-in anchor session, under the call
// deadline. The anchor lock is released only when fn has returned, even if
// the caller gave up earlier, so the anchor is never used concurrently.
func (p *Partition) anchorDo(ctx context.Context, fn func(anchor pkcs11.SessionHandle) error) error {
	if p.closed.Load() {
		return fmt.Errorf("%w: partition closed", ErrUnavailable)
	}
	if err := p.lockAnchor(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		p.unlockAnchor()
		return err
	}
	return p.call(ctx, func() error {
		defer p.unlockAnchor()
		if err := p.ensureAnchorLocked(ctx); err != nil {
			return err
		}
		err := fn(p.anchor)
		if sessionBroken(err) {
			p.anchorOK = false
		}
		return err
	}, nil)
}

// ensureAnchorLocked checks the anchor and reopens it if it is gone, and
// finds the domain key again if a call found its handle lost.
func (p *Partition) ensureAnchorLocked(ctx context.Context) error {
	if p.anchor != 0 && p.anchorOK {
		si, err := p.m.GetSessionInfo(p.anchor)
		if err == nil && si.State == pkcs11.CKS_RW_USER_FUNCTIONS {
			if p.domainKeyLost.Load() {
				return p.checkDomainKeyLocked()
			}
			return nil
		}
	}
	return p.resetAnchorLocked(ctx)
}

// domainKeyGone reports whether err is the token refusing the domain key's
// handle as naming no key, and if so has the next use of the anchor find
// the key again.
func (p *Partition) domainKeyGone(err error) bool {
	code, ok := ckrOf(err)
	if !ok || (code != pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID && code != pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID &&
		code != pkcs11.CKR_KEY_HANDLE_INVALID && code != pkcs11.CKR_OBJECT_HANDLE_INVALID) {
		return false
	}
	p.domainKeyLost.Store(true)
	return true
}

// checkDomainKeyLocked proves that the domain key's handle still names an
// object, and finds the key again if it does not. A partition that has not
// found a domain key passes: whether it holds one is HasDomainKey's
// question.
func (p *Partition) checkDomainKeyLocked() error {
	if p.domainKey == 0 {
		p.domainKeyLost.Store(false)
		return nil
	}
	_, err := p.m.GetAttributeValue(p.anchor, p.domainKey, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, nil)})
	if err == nil && !p.domainKeyLost.Load() {
		return nil
	}
	if err != nil && !handleLost(err) {
		return wrapP11("C_GetAttributeValue of the domain key", err)
	}
	dk, ferr := p.findDomainKeyLocked()
	if ferr != nil {
		if errors.Is(ferr, ErrNoDomainKey) {
			p.domainKey = 0
			p.domainKeyLost.Store(false)
			return fmt.Errorf("%w: the domain key is no longer on token %q (its storage lost or replaced?)", ErrUnavailable, p.info.Label)
		}
		return ferr
	}
	if dk != p.domainKey {
		p.log.Warn("the domain key's handle was lost; found the key again", "token", p.info.Label)
		p.domainKey = dk
	}
	p.domainKeyLost.Store(false)
	return nil
}

// resetAnchorLocked closes the anchor (if any), forgets every loaded
// object, opens a new anchor and finds the domain key again.
func (p *Partition) resetAnchorLocked(_ context.Context) error {
	if p.anchor != 0 {
		_ = p.m.CloseSession(p.anchor)
		p.anchor = 0
		p.log.Warn("HSM anchor session lost; loaded keys will be unwrapped again")
	}
	p.anchorOK = false
	p.cache.purge()
	p.domainKey = 0
	p.dropTransportLocked()
	sh, err := p.openSession()
	if err != nil {
		return err
	}
	p.anchor = sh
	p.anchorOK = true
	dk, err := p.findDomainKeyLocked()
	if err != nil && !errors.Is(err, ErrNoDomainKey) {
		return err
	}
	p.domainKey = dk
	return nil
}

// findObjects returns the handles matching tmpl, on session sh.
func (p *Partition) findObjects(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.m.FindObjectsInit(sh, tmpl); err != nil {
		return nil, wrapP11("C_FindObjectsInit", err)
	}
	var out []pkcs11.ObjectHandle
	for {
		hs, _, err := p.m.FindObjects(sh, 16)
		if err != nil {
			_ = p.m.FindObjectsFinal(sh)
			return nil, wrapP11("C_FindObjects", err)
		}
		if len(hs) == 0 {
			break
		}
		out = append(out, hs...)
	}
	if err := p.m.FindObjectsFinal(sh); err != nil {
		return nil, wrapP11("C_FindObjectsFinal", err)
	}
	return out, nil
}
