// Package p11 is the logic of libhsmbroker-pkcs11.so: one PKCS#11 slot per
// configured token, each token an hsmbroker cluster (or a part of one), reached with the Go client SDK over mutual
// TLS. Package pkcs11lib is the C layer over it; this package has no cgo, so
// its tests run against a real broker without loading the library.
//
// Every method returns a PKCS#11 return value (CKR_*). Methods are safe for
// concurrent use: the module's tables are guarded by one mutex that is never
// held across a call to a broker, and each session's operation state by the
// session's own.
package p11

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmbroker/hsmbroker/client"
)

// SlotID is the first slot's id, the only one of a one-token
// configuration. Slot i is the configuration's token i.
const SlotID = 0

// Limits of the library.
const (
	MaxSessions = 4096
	// MaxBuffered bounds the data a multi-part operation buffers.
	MaxBuffered = 1 << 20
)

// Module is the library's state between C_Initialize and C_Finalize.
type Module struct {
	mu          sync.Mutex
	initialized bool
	log         *slog.Logger
	tokens      []*token // slot i is tokens[i]
	sessions    map[uint64]*session
	nextSession uint64
	nextHandle  uint64 // object handles are unique across slots
}

// token is one slot's token: its configuration, connection, login state
// and objects. Its fields are guarded by Module.mu.
type token struct {
	slot     uint64
	cfg      Config
	cl       *client.Client // nil until connected
	loggedIn bool
	objs     objectTable
}

// New returns an uninitialized module logging to w (stderr when nil).
func New(w io.Writer) *Module {
	if w == nil {
		w = os.Stderr
	}
	return &Module{log: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})).With("lib", "libhsmbroker-pkcs11")}
}

// InitArgs are the parts of CK_C_INITIALIZE_ARGS the library looks at.
type InitArgs struct {
	Present                bool // pInitArgs was not NULL
	MutexFuncs             int  // how many of the four mutex callbacks are set
	Flags                  uint64
	LibraryCantCreateThrds bool
}

// Initialize is C_Initialize. The library locks with the OS (Go's) and
// makes threads, so it accepts NULL arguments or CKF_OS_LOCKING_OK with or
// without application mutex callbacks (it never calls them), and refuses
// CKF_LIBRARY_CANT_CREATE_OS_THREADS with CKR_NEED_TO_CREATE_THREADS.
// Some but not all of the four callbacks is CKR_ARGUMENTS_BAD (PKCS#11
// v2.40, C_Initialize).
func (m *Module) Initialize(a InitArgs) uint64 {
	if a.Present && a.MutexFuncs != 0 && a.MutexFuncs != 4 {
		return CKR_ARGUMENTS_BAD
	}
	if a.Present && a.Flags&CKF_LIBRARY_CANT_CREATE_OS_THREADS != 0 {
		return CKR_NEED_TO_CREATE_THREADS
	}
	if a.Present && a.MutexFuncs == 4 && a.Flags&CKF_OS_LOCKING_OK == 0 {
		// Only the application's mutexes allowed: the Go runtime cannot
		// promise that. PKCS#11 says CKR_CANT_LOCK.
		return CKR_CANT_LOCK
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized {
		return CKR_CRYPTOKI_ALREADY_INITIALIZED
	}
	cfgs, err := LoadConfig(os.Getenv)
	if err != nil {
		m.log.Error("C_Initialize: " + err.Error())
		return CKR_GENERAL_ERROR
	}
	m.sessions = map[uint64]*session{}
	m.tokens = nil
	for i, cfg := range cfgs {
		t := &token{slot: uint64(i), cfg: cfg}
		t.objs = newObjectTable(t, &m.nextHandle)
		if cfg.SealedKey == "" {
			keyPEM, err := readSmallFile(cfg.Key)
			if err == nil {
				t.cl, err = dial(cfg, keyPEM)
			}
			if err != nil {
				m.log.Error("C_Initialize: token "+cfg.TokenLabel+": "+err.Error(), "from", cfg.Source)
				closeTokens(m.tokens)
				m.tokens = nil
				return CKR_GENERAL_ERROR
			}
		}
		m.tokens = append(m.tokens, t)
	}
	m.initialized = true
	return CKR_OK
}

func closeTokens(ts []*token) {
	for _, t := range ts {
		if t.cl != nil {
			_ = t.cl.Close()
		}
	}
}

// Initialized reports whether C_Initialize has been called and
// C_Finalize not since.
func (m *Module) Initialized() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.initialized
}

