package p11

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// Bounds of what a template may carry.
const (
	MaxTemplateAttrs = 64
	MaxAttrValue     = 64 << 10
	MaxLabel         = 128 // bytes; the alias made from it must fit 250 characters
	MaxID            = 128 // bytes; stored in hex in a 256-character tag
)

// keyTemplate is what the library takes from the templates of
// C_GenerateKey, C_GenerateKeyPair and C_CreateObject.
type keyTemplate struct {
	class, keyType       uint64
	hasClass, hasKeyType bool
	label, id            []byte
	hasLabel, hasID      bool
	valueLen             uint64
	modulusBits          uint64
	publicExponent       []byte
	ecParams             []byte
	value                []byte
	hasValue             bool
	application          []byte
	objectID             []byte
	bools                map[uint64]bool
}

// boolAttrs are the boolean attributes a template may set; the library
// checks the ones that matter (see checkSecretFlags) and stores none.
var boolAttrs = map[uint64]bool{
	CKA_TOKEN: true, CKA_PRIVATE: true, CKA_SENSITIVE: true, CKA_EXTRACTABLE: true,
	CKA_ENCRYPT: true, CKA_DECRYPT: true, CKA_WRAP: true, CKA_UNWRAP: true, CKA_SIGN: true,
	CKA_VERIFY: true, CKA_DERIVE: true, CKA_SIGN_RECOVER: true, CKA_VERIFY_RECOVER: true,
	CKA_MODIFIABLE: true, CKA_COPYABLE: true, CKA_DESTROYABLE: true, CKA_LOCAL: true,
	CKA_ALWAYS_SENSITIVE: true, CKA_NEVER_EXTRACTABLE: true, CKA_ALWAYS_AUTHENTICATE: true,
	CKA_WRAP_WITH_TRUSTED: true, CKA_TRUSTED: true,
}

// parseTemplate decodes a template. Unknown attributes get
// CKR_ATTRIBUTE_TYPE_INVALID, malformed values CKR_ATTRIBUTE_VALUE_INVALID,
// repeats CKR_TEMPLATE_INCONSISTENT.
func parseTemplate(attrs []Attribute) (keyTemplate, uint64) {
	t := keyTemplate{bools: map[uint64]bool{}}
	if len(attrs) > MaxTemplateAttrs {
		return t, CKR_TEMPLATE_INCONSISTENT
	}
	seen := map[uint64]bool{}
	for _, a := range attrs {
		if seen[a.Type] {
			return t, CKR_TEMPLATE_INCONSISTENT
		}
		seen[a.Type] = true
		if len(a.Value) > MaxAttrValue {
			return t, CKR_ATTRIBUTE_VALUE_INVALID
		}
		if boolAttrs[a.Type] {
			if len(a.Value) != 1 {
				return t, CKR_ATTRIBUTE_VALUE_INVALID
			}
			t.bools[a.Type] = a.Value[0] != 0
			continue
		}
		switch a.Type {
		case CKA_CLASS, CKA_KEY_TYPE, CKA_VALUE_LEN, CKA_MODULUS_BITS:
			if len(a.Value) != 8 {
				return t, CKR_ATTRIBUTE_VALUE_INVALID
			}
			v := binary.NativeEndian.Uint64(a.Value)
			switch a.Type {
			case CKA_CLASS:
				t.class, t.hasClass = v, true
			case CKA_KEY_TYPE:
				t.keyType, t.hasKeyType = v, true
			case CKA_VALUE_LEN:
				t.valueLen = v
			default:
				t.modulusBits = v
			}
		case CKA_LABEL:
			// The label is kept as the key's TagLabel tag (or as a data
			// object's label), which the broker takes only as UTF-8 text
			// without control or bidirectional formatting characters:
			// refused here, before any call, as the broker would.
			if len(a.Value) > MaxLabel || !keys.IsDisplayText(string(a.Value)) {
				return t, CKR_ATTRIBUTE_VALUE_INVALID
			}
			t.label, t.hasLabel = bytes.Clone(a.Value), true
		case CKA_ID:
			if len(a.Value) > MaxID {
				return t, CKR_ATTRIBUTE_VALUE_INVALID
			}
			t.id, t.hasID = bytes.Clone(a.Value), true
		case CKA_PUBLIC_EXPONENT:
			t.publicExponent = bytes.Clone(a.Value)
		case CKA_EC_PARAMS:
			t.ecParams = bytes.Clone(a.Value)
		case CKA_VALUE:
			t.value, t.hasValue = bytes.Clone(a.Value), true
		case CKA_APPLICATION:
			t.application = bytes.Clone(a.Value)
		case CKA_OBJECT_ID:
			t.objectID = bytes.Clone(a.Value)
		case CKA_START_DATE, CKA_END_DATE, CKA_SUBJECT:
			// Accepted and not kept: the broker has no such fields.
		default:
			return t, CKR_ATTRIBUTE_TYPE_INVALID
		}
	}
	return t, CKR_OK
}

