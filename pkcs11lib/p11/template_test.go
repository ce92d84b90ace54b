package p11

import "testing"

// A label the broker would refuse as a key's tag or a data object's label
// (not UTF-8, or holding a control or bidirectional formatting character)
// is refused by parseTemplate, before any call to the broker; labels of
// text, including non-ASCII letters and spaces, are taken.
func TestParseTemplateLabel(t *testing.T) {
	for _, tc := range []struct {
		label string
		rv    uint64
	}{
		{"ORACLE.TDE.HSM.MK.0A", CKR_OK},
		{"a_b c/é", CKR_OK},
		{"key\tone", CKR_ATTRIBUTE_VALUE_INVALID},
		{"a\x1b[2Jb", CKR_ATTRIBUTE_VALUE_INVALID},
		{"a\x7fb", CKR_ATTRIBUTE_VALUE_INVALID},
		{"a\u009bb", CKR_ATTRIBUTE_VALUE_INVALID},
		{"a\u202eb", CKR_ATTRIBUTE_VALUE_INVALID},
		{"a\xffb", CKR_ATTRIBUTE_VALUE_INVALID},
	} {
		if _, rv := parseTemplate([]Attribute{{CKA_LABEL, []byte(tc.label)}}); rv != tc.rv {
			t.Errorf("label %q: %#x, want %#x", tc.label, rv, tc.rv)
		}
	}
}