// Finalize is C_Finalize: every session closes and the connections too;
// C_Initialize may follow.
func (m *Module) Finalize() uint64 {
	m.mu.Lock()
	if !m.initialized {
		m.mu.Unlock()
		return CKR_CRYPTOKI_NOT_INITIALIZED
	}
	ts := m.tokens
	m.tokens, m.initialized, m.sessions = nil, false, nil
	m.mu.Unlock()
	closeTokens(ts)
	return CKR_OK
}

func dial(cfg Config, keyPEM []byte) (*client.Client, error) {
	caPEM, err := os.ReadFile(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CA)
	}
	certPEM, err := os.ReadFile(cfg.Cert)
	if err != nil {
		return nil, fmt.Errorf("read client certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s and its key do not make a pair: %w", cfg.Cert, err)
	}
	return client.Dial(context.Background(), client.Config{
		Endpoints: cfg.Endpoints,
		TLS:       &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}},
		Timeout:   cfg.Timeout,
	})
}

// Info is CK_INFO's variable part.
type Info struct {
	Manufacturer, Description string
	Major, Minor              byte
}

// GetInfo is C_GetInfo.
func (m *Module) GetInfo() (Info, uint64) {
	if !m.isInitialized() {
		return Info{}, CKR_CRYPTOKI_NOT_INITIALIZED
	}
	return Info{Manufacturer: "hsmbroker", Description: "hsmbroker cluster PKCS#11", Major: 1, Minor: 0}, CKR_OK
}

func (m *Module) isInitialized() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.initialized
}

// SlotList is C_GetSlotList: a slot per token, each always with its token.
func (m *Module) SlotList() ([]uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.initialized {
		return nil, CKR_CRYPTOKI_NOT_INITIALIZED
	}
	var out []uint64
	for _, t := range m.tokens {
		out = append(out, t.slot)
	}
	return out, CKR_OK
}

// SlotInfo is CK_SLOT_INFO's variable part.
type SlotInfo struct {
	Description, Manufacturer string
	Flags                     uint64
}

// GetSlotInfo is C_GetSlotInfo.
func (m *Module) GetSlotInfo(slot uint64) (SlotInfo, uint64) {
	if _, rv := m.slotToken(slot); rv != CKR_OK {
		return SlotInfo{}, rv
	}
	return SlotInfo{Description: "hsmbroker cluster", Manufacturer: "hsmbroker", Flags: CKF_TOKEN_PRESENT}, CKR_OK
}

func (m *Module) checkSlot(slot uint64) uint64 {
	_, rv := m.slotToken(slot)
	return rv
}

// slotToken returns the token of a slot.
func (m *Module) slotToken(slot uint64) (*token, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slotTokenLocked(slot)
}

// slotTokenLocked is slotToken with Module.mu held. A caller that goes on
// to use the token or the session table looks the slot up under the same
// hold: between two holds C_Finalize may close the token and drop the
// table, and C_Initialize make new ones.
func (m *Module) slotTokenLocked(slot uint64) (*token, uint64) {
	if !m.initialized {
		return nil, CKR_CRYPTOKI_NOT_INITIALIZED
	}
	if slot >= uint64(len(m.tokens)) {
		return nil, CKR_SLOT_ID_INVALID
	}
	return m.tokens[slot], CKR_OK
}

// TokenInfo is CK_TOKEN_INFO's variable part.
type TokenInfo struct {
	Label, Manufacturer, Model, Serial string
	Flags                              uint64
	Sessions, RWSessions               uint64
	MinPIN, MaxPIN                     uint64
}

// GetTokenInfo is C_GetTokenInfo. The token is never write protected (Oracle
// will not make a master key on one that is); it needs a login when the
// client key is sealed under the PIN.
func (m *Module) GetTokenInfo(slot uint64) (TokenInfo, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rv := m.slotTokenLocked(slot)
	if rv != CKR_OK {
		return TokenInfo{}, rv
	}
	ti := TokenInfo{Label: t.cfg.TokenLabel, Manufacturer: "hsmbroker", Model: "cluster", Serial: fmt.Sprint(t.slot + 1),
		Flags:  CKF_RNG | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED,
		MinPIN: minPINLen, MaxPIN: maxPINLen}
	if t.cfg.SealedKey != "" {
		ti.Flags |= CKF_LOGIN_REQUIRED
	}
	for _, s := range m.sessions {
		if s.tok != t {
			continue
		}
		ti.Sessions++
		if s.rw {
			ti.RWSessions++
		}
	}
	return ti, CKR_OK
}

