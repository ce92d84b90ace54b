package p11

import (
	"bytes"
	"strings"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// Data objects (CKO_DATA) live in the cluster (DataObjectService), so that
// every process and every broker sees the ones Oracle makes.

// CreateObject is C_CreateObject. Only token CKO_DATA objects can be made:
// keys come from C_GenerateKey and C_GenerateKeyPair, never from imported
// values (CKR_TEMPLATE_INCONSISTENT).
func (m *Module) CreateObject(h uint64, attrs []Attribute) (uint64, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return 0, rv
	}
	t, rv := parseTemplate(attrs)
	if rv != CKR_OK {
		return 0, rv
	}
	if !t.hasClass {
		return 0, CKR_TEMPLATE_INCOMPLETE
	}
	if t.class != CKO_DATA {
		return 0, CKR_TEMPLATE_INCONSISTENT
	}
	if v, ok := t.bools[CKA_TOKEN]; ok && !v {
		return 0, CKR_ATTRIBUTE_VALUE_INVALID // session objects are not kept
	}
	for typ := range t.bools {
		if typ != CKA_TOKEN && typ != CKA_PRIVATE && typ != CKA_MODIFIABLE && typ != CKA_COPYABLE && typ != CKA_DESTROYABLE {
			return 0, CKR_ATTRIBUTE_TYPE_INVALID
		}
	}
	if t.hasID || t.keyType != 0 || t.hasKeyType || t.modulusBits != 0 || t.ecParams != nil || t.publicExponent != nil || t.valueLen != 0 {
		return 0, CKR_TEMPLATE_INCONSISTENT
	}
	if !s.rw {
		return 0, CKR_SESSION_READ_ONLY
	}
	if len(t.value) > 64<<10 || len(t.application) > 256 || len(t.objectID) > 256 {
		return 0, CKR_ATTRIBUTE_VALUE_INVALID
	}
	cl, rv := m.conn(s.tok)
	if rv != CKR_OK {
		return 0, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := cl.DataObjects.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{
		Label: s.tok.cfg.KeyPrefix + string(t.label), Application: string(t.application), ObjectId: t.objectID, Value: t.value, Private: t.bools[CKA_PRIVATE]}})
	if err != nil {
		switch client.Code(err) {
		case codes.InvalidArgument: // a label or application that is not text
			m.log.Warn("CreateDataObject refused", "err", err)
			return 0, CKR_ATTRIBUTE_VALUE_INVALID
		case codes.FailedPrecondition: // no room left for data objects
			m.log.Warn("CreateDataObject refused", "err", err)
			return 0, CKR_DEVICE_MEMORY
		}
		return 0, m.rpcRV("CreateDataObject", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return s.tok.objs.putData(resp.GetObject()).handle, CKR_OK
}

// DestroyObject is C_DestroyObject. Data objects are deleted from the
// cluster. Keys are not destroyed through the library (CKA_DESTROYABLE is
// false; schedule their deletion with hsmctl): CKR_ACTION_PROHIBITED.
func (m *Module) DestroyObject(h, obj uint64) uint64 {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return rv
	}
	o, ok := m.object(s.tok, obj)
	if !ok {
		return CKR_OBJECT_HANDLE_INVALID
	}
	if o.class != CKO_DATA {
		return CKR_ACTION_PROHIBITED
	}
	if !s.rw {
		return CKR_SESSION_READ_ONLY
	}
	cl, rv := m.conn(s.tok)
	if rv != CKR_OK {
		return rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := cl.DataObjects.DeleteDataObject(ctx, &pb.DeleteDataObjectRequest{Id: o.data.GetId()}); err != nil {
		if rv := m.rpcRV("DeleteDataObject", err); rv != CKR_KEY_HANDLE_INVALID {
			return rv
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(s.tok.objs.byHandle, obj)
	delete(s.tok.objs.byKey, o.ref)
	return CKR_OK
}

// putData records a data object and returns its object.
func (t *objectTable) putData(d *pb.DataObject) *object {
	k := "data/" + d.GetId()
	if h, ok := t.byKey[k]; ok {
		o := t.byHandle[h]
		o.data = d
		return o
	}
	*t.next++
	o := &object{handle: *t.next, ref: k, class: CKO_DATA, data: d, tok: t.tok}
	t.byHandle[o.handle] = o
	t.byKey[k] = o.handle
	return o
}

// dataAttr is an attribute of a data object. Its value is readable: data
// objects hold application data, not keys.
func (o *object) dataAttr(typ uint64) ([]byte, uint64) {
	d := o.data
	switch typ {
	case CKA_CLASS:
		return ckULong(CKO_DATA), CKR_OK
	case CKA_TOKEN, CKA_DESTROYABLE:
		return ckBool(true), CKR_OK
	case CKA_PRIVATE:
		return ckBool(o.private()), CKR_OK
	case CKA_MODIFIABLE, CKA_COPYABLE:
		return ckBool(false), CKR_OK
	case CKA_LABEL:
		return []byte(strings.TrimPrefix(d.GetLabel(), o.tok.cfg.KeyPrefix)), CKR_OK
	case CKA_APPLICATION:
		return []byte(d.GetApplication()), CKR_OK
	case CKA_OBJECT_ID:
		return bytes.Clone(d.GetObjectId()), CKR_OK
	case CKA_VALUE:
		return bytes.Clone(d.GetValue()), CKR_OK
	}
	return nil, CKR_ATTRIBUTE_TYPE_INVALID
}

func (o *object) dataMatches(tmpl []Attribute) bool {
	for _, a := range tmpl {
		v, rv := o.dataAttr(a.Type)
		if rv != CKR_OK || !bytes.Equal(v, a.Value) {
			return false
		}
	}
	return true
}
