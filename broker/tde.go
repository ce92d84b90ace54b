package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// TDE keys: the keys databases read for transparent data encryption
// through the Vault KV version 2 endpoint (broker/vault). Every version of
// a TDE key is a data key made from the HSM's random number generator and
// sealed under the mount's KMS key, exactly as GenerateDataKey makes one,
// with an encryption context naming the mount, key and version
// (cluster.TDEContext); only that ciphertext blob is replicated. A read
// opens the blob in the HSM and hands the material to the authorized
// caller: the documented data-key exception to "no plaintext leaves".

// TDEKeys is the core of the TDE key endpoint (broker/vault reads keys
// through ReadKey and ReadMount) and of TDEService (tde_grpc.go, for
// admins: the keys' versions and the tokens that read them), over the
// Service's authorization, audit, replication and HSM.
type TDEKeys struct{ s *Service }

// TDE returns the TDE core of s.
func (s *Service) TDE() *TDEKeys { return &TDEKeys{s: s} }

// FrontVault is the Vault-compatible TDE key endpoint, as audit lines name
// it.
const FrontVault = "vault"

// DefaultTDEMount is the mount used when none is named.
const DefaultTDEMount = "tde"

// Actions of the TDE key endpoint (authz's). ActionReadTDEKey is checked
// on the mount's KMS key as kms:Decrypt.
const (
	ActionReadTDEKey   = authz.ActionReadTDEKey
	ActionReadTDEMount = authz.ActionReadTDEMount
)

// MaxTDETokenLen bounds a token a caller presents. Tokens this service
// issues are far shorter.
const MaxTDETokenLen = 256

// tdeTokenPrefix starts every token, so that one found in a file or a log
// is recognizable.
const tdeTokenPrefix = "hbt."

// TDERequest is one read of the TDE key endpoint, as a front decoded it.
type TDERequest struct {
	// Token authenticates the caller (the X-Vault-Token header).
	Token string
	// Mount and Name name the key; Name is unused by ReadMount.
	Mount, Name string
	// Version is the version to read; 0 means the latest.
	Version uint32
	// RequestID and Peer go to the audit line.
	RequestID, Peer string
}

// TDEMaterial is one version of a TDE key in plaintext. The caller clears
// Material once it has been sent.
type TDEMaterial struct {
	Mount, Name string
	Version     uint32
	Material    []byte
}

// Errors of the TDE key endpoint; fronts tell them apart with errors.Is.
var (
	// ErrTDEToken: the token is missing, malformed, unknown or revoked.
	ErrTDEToken = errors.New("unknown or revoked token")
)

// ReadKey serves one read: it begins the request (front FrontVault),
// authenticates the token, authorizes its principal (role gate, then
// kms:Decrypt on the mount's KMS key by its policy or a grant), writes the
// audit line, and opens the version's blob in the HSM. Unknown keys,
// versions and retired versions are NotFound.
func (t *TDEKeys) ReadKey(ctx context.Context, in TDERequest) (out TDEMaterial, err error) {
	s := t.s
	ctx = s.BeginRequest(ctx, Call{Front: FrontVault, Action: ActionReadTDEKey, RequestID: in.RequestID, Peer: in.Peer})
	defer func() {
		if err = s.endTDE(ctx, err); err != nil {
			clear(out.Material)
			out = TDEMaterial{}
		}
	}()
	// Who asks comes first: nothing about keys is looked up, or revealed,
	// for an unknown token.
	ref := tdeRef(in.Mount + "/" + in.Name)
	if err := s.refuseTDEIfNotReady(ctx, ref); err != nil {
		return out, err
	}
	ctx, err = s.authenticateTDE(ctx, in.Token, ref)
	if err != nil {
		return out, err
	}
	if err := tdeNames(in.Mount, in.Name); err != nil {
		if aerr := s.Authorize(ctx, ActionReadTDEKey, "", RequestContexts{KeyRef: "tde:(invalid)"}); aerr != nil {
			return out, aerr
		}
		return out, err
	}
	k, m, err := s.tdeKey(ctx, in.Mount, in.Name)
	if err != nil {
		// The version asked for (0: the latest) stands in the context of
		// a key that does not exist.
		ec := cluster.TDEContext(in.Mount, in.Name, in.Version)
		if aerr := s.Authorize(ctx, ActionReadTDEKey, "", RequestContexts{KeyRef: ref, EncryptionContext: ec}); aerr != nil {
			return out, aerr
		}
		if errors.Is(err, errTDENotFound) {
			if herr := s.tdeHidden(ctx, in.Mount); herr != nil {
				return out, herr
			}
		}
		return out, err
	}
	n := in.Version
	if n == 0 {
		n = k.Current()
	}
	// The role gate; the key check follows when the blob is opened, for
	// kms:Decrypt on the mount's KMS key with the version's context.
	ec := cluster.TDEContext(in.Mount, in.Name, n)
	if err := s.Authorize(ctx, ActionReadTDEKey, "", RequestContexts{KeyRef: ref, EncryptionContext: ec}); err != nil {
		return out, err
	}
	if n > k.Current() {
		// A version the leader committed a moment ago may not have reached
		// this node: MariaDB asks one node for the latest version and may
		// ask another for that version. Catch up before answering NotFound,
		// as for a key this node does not know.
		if err := s.syncWithLeader(ctx); err != nil {
			return out, err
		}
		if nk, ok := s.node.State().TDEKey(in.Mount, in.Name); ok {
			k = nk
		}
	}
	if n > k.Current() || !k.Versions[n-1].RetiredAt.IsZero() {
		if herr := s.tdeHidden(ctx, in.Mount); herr != nil {
			return out, herr
		}
		return out, errNotFound("TDE key %s in mount %s has no version %d that is served", in.Name, in.Mount, n)
	}
	kms, pt, err := s.openSymmetric(ctx, "", k.Versions[n-1].Wrapped, "", ec)
	if err != nil {
		return out, err
	}
	if kms.ID != m.KMSKeyID || len(pt) != k.Bytes {
		clear(pt)
		return out, fmt.Errorf("TDE key %s/%s version %d is not a %d-byte key of KMS key %s", in.Mount, in.Name, n, k.Bytes, m.KMSKeyID)
	}
	return TDEMaterial{Mount: in.Mount, Name: in.Name, Version: n, Material: pt}, nil
}

