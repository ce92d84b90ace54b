package p11

import (
	"encoding/binary"
	"testing"

	"github.com/hsmbroker/hsmbroker/keys"
)

// decodeAttrs reads a fuzz input as attributes: a 4-byte type, a 1-byte
// length, then that many value bytes, repeated.
func decodeAttrs(b []byte) []Attribute {
	var out []Attribute
	for len(b) >= 5 {
		typ := uint64(binary.LittleEndian.Uint32(b))
		n := int(b[4])
		b = b[5:]
		n = min(n, len(b))
		out = append(out, Attribute{Type: typ, Value: b[:n]})
		b = b[n:]
	}
	return out
}

// FuzzParseTemplate: any template is parsed without panic; an accepted one
// asks for no extractable or caller-given secret (CKA_SENSITIVE=false is
// accepted and ignored: the key is made sensitive all the same), and the
// alias made from its label is one the broker accepts.
func FuzzParseTemplate(f *testing.F) {
	enc := func(attrs ...Attribute) []byte {
		var b []byte
		for _, a := range attrs {
			b = binary.LittleEndian.AppendUint32(b, uint32(a.Type))
			b = append(b, byte(len(a.Value)))
			b = append(b, a.Value...)
		}
		return b
	}
	f.Add(enc(Attribute{CKA_LABEL, []byte("ORACLE.TDE.HSM.MK.0A")}, Attribute{CKA_VALUE_LEN, ckULong(32)}, Attribute{CKA_SENSITIVE, []byte{1}}))
	f.Add(enc(Attribute{CKA_EXTRACTABLE, []byte{1}}))
	f.Add(enc(Attribute{CKA_CLASS, ckULong(CKO_DATA)}, Attribute{CKA_VALUE, []byte("v")}, Attribute{CKA_LABEL, []byte("a_b c/é")}))
	f.Add(enc(Attribute{CKA_EC_PARAMS, ecParams(nil)}, Attribute{CKA_MODULUS_BITS, []byte{1, 2}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs := decodeAttrs(b)
		tmpl, rv := parseTemplate(attrs)
		if rv != CKR_OK {
			return
		}
		if tmpl.checkSecretFlags() == CKR_OK {
			if tmpl.bools[CKA_EXTRACTABLE] || (len(tmpl.bools) > 0 && tmpl.hasValue) {
				t.Fatal("a template asking for an extractable or given secret passed")
			}
		}
		if tmpl.hasLabel {
			if alias, ok := AliasForLabel(tmpl.label); ok {
				if err := keys.ValidateAliasName(alias); err != nil {
					t.Fatalf("label %q gives alias %q the broker refuses: %v", tmpl.label, alias, err)
				}
			}
		}
		_, _ = ecSpec(tmpl.ecParams)
	})
}