// OpenSession is C_OpenSession (without notification callbacks).
func (m *Module) OpenSession(slot, flags uint64) (uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rv := m.slotTokenLocked(slot)
	if rv != CKR_OK {
		return 0, rv
	}
	if flags&CKF_SERIAL_SESSION == 0 {
		return 0, CKR_SESSION_PARALLEL_NOT_SUPPORTED
	}
	if len(m.sessions) >= MaxSessions {
		return 0, CKR_SESSION_COUNT
	}
	m.nextSession++
	s := &session{h: m.nextSession, rw: flags&CKF_RW_SESSION != 0, tok: t}
	m.sessions[s.h] = s
	return s.h, CKR_OK
}

// CloseSession is C_CloseSession. Closing a token's last session logs out
// of that token.
func (m *Module) CloseSession(h uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.initialized {
		return CKR_CRYPTOKI_NOT_INITIALIZED
	}
	s, ok := m.sessions[h]
	if !ok {
		return CKR_SESSION_HANDLE_INVALID
	}
	delete(m.sessions, h)
	for _, o := range m.sessions {
		if o.tok == s.tok {
			return CKR_OK
		}
	}
	s.tok.logoutLocked()
	return CKR_OK
}

// CloseAllSessions is C_CloseAllSessions: the slot's sessions.
func (m *Module) CloseAllSessions(slot uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rv := m.slotTokenLocked(slot)
	if rv != CKR_OK {
		return rv
	}
	for h, s := range m.sessions {
		if s.tok == t {
			delete(m.sessions, h)
		}
	}
	t.logoutLocked()
	return CKR_OK
}

// logoutLocked forgets the login and the handles of private objects
// (PKCS#11: on logout they become invalid, for every session); with a
// sealed key the connection goes too, since only the PIN opens the key.
// Module.mu is held.
func (t *token) logoutLocked() {
	if !t.loggedIn {
		return
	}
	t.loggedIn = false
	t.objs.dropPrivate()
	if t.cfg.SealedKey != "" && t.cl != nil {
		cl := t.cl
		t.cl = nil
		go func() { _ = cl.Close() }()
	}
}

// SessionInfo is CK_SESSION_INFO.
type SessionInfo struct {
	Slot, State, Flags uint64
}

// GetSessionInfo is C_GetSessionInfo.
func (m *Module) GetSessionInfo(h uint64) (SessionInfo, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return SessionInfo{}, rv
	}
	m.mu.Lock()
	logged := s.tok.loggedIn
	m.mu.Unlock()
	si := SessionInfo{Slot: s.tok.slot, Flags: CKF_SERIAL_SESSION}
	switch {
	case s.rw && logged:
		si.State, si.Flags = CKS_RW_USER_FUNCTIONS, si.Flags|CKF_RW_SESSION
	case s.rw:
		si.State, si.Flags = CKS_RW_PUBLIC_SESSION, si.Flags|CKF_RW_SESSION
	case logged:
		si.State = CKS_RO_USER_FUNCTIONS
	default:
		si.State = CKS_RO_PUBLIC_SESSION
	}
	return si, CKR_OK
}

func (m *Module) session(h uint64) (*session, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.initialized {
		return nil, CKR_CRYPTOKI_NOT_INITIALIZED
	}
	s, ok := m.sessions[h]
	if !ok {
		return nil, CKR_SESSION_HANDLE_INVALID
	}
	return s, CKR_OK
}

// ArgumentsError is the answer to a call on session h with a bad pointer
// argument: the session's own error if it has one (not initialized, an
// invalid handle), which PKCS#11 puts before the arguments', else
// CKR_ARGUMENTS_BAD.
func (m *Module) ArgumentsError(h uint64) uint64 {
	if _, rv := m.session(h); rv != CKR_OK {
		return rv
	}
	return CKR_ARGUMENTS_BAD
}