// RefuseRead records a request the front refused before it could make a
// read of it (a path of no key, a method other than GET, a URI too long, a
// version it cannot read). Its audit line is written like a read's: the
// token is authenticated and the principal's role checked, so that the
// line names who asked and whether they could have read, or is the bounded
// denial of a request that proved no identity; its result is the refusal.
// It returns refusal, for the front to answer with, or the audit log's
// failure, in which case nothing may be answered.
func (t *TDEKeys) RefuseRead(ctx context.Context, in TDERequest, refusal error) (err error) {
	s := t.s
	ctx = s.BeginRequest(ctx, Call{Front: FrontVault, Action: ActionReadTDEKey, RequestID: in.RequestID, Peer: in.Peer})
	defer func() { err = s.endTDE(ctx, err) }()
	ref := tdeRef(in.Mount + "/" + in.Name)
	if ctx, aerr := s.authenticateTDE(ctx, in.Token, ref); aerr == nil {
		_ = s.Authorize(ctx, ActionReadTDEKey, "", RequestContexts{KeyRef: ref})
	}
	return refusal
}

// ReadMount serves the mount check databases make at start (Vault's
// sys/mounts/<mount>/tune): it authenticates and audits like ReadKey and
// fails with NotFound for a mount that has no keys.
func (t *TDEKeys) ReadMount(ctx context.Context, in TDERequest) (err error) {
	s := t.s
	ctx = s.BeginRequest(ctx, Call{Front: FrontVault, Action: ActionReadTDEMount, RequestID: in.RequestID, Peer: in.Peer})
	defer func() { err = s.endTDE(ctx, err) }()
	ref := tdeRef(in.Mount)
	if err := s.refuseTDEIfNotReady(ctx, ref); err != nil {
		return err
	}
	ctx, err = s.authenticateTDE(ctx, in.Token, ref)
	if err != nil {
		return err
	}
	if err := s.Authorize(ctx, ActionReadTDEMount, "", RequestContexts{KeyRef: ref}); err != nil {
		return err
	}
	if err := cluster.CheckTDEMount(in.Mount); err != nil {
		return tdeFieldErr("mount", err)
	}
	if _, ok := s.node.State().TDEMount(in.Mount); !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return err
		}
		if _, ok := s.node.State().TDEMount(in.Mount); !ok {
			return errNotFound("mount %s has no TDE keys", in.Mount)
		}
	}
	return nil
}

// authenticateTDE finds the principal of a token and returns ctx carrying
// it, for Authorize. A refused token is recorded in the request's audit
// line with its reason.
func (s *Service) authenticateTDE(ctx context.Context, token, ref string) (context.Context, error) {
	principal, err := s.tdePrincipal(ctx, token)
	if err != nil {
		if rq := requestOf(ctx); rq != nil && errors.Is(err, ErrTDEToken) {
			reason := ErrTDEToken.Error()
			if token == "" {
				// The front passes no token for one over MaxTDETokenLen.
				reason = fmt.Sprintf("no token (none sent, or one over %d bytes)", MaxTDETokenLen)
			}
			rq.deny(reason)
			rq.mu.Lock()
			rq.identified, rq.contexts = true, RequestContexts{KeyRef: ref}
			rq.mu.Unlock()
		}
		return ctx, err
	}
	return WithPrincipal(ctx, principal), nil
}

