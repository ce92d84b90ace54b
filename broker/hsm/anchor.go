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

// ensureAnchorLocked checks the anchor and reopens it if it is gone.
func (p *Partition) ensureAnchorLocked(ctx context.Context) error {
	if p.anchor != 0 && p.anchorOK {
		si, err := p.m.GetSessionInfo(p.anchor)
		if err == nil && si.State == pkcs11.CKS_RW_USER_FUNCTIONS {
			return nil
		}
	}
	return p.resetAnchorLocked(ctx)
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
