package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Info describes the token behind a partition: what cluster status shows
// as partition metadata.
type Info struct {
	Library        string   // path of the PKCS#11 library
	LibraryVersion string   // library description and version from C_GetInfo
	Manufacturer   string   // token manufacturer
	Model          string   // token model
	Serial         string   // token serial number
	Label          string   // token label
	Firmware       string   // token firmware version
	Slot           uint     // slot id at open time
	Mechanisms     []string // mechanism names the token reports, sorted
	// OAEPSHA256Native reports whether RSA-OAEP with SHA-256 runs natively
	// in the token (as observed, or as configured).
	OAEPSHA256Native bool
}

// Partition is one HSM partition (a PKCS#11 token) opened and logged in.
// It is safe for concurrent use; see the package documentation.
type Partition struct {
	cfg  Config
	m    module
	slot uint
	info Info
	log  *slog.Logger

	sem    chan struct{} // one token per pooled session in use
	mu     sync.Mutex    // guards idle
	idle   []pooledSession
	closed atomic.Bool

	// anchorLock serializes use of the anchor session. It is a channel so
	// that waiting for it honours deadlines.
	anchorLock chan struct{}
	anchor     pkcs11.SessionHandle // 0: none open
	anchorOK   bool
	domainKey  pkcs11.ObjectHandle // valid while the anchor is open; 0: none
	// domainKeyLost: a call was refused because the domain key's handle
	// names no object (the token's storage was lost, or reloaded); the
	// next use of the anchor finds the key again (ensureAnchorLocked).
	domainKeyLost atomic.Bool
	// domainKeySeen: the partition has held a domain key since it was
	// opened, so not finding one now means the token lost it.
	domainKeySeen atomic.Bool
	cache         *handleCache

	work chan *callJob // to an idle call worker; unbuffered
	stop chan struct{} // closed by Close: idle call workers exit

	oaepNative atomic.Int32 // oaepUnknown, oaepYes, oaepNo
	// privateCopies: the token refused a public working copy, so every
	// copy is loaded with CKA_PRIVATE true (unwrapCopy).
	privateCopies atomic.Bool
	transport     *transportPair // pending join transport pair; guarded by anchorLock
	rnd           randomPool     // the token's random bytes not yet handed out
}

type pooledSession struct {
	h        pkcs11.SessionHandle
	lastUsed time.Time
}

const (
	oaepUnknown int32 = iota
	oaepYes
	oaepNo
)

// idleValidateAfter: a pooled session idle longer than this is checked
// with C_GetSessionInfo before use. Busy sessions are not re-checked on
// every call; a failing call evicts them instead.
const idleValidateAfter = 10 * time.Second

// Open loads the module, finds the token, logs in, probes capabilities and
// opens the anchor session. It does not require a domain key to exist.
func Open(cfg Config) (*Partition, error) {
	cfg.setDefaults()
	if cfg.TokenLabel == "" && cfg.TokenSerial == "" {
		return nil, fmt.Errorf("%w: a token label or serial is required", ErrInvalidInput)
	}
	if cfg.PIN == "" {
		return nil, fmt.Errorf("%w: no PIN configured", ErrLogin)
	}
	ctx, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	var m module = ctx
	if cfg.Faults != nil {
		m = faultModule{m: ctx, f: cfg.Faults}
	}
	m = newMeteredModule(m)
	p := &Partition{
		cfg:        cfg,
		m:          m,
		log:        cfg.Logger.With("component", "hsm"),
		sem:        make(chan struct{}, cfg.PoolSize),
		anchorLock: make(chan struct{}, 1),
		cache:      newHandleCache(cfg.CacheSize),
		work:       make(chan *callJob),
		stop:       make(chan struct{}),
	}
	switch cfg.OAEPSHA256 {
	case OAEPNative:
		p.oaepNative.Store(oaepYes)
	case OAEPSoftware:
		p.oaepNative.Store(oaepNo)
	case OAEPAuto:
	default:
		return nil, fmt.Errorf("%w: OAEP SHA-256 mode %q (want native, software or empty for auto)", ErrInvalidInput, cfg.OAEPSHA256)
	}
	slot, ti, err := findToken(m, cfg.TokenLabel, cfg.TokenSerial)
	if err != nil {
		return nil, err
	}
	p.slot = slot
	if err := p.probe(ti); err != nil {
		return nil, err
	}
	// The anchor session logs in and keeps the token's handles alive.
	bg, cancel := context.WithTimeout(context.Background(), cfg.CallTimeout)
	defer cancel()
	if err := p.lockAnchor(bg); err != nil {
		return nil, err
	}
	err = p.resetAnchorLocked(bg)
	p.unlockAnchor()
	if err != nil {
		return nil, err
	}
	p.log.Info("partition open", "token", ti.Label, "serial", ti.SerialNumber, "model", ti.Model,
		"pool", cfg.PoolSize, "cache", cfg.CacheSize)
	return p, nil
}