// checkSecretFlags refuses templates that ask for a key the broker cannot
// make: one that could be exported (CKA_EXTRACTABLE=true), one whose value
// the caller supplies, or one that lives only in the session.
//
// CKA_SENSITIVE=false is accepted and has no effect: every key the library
// makes is sensitive (its value never leaves the HSMs, and CKA_SENSITIVE
// reads true), as PKCS#11 allows a token to make a key more protected than
// asked, never less. pkcs11-tool (0.23) puts CKA_SENSITIVE=false in every
// --keygen template made without --sensitive; refusing it would refuse the
// plain `pkcs11-tool --keygen --key-type AES:32` that TDE set-ups use.
func (t keyTemplate) checkSecretFlags() uint64 {
	if v, ok := t.bools[CKA_EXTRACTABLE]; ok && v {
		return CKR_ATTRIBUTE_VALUE_INVALID
	}
	if v, ok := t.bools[CKA_TOKEN]; ok && !v {
		return CKR_ATTRIBUTE_VALUE_INVALID
	}
	if t.hasValue {
		return CKR_TEMPLATE_INCONSISTENT
	}
	return CKR_OK
}

// AliasForLabel is the alias the library gives a key it makes with a label:
// "alias/" and the label with every byte outside [A-Za-z0-9-] written as
// "_" and two upper-case hex digits, so that distinct labels never share an
// alias. The exact label is kept in the key's TagLabel tag.
func AliasForLabel(label []byte) (string, bool) {
	var b strings.Builder
	b.WriteString("alias/")
	for _, c := range label {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	s := b.String()
	return s, len(label) > 0 && len(s) <= 256
}

// createSpec is a CreateKey request built from templates.
// A token with a key prefix puts it after "alias/".
func (t keyTemplate) createRequest(spec pb.KeySpec, usage pb.KeyUsage, keyPrefix string) (*pb.CreateKeyRequest, uint64) {
	label := t.label
	if !t.hasLabel || len(label) == 0 {
		r := make([]byte, 8)
		_, _ = rand.Read(r)
		label = []byte("pkcs11-" + hex.EncodeToString(r))
	}
	alias, ok := AliasForLabel(label)
	if keyPrefix != "" {
		alias = "alias/" + keyPrefix + strings.TrimPrefix(alias, "alias/")
	}
	if !ok || len(alias) > 256 {
		return nil, CKR_ATTRIBUTE_VALUE_INVALID
	}
	tags := map[string]string{TagLabel: string(label)}
	if t.hasID {
		tags[TagID] = hex.EncodeToString(t.id)
	}
	return &pb.CreateKeyRequest{KeySpec: spec, KeyUsage: usage, AliasName: alias, Tags: tags,
		Description: "made through libhsmbroker-pkcs11"}, CKR_OK
}

// ecSpec maps CKA_EC_PARAMS (a named curve OID) to a key spec.
func ecSpec(params []byte) (pb.KeySpec, uint64) {
	var oid asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(params, &oid)
	if err != nil || len(rest) != 0 {
		return 0, CKR_ATTRIBUTE_VALUE_INVALID
	}
	switch {
	case oid.Equal(oidP256):
		return pb.KeySpec_KEY_SPEC_ECC_NIST_P256, CKR_OK
	case oid.Equal(oidP384):
		return pb.KeySpec_KEY_SPEC_ECC_NIST_P384, CKR_OK
	case oid.Equal(oidP521):
		return pb.KeySpec_KEY_SPEC_ECC_NIST_P521, CKR_OK
	}
	return 0, CKR_CURVE_NOT_SUPPORTED
}

// CKR_CURVE_NOT_SUPPORTED is in PKCS#11 v2.40 and not in the list above.
const CKR_CURVE_NOT_SUPPORTED = 0x140

// GenerateKey is C_GenerateKey with CKM_AES_KEY_GEN: a 256-bit AES key made
// in a broker's HSM, a KMS key whose alias comes from CKA_LABEL.
func (m *Module) GenerateKey(h uint64, mech Mechanism, attrs []Attribute) (uint64, uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return 0, rv
	}
	if mech.Type != CKM_AES_KEY_GEN {
		return 0, CKR_MECHANISM_INVALID
	}
	if !s.rw {
		return 0, CKR_SESSION_READ_ONLY
	}
	t, rv := parseTemplate(attrs)
	if rv != CKR_OK {
		return 0, rv
	}
	if rv := t.checkSecretFlags(); rv != CKR_OK {
		return 0, rv
	}
	if t.hasClass && t.class != CKO_SECRET_KEY || t.hasKeyType && t.keyType != CKK_AES {
		return 0, CKR_TEMPLATE_INCONSISTENT
	}
	if t.valueLen != 0 && t.valueLen != 32 {
		return 0, CKR_KEY_SIZE_RANGE
	}
	// AES keys made through the library are raw: they serve CKM_AES_*.
	req, rv := t.createRequest(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT, s.tok.cfg.KeyPrefix)
	if rv != CKR_OK {
		return 0, rv
	}
	hs, rv := m.createKey(s.tok, req, CKO_SECRET_KEY)
	if rv != CKR_OK {
		return 0, rv
	}
	return hs[0], CKR_OK
}