// tdeRef names what a read asked for in its audit line, bounded.
func tdeRef(path string) string {
	if len(path) > 300 {
		path = path[:300]
	}
	return "tde:" + path
}

// tdePrincipal is the principal of a token, looked up by its SHA-256 hash.
// A follower that does not know the hash catches up with the leader once
// (syncUnauthenticated: shared with every other unknown token, and at
// most one round trip per 100 ms), so a token issued through another node
// a moment ago works.
func (s *Service) tdePrincipal(ctx context.Context, token string) (string, error) {
	errToken := &Error{Code: codes.Unauthenticated, Exception: ExcUnauthenticated, Message: ErrTDEToken.Error(), Err: ErrTDEToken}
	if token == "" || len(token) > MaxTDETokenLen {
		return "", errToken
	}
	h := sha256.Sum256([]byte(token))
	t, ok := s.node.State().TDEToken(h[:])
	if !ok {
		if err := s.syncUnauthenticated(ctx); err != nil {
			return "", err
		}
		if t, ok = s.node.State().TDEToken(h[:]); !ok {
			return "", errToken
		}
	}
	return t.Principal, nil
}

// refuseTDEIfNotReady refuses a TDE read on a node that is not ready,
// before its token is read (a node that may be behind does not consult its
// token store). The request has proved no identity, so its audit line (an
// anonymous one, bounded as those are) is a denial naming the key or mount
// asked for and why the node cannot serve.
func (s *Service) refuseTDEIfNotReady(ctx context.Context, ref string) error {
	err := s.refuseIfNotReady()
	if err == nil {
		return nil
	}
	if rq := requestOf(ctx); rq != nil {
		rq.mu.Lock()
		rq.contexts.KeyRef = ref
		rq.mu.Unlock()
		_, _, msg := Classify(err)
		rq.deny("unavailable: " + msg)
	}
	return err
}

// errTDENotFound marks tdeKey's answer for a key its mount does not have.
var errTDENotFound = errors.New("no such TDE key")

// tdeHidden is the key check for a read that will answer NotFound (a key
// or version the mount does not serve): the caller must be allowed to read
// it, were it there (kms:Decrypt on the mount's KMS key, under the
// request's context, by its policy or a grant), or it gets the refusal a
// read of an existing key would get. So which keys and versions exist is
// revealed only to those who may read them. A mount itself is not hidden:
// the mount check (ReadMount) answers for it to any token. nil means the
// caller may be told.
func (s *Service) tdeHidden(ctx context.Context, mount string) error {
	m, ok := s.node.State().TDEMount(mount)
	if !ok {
		return nil
	}
	_, _, err := s.keyByID(ctx, m.KMSKeyID)
	return err
}

// tdeKey finds a TDE key and its mount, catching up with the leader on a
// miss.
func (s *Service) tdeKey(ctx context.Context, mount, name string) (cluster.TDEKey, cluster.TDEMount, error) {
	st := s.node.State()
	k, ok := st.TDEKey(mount, name)
	if !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return k, cluster.TDEMount{}, err
		}
		if k, ok = st.TDEKey(mount, name); !ok {
			return k, cluster.TDEMount{}, &Error{Code: codes.NotFound, Exception: ExcNotFound,
				Message: fmt.Sprintf("TDE key %s does not exist in mount %s", name, mount), Err: errTDENotFound}
		}
	}
	m, ok := st.TDEMount(mount)
	if !ok {
		return k, m, fmt.Errorf("TDE key %s/%s has no mount", mount, name)
	}
	return k, m, nil
}

// endTDE writes the audit line of a TDE read that ended with err; if the
// line cannot be written, that is the answer instead.
func (s *Service) endTDE(ctx context.Context, err error) error {
	code, exc, _ := Classify(err)
	result := "OK"
	if err != nil {
		result = exc
	}
	if aerr := s.EndRequest(ctx, result, code.String()); aerr != nil {
		return aerr
	}
	return err
}

func tdeNames(mount, name string) error {
	if err := cluster.CheckTDEMount(mount); err != nil {
		return tdeFieldErr("mount", err)
	}
	if err := cluster.CheckTDEName(name); err != nil {
		return tdeFieldErr("name", err)
	}
	return nil
}