// findToken returns the slot holding the token with the given label and/or
// serial.
func findToken(m module, label, serial string) (uint, pkcs11.TokenInfo, error) {
	slots, err := m.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("list slots: %w", wrapP11("C_GetSlotList", err))
	}
	var seen []string
	for _, s := range slots {
		ti, err := m.GetTokenInfo(s)
		if err != nil {
			continue
		}
		l := strings.TrimSpace(ti.Label)
		sn := strings.TrimSpace(ti.SerialNumber)
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		seen = append(seen, fmt.Sprintf("%q (serial %s)", l, sn))
		if (label == "" || l == label) && (serial == "" || sn == serial) {
			return s, ti, nil
		}
	}
	want := fmt.Sprintf("label %q", label)
	if serial != "" {
		want = fmt.Sprintf("%s serial %q", want, serial)
	}
	if len(seen) == 0 {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: token with %s: the module has no initialized tokens", ErrNotFound, want)
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: token with %s; tokens present: %s", ErrNotFound, want, strings.Join(seen, ", "))
}

// requiredMechanisms are those without which the broker cannot work
// (CKM_AES_KEY_WRAP makes backup authenticators).
var requiredMechanisms = []uint{pkcs11.CKM_AES_KEY_GEN, pkcs11.CKM_AES_KEY_WRAP_PAD, pkcs11.CKM_AES_KEY_WRAP, pkcs11.CKM_AES_GCM}

func (p *Partition) probe(ti pkcs11.TokenInfo) error {
	mechs, err := p.m.GetMechanismList(p.slot)
	if err != nil {
		return fmt.Errorf("list mechanisms: %w", wrapP11("C_GetMechanismList", err))
	}
	have := map[uint]bool{}
	names := make([]string, 0, len(mechs))
	for _, mm := range mechs {
		have[mm.Mechanism] = true
		names = append(names, mechanismName(mm.Mechanism))
	}
	sort.Strings(names)
	for _, r := range requiredMechanisms {
		if !have[r] {
			return fmt.Errorf("%w: token %q lacks %s, which the broker requires", ErrUnsupported, strings.TrimSpace(ti.Label), mechanismName(r))
		}
	}
	lib := p.cfg.Module
	libVersion := ""
	if gi, err := p.m.GetInfo(); err == nil {
		libVersion = fmt.Sprintf("%s %d.%d", strings.TrimSpace(gi.LibraryDescription), gi.LibraryVersion.Major, gi.LibraryVersion.Minor)
	}
	p.info = Info{
		Library:        lib,
		LibraryVersion: libVersion,
		Manufacturer:   strings.TrimSpace(ti.ManufacturerID),
		Model:          strings.TrimSpace(ti.Model),
		Serial:         strings.TrimSpace(ti.SerialNumber),
		Label:          strings.TrimSpace(ti.Label),
		Firmware:       fmt.Sprintf("%d.%d", ti.FirmwareVersion.Major, ti.FirmwareVersion.Minor),
		Slot:           p.slot,
		Mechanisms:     names,
	}
	return nil
}

