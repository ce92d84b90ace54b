package p11

import (
	"encoding/binary"
	"testing"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
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
// asks for no extractable, session-only or caller-given secret
// (CKA_SENSITIVE=false is accepted and ignored: the key is made sensitive
// all the same), and the CreateKey request made from it, with or without a
// token's key prefix, is one the broker accepts: its alias and its tags
// pass the broker's own checks, so that a template the library takes is
// not refused by the broker for what it holds.
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
	f.Add(enc(Attribute{CKA_TOKEN, []byte{0}}))
	f.Add(enc(Attribute{CKA_CLASS, ckULong(CKO_DATA)}, Attribute{CKA_VALUE, []byte("v")}, Attribute{CKA_LABEL, []byte("a_b c/é")}))
	f.Add(enc(Attribute{CKA_EC_PARAMS, ecParams(nil)}, Attribute{CKA_MODULUS_BITS, []byte{1, 2}}))
	f.Add(enc(Attribute{CKA_LABEL, []byte("key\tone")}, Attribute{CKA_ID, []byte{0xff, 0}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs := decodeAttrs(b)
		tmpl, rv := parseTemplate(attrs)
		if rv != CKR_OK {
			return
		}
		if tmpl.checkSecretFlags() == CKR_OK {
			if v, ok := tmpl.bools[CKA_TOKEN]; tmpl.bools[CKA_EXTRACTABLE] || ok && !v || tmpl.hasValue {
				t.Fatal("a template asking for an extractable, session or given secret passed")
			}
		}
		for _, prefix := range []string{"", "ora-"} {
			req, rv := tmpl.createRequest(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT, prefix)
			if rv != CKR_OK {
				if tmpl.hasLabel && len(tmpl.label) > 0 && len(tmpl.label) <= MaxLabel/3 {
					t.Fatalf("label %q of %d bytes refused", tmpl.label, len(tmpl.label))
				}
				continue
			}
			if err := keys.ValidateAliasName(req.GetAliasName()); err != nil {
				t.Fatalf("label %q gives alias %q the broker refuses: %v", tmpl.label, req.GetAliasName(), err)
			}
			if err := keys.ValidateTags(req.GetTags()); err != nil {
				t.Fatalf("label %q, id %x give tags the broker refuses: %v", tmpl.label, tmpl.id, err)
			}
			if tmpl.hasLabel && len(tmpl.label) > 0 && req.GetTags()[TagLabel] != string(tmpl.label) {
				t.Fatalf("label %q kept as %q", tmpl.label, req.GetTags()[TagLabel])
			}
		}
		_, _ = ecSpec(tmpl.ecParams)
	})
}
