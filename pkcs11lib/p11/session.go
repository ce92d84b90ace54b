package p11

import (
	"crypto/x509"
	"strings"
	"sync"

	"github.com/hsmbroker/hsmbroker/client"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// session is one PKCS#11 session: at most one operation of each kind.
type session struct {
	mu     sync.Mutex
	h      uint64
	rw     bool
	tok    *token // the slot's token, fixed at C_OpenSession
	find   *findOp
	sign   *cryptoOp
	verify *cryptoOp
	enc    *cryptoOp
	dec    *cryptoOp
}

type findOp struct {
	handles []uint64
}

// Out describes a caller's output buffer: Query when its pointer is NULL
// (the caller asks for the length), else Cap bytes.
type Out struct {
	Query bool
	Cap   uint64
}

// deliver applies the PKCS#11 output rules to a computed result: a length
// query or a short buffer keeps the operation (and its result) for the
// next call; any other outcome ends it. The caller writes len(res) to the
// length pointer when the return value is CKR_OK or CKR_BUFFER_TOO_SMALL,
// and copies res only for CKR_OK with a buffer.
func deliver(slot **cryptoOp, res []byte, out Out) ([]byte, uint64) {
	if out.Query {
		(*slot).result, (*slot).haveResult = res, true
		return res, CKR_OK
	}
	if uint64(len(res)) > out.Cap {
		(*slot).result, (*slot).haveResult = res, true
		return res, CKR_BUFFER_TOO_SMALL
	}
	*slot = nil
	return res, CKR_OK
}

// FindObjectsInit is C_FindObjectsInit. Keys are read from the broker at
// each search, so a key made elsewhere is found at once. Without a
// connection (a sealed key not yet opened by C_Login) nothing is visible.
func (m *Module) FindObjectsInit(h uint64, tmpl []Attribute) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	s.mu.Lock()
	busy := s.find != nil
	s.mu.Unlock()
	if busy {
		return CKR_OPERATION_ACTIVE
	}
	var found []uint64
	if cl, rv := m.conn(s.tok); rv == CKR_OK {
		objs, rv := m.listObjects(s.tok, cl)
		if rv != CKR_OK {
			return rv
		}
		wantPub := false
		for _, a := range tmpl {
			wantPub = wantPub || needsPublic(a.Type)
		}
		for _, o := range objs {
			var pub any
			if wantPub && o.class != CKO_SECRET_KEY && o.class != CKO_DATA {
				if pub, rv = m.publicKey(o); rv != CKR_OK {
					continue
				}
			}
			if m.objectMatches(o, tmpl, pub) {
				found = append(found, o.handle)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find != nil {
		return CKR_OPERATION_ACTIVE
	}
	s.find = &findOp{handles: found}
	return CKR_OK
}

// FindObjects is C_FindObjects.
func (m *Module) FindObjects(h, max uint64) ([]uint64, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return nil, rv
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find == nil {
		return nil, CKR_OPERATION_NOT_INITIALIZED
	}
	// A handle found before a C_Logout or a C_DestroyObject is skipped:
	// the object is gone, and its handle would answer invalid anyway.
	var out []uint64
	for uint64(len(out)) < max && len(s.find.handles) > 0 {
		o := s.find.handles[0]
		s.find.handles = s.find.handles[1:]
		if _, ok := m.object(s.tok, o); ok {
			out = append(out, o)
		}
	}
	return out, CKR_OK
}

// FindObjectsFinal is C_FindObjectsFinal.
func (m *Module) FindObjectsFinal(h uint64) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find == nil {
		return CKR_OPERATION_NOT_INITIALIZED
	}
	s.find = nil
	return CKR_OK
}

// listObjects reads every key from the broker and returns the objects of
// the token's keys and data objects.
func (m *Module) listObjects(t *token, cl *client.Client) ([]*object, uint64) {
	var metas []*pb.KeyMetadata
	token := ""
	for {
		ctx, cancel := callCtx()
		resp, err := cl.Keys.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			return nil, m.rpcRV("ListKeys", err)
		}
		metas = append(metas, resp.GetKeys()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	var datas []*pb.DataObject
	ctx, cancel := callCtx()
	resp, err := cl.DataObjects.ListDataObjects(ctx, &pb.ListDataObjectsRequest{})
	cancel()
	if err != nil {
		return nil, m.rpcRV("ListDataObjects", err)
	}
	datas = resp.GetObjects()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*object
	for _, d := range datas {
		if strings.HasPrefix(d.GetLabel(), t.cfg.KeyPrefix) {
			out = append(out, t.objs.putData(d))
		}
	}
	for _, md := range metas {
		if md.GetKeyState() == pb.KeyState_KEY_STATE_PENDING_DELETION || !inToken(md, &t.cfg) {
			continue
		}
		for _, c := range classesOf(md) {
			out = append(out, t.objs.put(md, c))
		}
	}
	return out, CKR_OK
}

// object returns the token's object behind a handle, if a search has
// shown it.
func (m *Module) object(t *token, h uint64) (*object, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := t.objs.byHandle[h]
	return o, ok
}

// publicKey returns the public key of an asymmetric key, read once from
// the broker.
func (m *Module) publicKey(o *object) (any, uint64) {
	m.mu.Lock()
	pub, ok := o.tok.objs.pub[o.keyID]
	m.mu.Unlock()
	if ok {
		return pub, CKR_OK
	}
	cl, rv := m.conn(o.tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := cl.Crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: o.keyID})
	if err != nil {
		return nil, m.rpcRV("GetPublicKey", err)
	}
	pub, err = x509.ParsePKIXPublicKey(resp.GetPublicKey())
	if err != nil {
		m.log.Error("GetPublicKey: unparsable public key", "key", o.keyID, "err", err)
		return nil, CKR_DEVICE_ERROR
	}
	m.mu.Lock()
	o.tok.objs.pub[o.keyID] = pub
	m.mu.Unlock()
	return pub, CKR_OK
}

// CheckObject is what C_GetAttributeValue answers for its session and
// object before any attribute, so that a call with no attributes is
// checked too: CKR_OK, or the error of a bad session or object.
func (m *Module) CheckObject(h, obj uint64) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	if _, ok := m.object(s.tok, obj); !ok {
		return CKR_OBJECT_HANDLE_INVALID
	}
	return CKR_OK
}

// GetAttribute is one attribute of C_GetAttributeValue: its value, or
// CKR_ATTRIBUTE_SENSITIVE or CKR_ATTRIBUTE_TYPE_INVALID (the caller sets
// that attribute's length to CK_UNAVAILABLE_INFORMATION and goes on).
func (m *Module) GetAttribute(h, obj, typ uint64) ([]byte, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return nil, rv
	}
	o, ok := m.object(s.tok, obj)
	if !ok {
		return nil, CKR_OBJECT_HANDLE_INVALID
	}
	if o.class == CKO_DATA {
		return o.dataAttr(typ)
	}
	var pub any
	if needsPublic(typ) && o.class != CKO_SECRET_KEY {
		var rv uint64
		if pub, rv = m.publicKey(o); rv != CKR_OK {
			return nil, rv
		}
	}
	return o.attr(typ, pub)
}

func (m *Module) objectMatches(o *object, tmpl []Attribute, pub any) bool {
	if o.class == CKO_DATA {
		return o.dataMatches(tmpl)
	}
	return o.matches(tmpl, pub)
}

// GenerateRandom is C_GenerateRandom: random bytes from a broker's HSM, in
// calls of at most 1024 bytes.
func (m *Module) GenerateRandom(h uint64, out []byte) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	cl, rv := m.conn(s.tok)
	if rv != CKR_OK {
		return rv
	}
	for off := 0; off < len(out); {
		n := min(len(out)-off, 1024)
		ctx, cancel := callCtx()
		resp, err := cl.Crypto.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: uint32(n)})
		cancel()
		if err != nil {
			return m.rpcRV("GenerateRandom", err)
		}
		if len(resp.GetPlaintext()) != n {
			return CKR_DEVICE_ERROR
		}
		off += copy(out[off:], resp.GetPlaintext())
	}
	return CKR_OK
}