// Info describes the token. Mechanisms is a copy.
func (p *Partition) Info() Info {
	i := p.info
	i.Mechanisms = append([]string(nil), p.info.Mechanisms...)
	i.OAEPSHA256Native = p.oaepNative.Load() != oaepNo
	return i
}

// Close closes every session. In-flight calls finish first or fail.
func (p *Partition) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	// Take every pool slot so no operation is in flight.
	for i := 0; i < cap(p.sem); i++ {
		p.sem <- struct{}{}
	}
	p.mu.Lock()
	for _, s := range p.idle {
		_ = p.m.CloseSession(s.h)
	}
	p.idle = nil
	p.mu.Unlock()
	p.anchorLock <- struct{}{}
	p.closeTransportLocked()
	if p.anchor != 0 {
		_ = p.m.CloseSession(p.anchor)
		p.anchor = 0
	}
	p.cache.purge()
	p.rnd.drop()
	close(p.stop)
	return nil
}

// Healthy checks that the token answers: the anchor session is valid and
// logged in, and the domain key, once found, still names an object. It is
// what health checks call. A token whose storage is lost under it (SoftHSM's
// token directory removed, a partition's objects gone) still opens
// sessions and draws random bytes, but can no longer wrap or unwrap keys:
// Healthy reports that, and once the key can be found again, it is used
// again.
func (p *Partition) Healthy(ctx context.Context) error {
	if p.closed.Load() {
		return fmt.Errorf("%w: partition closed", ErrUnavailable)
	}
	if err := p.lockAnchor(ctx); err != nil {
		return err
	}
	defer p.unlockAnchor()
	if err := p.ensureAnchorLocked(ctx); err != nil {
		return err
	}
	return p.checkDomainKeyLocked()
}

// call runs fn under the partition's call deadline (or ctx's, if sooner).
// fn always runs, even if ctx is already done, because callers release
// what they hold (a pool slot, the anchor lock) inside fn. If the deadline
// passes first, call returns ErrUnavailable at once and onAbandon runs
// after fn finally returns, with fn's error. A timer, not a derived
// context, keeps the deadline: fn takes no context, and a derived one
// would register with and unregister from ctx on every call.
//
// fn runs on a call worker (see callWorker), so that the caller can give
// up on a call the token does not answer. So fn may still be running, and
// writing the variables it captured, after call has returned: a caller
// reads what fn wrote only when call returns nil, and never lets fn assign
// its own named results, which its error return writes at the same time.
func (p *Partition) call(ctx context.Context, fn func() error, onAbandon func(error)) error {
	j := &callJob{fn: fn, onAbandon: onAbandon, done: make(chan error, 1)}
	select {
	case p.work <- j:
	default:
		go p.callWorker(j)
	}
	timeout := time.NewTimer(p.cfg.CallTimeout)
	defer timeout.Stop()
	var canceled error
	select {
	case err := <-j.done:
		return err
	case <-timeout.C:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			canceled = ctx.Err()
		}
	}
	j.abandoned.Store(true)
	// fn may have finished just now; prefer its result.
	select {
	case err := <-j.done:
		return err
	default:
	}
	if canceled != nil {
		return canceled
	}
	return fmt.Errorf("%w: PKCS#11 call exceeded its deadline", ErrUnavailable)
}

// callJob is one call handed to a worker.
type callJob struct {
	fn        func() error
	onAbandon func(error)
	done      chan error // buffered: the worker never waits for the caller
	abandoned atomic.Bool
}