// GenerateKeyPair is C_GenerateKeyPair for RSA (2048, 3072, 4096 bits,
// exponent 65537) and EC (P-256, P-384, P-521). A pair is for signing or
// for decryption, not both: CKA_SIGN (or CKA_VERIFY) set makes a signing
// key, otherwise CKA_DECRYPT (or CKA_ENCRYPT) a decryption key, otherwise
// a signing key.
func (m *Module) GenerateKeyPair(h uint64, mech Mechanism, pubAttrs, privAttrs []Attribute) (pubH, privH uint64, rv uint64) {
	s, rv := m.session(h)
	if rv != CKR_OK {
		return 0, 0, rv
	}
	if !s.rw {
		return 0, 0, CKR_SESSION_READ_ONLY
	}
	pubT, rv := parseTemplate(pubAttrs)
	if rv != CKR_OK {
		return 0, 0, rv
	}
	privT, rv := parseTemplate(privAttrs)
	if rv != CKR_OK {
		return 0, 0, rv
	}
	if rv := privT.checkSecretFlags(); rv != CKR_OK {
		return 0, 0, rv
	}
	if pubT.hasValue || pubT.hasClass && pubT.class != CKO_PUBLIC_KEY || privT.hasClass && privT.class != CKO_PRIVATE_KEY {
		return 0, 0, CKR_TEMPLATE_INCONSISTENT
	}
	var spec pb.KeySpec
	switch mech.Type {
	case CKM_RSA_PKCS_KEY_PAIR_GEN:
		switch pubT.modulusBits {
		case 2048:
			spec = pb.KeySpec_KEY_SPEC_RSA_2048
		case 3072:
			spec = pb.KeySpec_KEY_SPEC_RSA_3072
		case 4096:
			spec = pb.KeySpec_KEY_SPEC_RSA_4096
		case 0:
			return 0, 0, CKR_TEMPLATE_INCOMPLETE
		default:
			return 0, 0, CKR_KEY_SIZE_RANGE
		}
		if e := bytes.TrimLeft(pubT.publicExponent, "\x00"); pubT.publicExponent != nil && !bytes.Equal(e, []byte{1, 0, 1}) {
			return 0, 0, CKR_ATTRIBUTE_VALUE_INVALID
		}
	case CKM_EC_KEY_PAIR_GEN:
		if pubT.ecParams == nil {
			return 0, 0, CKR_TEMPLATE_INCOMPLETE
		}
		if spec, rv = ecSpec(pubT.ecParams); rv != CKR_OK {
			return 0, 0, rv
		}
	default:
		return 0, 0, CKR_MECHANISM_INVALID
	}
	usage := pb.KeyUsage_KEY_USAGE_SIGN_VERIFY
	if !privT.bools[CKA_SIGN] && !pubT.bools[CKA_VERIFY] && (privT.bools[CKA_DECRYPT] || pubT.bools[CKA_ENCRYPT]) {
		if mech.Type == CKM_EC_KEY_PAIR_GEN {
			return 0, 0, CKR_TEMPLATE_INCONSISTENT
		}
		usage = pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT
	}
	t := privT
	if !t.hasLabel {
		t.label, t.hasLabel = pubT.label, pubT.hasLabel
	}
	if !t.hasID {
		t.id, t.hasID = pubT.id, pubT.hasID
	}
	req, rv := t.createRequest(spec, usage, s.tok.cfg.KeyPrefix)
	if rv != CKR_OK {
		return 0, 0, rv
	}
	hs, rv := m.createKey(s.tok, req, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY)
	if rv != CKR_OK {
		return 0, 0, rv
	}
	return hs[1], hs[0], CKR_OK
}

// createKey makes the key through a token and returns the handles of its
// objects.
func (m *Module) createKey(tok *token, req *pb.CreateKeyRequest, classes ...uint64) ([]uint64, uint64) {
	cl, rv := m.conn(tok)
	if rv != CKR_OK {
		return nil, rv
	}
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := cl.Keys.CreateKey(ctx, req)
	if err != nil {
		if client.Code(err) == codes.InvalidArgument {
			// The request is made from the template alone, so the broker
			// refused one of its values (a label that is no alias name).
			m.log.Warn("CreateKey refused", "err", err)
			return nil, CKR_ATTRIBUTE_VALUE_INVALID
		}
		return nil, m.rpcRV("CreateKey", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var hs []uint64
	for _, c := range classes {
		hs = append(hs, tok.objs.put(resp.GetKeyMetadata(), c).handle)
	}
	return hs, CKR_OK
}
