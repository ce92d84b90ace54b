package p11

// CreateObject is C_CreateObject. Only CKO_DATA objects can be made; until
// the broker stores them, none can.
func (m *Module) CreateObject(h uint64, attrs []Attribute) (uint64, uint64) {
	if _, rv := m.session(h); rv != CKR_OK {
		return 0, rv
	}
	return 0, CKR_FUNCTION_NOT_SUPPORTED
}

// DestroyObject is C_DestroyObject. Keys are not destroyed through the
// library (CKA_DESTROYABLE is false): schedule their deletion with hsmctl.
func (m *Module) DestroyObject(h, obj uint64) uint64 {
	if _, rv := m.session(h); rv != CKR_OK {
		return rv
	}
	if _, ok := m.object(obj); !ok {
		return CKR_OBJECT_HANDLE_INVALID
	}
	return CKR_ACTION_PROHIBITED
}