// callWorker runs j, then waits for further calls until the partition is
// closed. A call goes to an idle worker if there is one and otherwise
// starts a new worker. The calls in flight together are bounded (one per
// pooled session, plus the anchor session's), and a worker that has just
// answered may not be waiting yet when the next call comes, so there are
// at most about twice that many workers. Workers are kept, not started per
// call, because a new goroutine grew its stack again through the PKCS#11
// wrappers on every call.
func (p *Partition) callWorker(j *callJob) {
	for {
		err := j.fn()
		if j.abandoned.Load() && j.onAbandon != nil {
			j.onAbandon(err)
		}
		j.done <- err
		select {
		case j = <-p.work:
		case <-p.stop:
			return
		}
	}
}

// withSession lends a pooled session to fn, under the call deadline. A
// session on which fn reports a broken-session error is closed, not
// returned to the pool. If the deadline passes, the caller gets
// ErrUnavailable while fn keeps its session and pool slot until the token
// answers; a stalled token therefore fills the pool and later callers get
// ErrBusy instead of hanging.
func (p *Partition) withSession(ctx context.Context, fn func(sh pkcs11.SessionHandle) error) error {
	if p.closed.Load() {
		return fmt.Errorf("%w: partition closed", ErrUnavailable)
	}
	if err := p.acquire(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		<-p.sem
		return err
	}
	return p.call(ctx, func() error {
		defer func() { <-p.sem }()
		sh, err := p.getSession()
		if err != nil {
			return err
		}
		err = fn(sh)
		p.putSession(sh, err)
		return err
	}, nil)
}

// acquire takes a pool slot, waiting at most SessionWait.
func (p *Partition) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(p.cfg.SessionWait)
	defer t.Stop()
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: all %d HSM sessions in use for %s", ErrBusy, cap(p.sem), p.cfg.SessionWait)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// getSession pops an idle session, validating it if it idled long, or
// opens and logs in a new one.
func (p *Partition) getSession() (pkcs11.SessionHandle, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return p.openSession()
		}
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if time.Since(s.lastUsed) < idleValidateAfter {
			return s.h, nil
		}
		if si, err := p.m.GetSessionInfo(s.h); err == nil && si.State == pkcs11.CKS_RW_USER_FUNCTIONS {
			return s.h, nil
		}
		_ = p.m.CloseSession(s.h)
	}
}

// putSession returns a session to the pool, or closes it if err says it
// is broken.
func (p *Partition) putSession(sh pkcs11.SessionHandle, err error) {
	if sessionBroken(err) || p.closed.Load() {
		_ = p.m.CloseSession(sh)
		if err != nil {
			p.log.Warn("evicted HSM session", "err", err)
		}
		return
	}
	p.mu.Lock()
	p.idle = append(p.idle, pooledSession{h: sh, lastUsed: time.Now()})
	p.mu.Unlock()
}

// openSession opens a read-write session and makes sure the user is
// logged in (login is per application, so a fresh login is needed only
// after the token dropped it).
func (p *Partition) openSession() (pkcs11.SessionHandle, error) {
	sh, err := p.m.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("open session: %w", wrapP11("C_OpenSession", err))
	}
	if err := p.login(sh); err != nil {
		_ = p.m.CloseSession(sh)
		return 0, err
	}
	return sh, nil
}

func (p *Partition) login(sh pkcs11.SessionHandle) error {
	if si, err := p.m.GetSessionInfo(sh); err == nil && si.State == pkcs11.CKS_RW_USER_FUNCTIONS {
		return nil
	}
	err := p.m.Login(sh, pkcs11.CKU_USER, p.cfg.PIN)
	if code, ok := ckrOf(wrapP11("C_Login", err)); ok && code == pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		return nil
	}
	if err != nil {
		return fmt.Errorf("log in to token %q: %w", p.info.Label, wrapP11("C_Login", err))
	}
	return nil
}

// do runs fn on a pooled session, retrying once on a fresh session when
// the first one turned out to be broken.
func (p *Partition) do(ctx context.Context, fn func(sh pkcs11.SessionHandle) error) error {
	err := p.withSession(ctx, fn)
	if sessionBroken(err) {
		err = p.withSession(ctx, fn)
	}
	return err
}