// tdeFieldErr is a refusal of cluster.CheckTDEMount or CheckTDEName as
// the field error of a request, without the cluster package's prefix.
func tdeFieldErr(field string, err error) error {
	return &keys.FieldError{Field: field, Problem: detail(err, cluster.ErrInvalidCommand)}
}

func tdeMount(m string) string {
	if m == "" {
		return DefaultTDEMount
	}
	return m
}

// TDECreateRequest makes a TDE key.
type TDECreateRequest struct {
	Mount, Name string
	// Bytes is the material's size: 16, 24 or 32; 0 means 32.
	Bytes int
	// KMSKey names the KMS key of a new mount (id, ARN or alias); "" means
	// the mount's own key, or alias/<mount> for a new mount.
	KMSKey string
}

// CreateKey makes a TDE key with version 1, generated in the HSM and
// sealed under the mount's KMS key. The caller's role was checked by its
// front; the KMS key is resolved (and checked) for the caller as usual.
func (t *TDEKeys) CreateKey(ctx context.Context, in TDECreateRequest) (cluster.TDEKey, error) {
	s := t.s
	in.Mount = tdeMount(in.Mount)
	if in.Bytes == 0 {
		in.Bytes = 32
	}
	if err := tdeNames(in.Mount, in.Name); err != nil {
		return cluster.TDEKey{}, err
	}
	if in.Bytes != 16 && in.Bytes != 24 && in.Bytes != 32 {
		return cluster.TDEKey{}, &keys.FieldError{Field: "bytes", Problem: fmt.Sprintf("must be 16, 24 or 32, not %d", in.Bytes)}
	}
	ref := in.KMSKey
	if m, ok := s.node.State().TDEMount(in.Mount); ok && ref == "" {
		ref = m.KMSKeyID
	} else if ref == "" {
		ref = "alias/" + in.Mount
	}
	if len(ref) > 2048 {
		return cluster.TDEKey{}, &keys.FieldError{Field: "kms_key_id", Problem: "is longer than 2048 bytes"}
	}
	now := s.now()
	kms, blob, err := s.sealTDEVersion(ctx, ref, in.Mount, in.Name, 1, in.Bytes)
	if err != nil {
		return cluster.TDEKey{}, err
	}
	k := cluster.TDEKey{Mount: in.Mount, Name: in.Name, Bytes: in.Bytes, Creator: Principal(ctx), CreatedAt: now,
		Versions: []cluster.TDEVersion{{Number: 1, Wrapped: blob, CreatedAt: now}}}
	if _, err := s.apply(ctx, &cluster.CreateTDEKey{Key: k, KMSKeyID: kms}); err != nil {
		return cluster.TDEKey{}, err
	}
	return s.tdeAfter(in.Mount, in.Name)
}

// sealTDEVersion makes a version's material as GenerateDataKey makes a
// data key, under the KMS key ref, bound to the version's encryption
// context, and keeps only the ciphertext blob.
func (s *Service) sealTDEVersion(ctx context.Context, ref, mount, name string, n uint32, size int) (string, []byte, error) {
	k, pt, blob, err := s.dataKey(ctx, ref, pb.DataKeySpec_DATA_KEY_SPEC_UNSPECIFIED, uint32(size), cluster.TDEContext(mount, name, n))
	clear(pt)
	if err != nil {
		return "", nil, fieldErr("kms_key_id", err)
	}
	return k.ID, blob, nil
}

// tdeAfter reads a TDE key back after a change this node has applied.
func (s *Service) tdeAfter(mount, name string) (cluster.TDEKey, error) {
	k, ok := s.node.State().TDEKey(mount, name)
	if !ok {
		return k, errNotFound("TDE key %s does not exist in mount %s", name, mount)
	}
	return k, nil
}

// TDEKeyName names a TDE key.
type TDEKeyName struct {
	Mount string // "": DefaultTDEMount
	Name  string
}

// RotateKey adds the next version of a TDE key and returns the key.
func (t *TDEKeys) RotateKey(ctx context.Context, in TDEKeyName) (cluster.TDEKey, error) {
	s := t.s
	mount, name := tdeMount(in.Mount), in.Name
	if err := tdeNames(mount, name); err != nil {
		return cluster.TDEKey{}, err
	}
	k, m, err := s.tdeKey(ctx, mount, name)
	if err != nil {
		return k, err
	}
	n := k.Current() + 1
	if n > cluster.MaxTDEVersions {
		return k, newError(codes.FailedPrecondition, ExcLimitExceeded, "TDE key %s has %d versions, the most it may", name, k.Current())
	}
	_, blob, err := s.sealTDEVersion(ctx, m.KMSKeyID, mount, name, n, k.Bytes)
	if err != nil {
		return k, err
	}
	if _, err := s.apply(ctx, &cluster.AddTDEVersion{Mount: mount, Name: name,
		Version: cluster.TDEVersion{Number: n, Wrapped: blob, CreatedAt: s.now()}}); err != nil {
		return k, err
	}
	return s.tdeAfter(mount, name)
}