// Login is C_Login. What the PIN protects: with a sealed client key
// (HSMBROKER_PKCS11_KEY, as `hsmbrokerd dev` writes), the PIN is the key
// that opens the client's private TLS key; without the PIN the library
// cannot reach the broker at all, and a wrong PIN is CKR_PIN_INCORRECT. With
// a client key in the clear, the file's permissions are the protection and
// C_Login accepts any PIN: the token then does not announce
// CKF_LOGIN_REQUIRED. Only CKU_USER exists; CKU_SO gets
// CKR_USER_TYPE_INVALID.
func (m *Module) Login(h, userType uint64, pin []byte) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	t := s.tok
	if userType != CKU_USER {
		if userType == CKU_SO || userType == CKU_CONTEXT_SPECIFIC {
			return CKR_USER_TYPE_INVALID
		}
		return CKR_USER_TYPE_INVALID
	}
	m.mu.Lock()
	if t.loggedIn {
		m.mu.Unlock()
		return CKR_USER_ALREADY_LOGGED_IN
	}
	sealed := t.cfg.SealedKey
	m.mu.Unlock()
	if sealed == "" {
		m.mu.Lock()
		defer m.mu.Unlock()
		if rv := m.stillOpenLocked(h, s); rv != CKR_OK {
			return rv
		}
		t.loggedIn = true
		return CKR_OK
	}
	if len(pin) < minPINLen || len(pin) > maxPINLen {
		return CKR_PIN_INCORRECT
	}
	file, err := readSmallFile(sealed)
	if err != nil {
		m.log.Error("C_Login: sealed key: " + err.Error())
		return CKR_DEVICE_ERROR
	}
	keyPEM, err := OpenSealedKey(file, string(pin))
	if errors.Is(err, ErrPINIncorrect) {
		return CKR_PIN_INCORRECT
	}
	if err != nil {
		m.log.Error("C_Login: sealed key " + sealed + ": " + err.Error())
		return CKR_DEVICE_ERROR
	}
	cl, err := dial(t.cfg, keyPEM)
	clear(keyPEM)
	if err != nil {
		m.log.Error("C_Login: " + err.Error())
		return CKR_DEVICE_ERROR
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rv := m.stillOpenLocked(h, s); rv != CKR_OK {
		_ = cl.Close()
		return rv
	}
	if t.loggedIn {
		_ = cl.Close()
		return CKR_USER_ALREADY_LOGGED_IN
	}
	t.cl, t.loggedIn = cl, true
	return CKR_OK
}

// stillOpenLocked reports whether session h, looked up as s before m.mu
// was let go (C_Login opens the sealed key and dials without it), is still
// open: closing a token's last session logs it out, so a login whose
// session was closed meanwhile must not log the token in
// (CKR_SESSION_CLOSED: "the session was closed during the execution of
// the function"); after C_Finalize, CKR_CRYPTOKI_NOT_INITIALIZED.
func (m *Module) stillOpenLocked(h uint64, s *session) uint64 {
	if !m.initialized {
		return CKR_CRYPTOKI_NOT_INITIALIZED
	}
	if m.sessions[h] != s {
		return CKR_SESSION_CLOSED
	}
	return CKR_OK
}

// Logout is C_Logout.
func (m *Module) Logout(h uint64) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.tok.loggedIn {
		return CKR_USER_NOT_LOGGED_IN
	}
	s.tok.logoutLocked()
	return CKR_OK
}

// conn returns a token's broker client, or CKR_USER_NOT_LOGGED_IN when the
// sealed key has not been opened yet.
func (m *Module) conn(t *token) (*client.Client, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.cl == nil {
		return nil, CKR_USER_NOT_LOGGED_IN
	}
	return t.cl, CKR_OK
}

// callTimeout bounds one library call to the broker, retries included.
const callTimeout = 30 * time.Second

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// rpcRV maps a broker error to a return value and logs why, so that a
// misconfiguration (a TLS name mismatch, an unreachable broker) shows in the
// host's stderr instead of as a silent failure.
func (m *Module) rpcRV(op string, err error) uint64 {
	code := client.Code(err)
	switch code {
	case codes.NotFound:
		return CKR_KEY_HANDLE_INVALID
	case codes.InvalidArgument:
		m.log.Warn(op+" refused", "err", err)
		return CKR_ARGUMENTS_BAD
	case codes.PermissionDenied, codes.Unauthenticated:
		m.log.Warn(op+" denied", "err", err)
		return CKR_KEY_FUNCTION_NOT_PERMITTED
	case codes.FailedPrecondition:
		m.log.Warn(op+" refused", "err", err)
		return CKR_KEY_FUNCTION_NOT_PERMITTED
	case codes.AlreadyExists:
		return CKR_ATTRIBUTE_VALUE_INVALID
	case codes.ResourceExhausted:
		m.log.Warn(op+" failed", "err", err)
		return CKR_DEVICE_MEMORY
	}
	m.log.Error(op+" failed", "err", err)
	return CKR_DEVICE_ERROR
}