// TDERetireRequest names the version of a TDE key to retire.
type TDERetireRequest struct {
	Mount   string // "": DefaultTDEMount
	Name    string
	Version uint32 // required; not the latest
}

// RetireVersion stops serving a version that is not the latest and
// returns the key.
func (t *TDEKeys) RetireVersion(ctx context.Context, in TDERetireRequest) (cluster.TDEKey, error) {
	s := t.s
	mount, name, version := tdeMount(in.Mount), in.Name, in.Version
	if err := tdeNames(mount, name); err != nil {
		return cluster.TDEKey{}, err
	}
	if version == 0 {
		return cluster.TDEKey{}, &keys.FieldError{Field: "version", Problem: "is required"}
	}
	if _, err := s.apply(ctx, &cluster.RetireTDEVersion{Mount: mount, Name: name, Version: version, At: s.now()}); err != nil {
		return cluster.TDEKey{}, err
	}
	return s.tdeAfter(mount, name)
}

// TDEKeyList is what ListKeys returns.
type TDEKeyList struct {
	Keys []cluster.TDEKey
	// KMSKeyIDs maps each mount to the id of its KMS key.
	KMSKeyIDs map[string]string
}

// ListKeys lists the TDE keys of one mount, or all when mount is "", with
// the KMS key of each mount.
func (t *TDEKeys) ListKeys(ctx context.Context, mount string) (TDEKeyList, error) {
	s := t.s
	if mount != "" {
		if err := cluster.CheckTDEMount(mount); err != nil {
			return TDEKeyList{}, tdeFieldErr("mount", err)
		}
	}
	if err := s.linearize(ctx); err != nil {
		return TDEKeyList{}, err
	}
	st := s.node.State()
	kms := map[string]string{}
	for _, m := range st.TDEMounts() {
		kms[m.Name] = m.KMSKeyID
	}
	return TDEKeyList{Keys: st.TDEKeys(mount), KMSKeyIDs: kms}, nil
}

// TDEIssuedToken is a token IssueToken made.
type TDEIssuedToken struct {
	// Token is the secret the database presents; the broker keeps only
	// its hash.
	Token string
	// Info describes it, without the hash.
	Info cluster.TDEToken
}

// IssueToken makes a token for principal, records its hash, and returns
// the token: the only time it exists outside the caller's hands.
func (t *TDEKeys) IssueToken(ctx context.Context, principal string) (TDEIssuedToken, error) {
	s := t.s
	if problem := authz.NewPrincipalProblem(principal); problem != "" {
		return TDEIssuedToken{}, &keys.FieldError{Field: "principal", Problem: problem}
	}
	b := make([]byte, 32+8)
	if _, err := rand.Read(b); err != nil {
		return TDEIssuedToken{}, err
	}
	token := tdeTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:32])
	h := sha256.Sum256([]byte(token))
	info := cluster.TDEToken{Accessor: hex.EncodeToString(b[32:]), Hash: h[:], Principal: principal,
		Creator: Principal(ctx), CreatedAt: s.now()}
	if _, err := s.apply(ctx, &cluster.IssueTDEToken{Token: info}); err != nil {
		return TDEIssuedToken{}, fieldErr("principal", err)
	}
	info.Hash = nil
	return TDEIssuedToken{Token: token, Info: info}, nil
}

// RevokeToken forgets the token with the accessor.
func (t *TDEKeys) RevokeToken(ctx context.Context, accessor string) error {
	s := t.s
	if accessor == "" || len(accessor) > 64 {
		return &keys.FieldError{Field: "accessor", Problem: "must be 1 to 64 characters"}
	}
	if strings.HasPrefix(accessor, tdeTokenPrefix) {
		// Never echoed: it is the secret itself.
		return &keys.FieldError{Field: "accessor", Problem: "this is a token, not its accessor; a token is revoked by the accessor 'hsmctl tde token list' shows"}
	}
	_, err := s.apply(ctx, &cluster.RevokeTDEToken{Accessor: accessor})
	return err
}

// ListTokens lists the tokens without their hashes.
func (t *TDEKeys) ListTokens(ctx context.Context) ([]cluster.TDEToken, error) {
	s := t.s
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	return s.node.State().TDETokens(), nil
}
