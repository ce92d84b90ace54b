package p11

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"sort"
	"strings"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Tags the library sets on the keys it makes: the exact CKA_LABEL (aliases
// cannot hold every character a label may) and the CKA_ID, in hex.
const (
	TagLabel = "pkcs11:label"
	TagID    = "pkcs11:id"
)

// object is one PKCS#11 object: a KMS key seen as a secret key, or as the
// private or public half of a key pair.
type object struct {
	handle uint64
	ref    string // its key in objectTable.byKey
	class  uint64
	keyID  string
	meta   *pb.KeyMetadata
	data   *pb.DataObject // for CKO_DATA (data.go)
	tok    *token         // the token (slot) it belongs to
}

// objectTable gives every (key, class) of a token one handle for the
// module's life, shared by the token's sessions. Handles come from one
// counter for all tokens, so a handle names an object in one slot only.
type objectTable struct {
	tok      *token
	byHandle map[uint64]*object
	byKey    map[string]uint64
	next     *uint64
	pub      map[string]any // key id -> *rsa.PublicKey or *ecdsa.PublicKey
}

func newObjectTable(tok *token, next *uint64) objectTable {
	return objectTable{tok: tok, byHandle: map[uint64]*object{}, byKey: map[string]uint64{}, next: next, pub: map[string]any{}}
}

// put records meta under (key, class) and returns its object.
func (t *objectTable) put(meta *pb.KeyMetadata, class uint64) *object {
	k := meta.GetKeyId() + "/" + string(rune('0'+class))
	if h, ok := t.byKey[k]; ok {
		o := t.byHandle[h]
		o.meta = meta
		return o
	}
	*t.next++
	o := &object{handle: *t.next, ref: k, class: class, keyID: meta.GetKeyId(), meta: meta, tok: t.tok}
	t.byHandle[o.handle] = o
	t.byKey[k] = o.handle
	return o
}

// dropPrivate forgets the handles of the token's private objects, as
// C_Logout does in PKCS#11: they stay invalid even after a new login, and a
// search gives the objects new handles.
func (t *objectTable) dropPrivate() {
	for h, o := range t.byHandle {
		if o.private() {
			delete(t.byHandle, h)
			delete(t.byKey, o.ref)
		}
	}
}

// private is CKA_PRIVATE: true for secret and private keys and for the
// data objects made private.
func (o *object) private() bool {
	switch o.class {
	case CKO_PUBLIC_KEY:
		return false
	case CKO_DATA:
		return o.data.GetPrivate()
	}
	return true
}

// classesOf is the objects a key appears as; none for keys the library
// cannot use (HMAC keys).
func classesOf(meta *pb.KeyMetadata) []uint64 {
	switch meta.GetKeySpec() {
	case pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT:
		return []uint64{CKO_SECRET_KEY}
	case pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeySpec_KEY_SPEC_RSA_3072, pb.KeySpec_KEY_SPEC_RSA_4096,
		pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeySpec_KEY_SPEC_ECC_NIST_P384, pb.KeySpec_KEY_SPEC_ECC_NIST_P521:
		return []uint64{CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}
	}
	return nil
}

// labels are the object's CKA_LABEL candidates: the label the library gave
// it, then each alias without "alias/" (and without the token's key
// prefix; aliases outside the prefix are not the token's). CKA_LABEL reads
// the first.
func (o *object) labels() []string {
	var out []string
	if l, ok := o.meta.GetTags()[TagLabel]; ok {
		out = append(out, l)
	}
	names := append([]string(nil), o.meta.GetAliasNames()...)
	sort.Strings(names)
	prefix := "alias/" + o.tok.cfg.KeyPrefix
	for _, a := range names {
		if l, ok := strings.CutPrefix(a, prefix); ok {
			out = append(out, l)
		}
	}
	return out
}

// inToken reports whether a key belongs to a token: every key when the
// token has no key prefix, else the keys with an alias in the prefix.
func inToken(meta *pb.KeyMetadata, cfg *Config) bool {
	if cfg.KeyPrefix == "" {
		return true
	}
	for _, a := range meta.GetAliasNames() {
		if strings.HasPrefix(a, "alias/"+cfg.KeyPrefix) {
			return true
		}
	}
	return false
}

// ids are the object's CKA_ID candidates: the id the library gave it, then
// the key id. CKA_ID reads the first.
func (o *object) ids() [][]byte {
	var out [][]byte
	if h, ok := o.meta.GetTags()[TagID]; ok {
		if b, err := hex.DecodeString(h); err == nil {
			out = append(out, b)
		}
	}
	return append(out, []byte(o.keyID))
}

func (o *object) keyType() uint64 {
	switch s := o.meta.GetKeySpec(); {
	case s == pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT:
		return CKK_AES
	case isRSA(s):
		return CKK_RSA
	default:
		return CKK_EC
	}
}

func isRSA(s pb.KeySpec) bool {
	return s == pb.KeySpec_KEY_SPEC_RSA_2048 || s == pb.KeySpec_KEY_SPEC_RSA_3072 || s == pb.KeySpec_KEY_SPEC_RSA_4096
}

// Attribute is one CK_ATTRIBUTE of a template, its value copied.
type Attribute struct {
	Type  uint64
	Value []byte
}

func ckBool(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}

func ckULong(v uint64) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, v)
	return b
}

// attr returns the value of attribute typ of o: its bytes, or
// CKR_ATTRIBUTE_SENSITIVE or CKR_ATTRIBUTE_TYPE_INVALID. pub is the public
// key of an asymmetric key, or nil when unknown.
func (o *object) attr(typ uint64, pub any) ([]byte, uint64) {
	usage := o.meta.GetKeyUsage()
	enc := usage == pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT
	if o.class == CKO_SECRET_KEY {
		enc = isRawKey(o.meta) // a key of the broker's own format does no PKCS#11 AES
	}
	sign := usage == pb.KeyUsage_KEY_USAGE_SIGN_VERIFY
	secretOrPrivate := o.class != CKO_PUBLIC_KEY
	switch typ {
	case CKA_CLASS:
		return ckULong(o.class), CKR_OK
	case CKA_KEY_TYPE:
		return ckULong(o.keyType()), CKR_OK
	case CKA_TOKEN, CKA_LOCAL:
		return ckBool(true), CKR_OK
	case CKA_PRIVATE:
		return ckBool(o.private()), CKR_OK
	case CKA_MODIFIABLE, CKA_COPYABLE, CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED, CKA_ALWAYS_AUTHENTICATE,
		CKA_DERIVE, CKA_SIGN_RECOVER, CKA_VERIFY_RECOVER, CKA_WRAP, CKA_UNWRAP:
		return ckBool(false), CKR_OK
	case CKA_DESTROYABLE:
		return ckBool(false), CKR_OK
	case CKA_LABEL:
		if l := o.labels(); len(l) > 0 {
			return []byte(l[0]), CKR_OK
		}
		return []byte(o.keyID), CKR_OK
	case CKA_ID:
		return o.ids()[0], CKR_OK
	case CKA_START_DATE, CKA_END_DATE, CKA_SUBJECT:
		return []byte{}, CKR_OK
	case CKA_KEY_GEN_MECHANISM:
		switch o.keyType() {
		case CKK_AES:
			return ckULong(CKM_AES_KEY_GEN), CKR_OK
		case CKK_RSA:
			return ckULong(CKM_RSA_PKCS_KEY_PAIR_GEN), CKR_OK
		}
		return ckULong(CKM_EC_KEY_PAIR_GEN), CKR_OK
	case CKA_ENCRYPT:
		return ckBool(enc && o.class != CKO_PRIVATE_KEY), CKR_OK
	case CKA_DECRYPT:
		return ckBool(enc && o.class != CKO_PUBLIC_KEY), CKR_OK
	case CKA_SIGN:
		return ckBool(sign && o.class != CKO_PUBLIC_KEY), CKR_OK
	case CKA_VERIFY:
		return ckBool(sign && o.class != CKO_PRIVATE_KEY), CKR_OK
	}
	if secretOrPrivate {
		switch typ {
		case CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE:
			return ckBool(true), CKR_OK
		case CKA_EXTRACTABLE:
			return ckBool(false), CKR_OK
		case CKA_VALUE, CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2, CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT:
			if typ == CKA_VALUE || o.keyType() == CKK_RSA {
				return nil, CKR_ATTRIBUTE_SENSITIVE
			}
		}
	}
	if o.class == CKO_SECRET_KEY && typ == CKA_VALUE_LEN {
		return ckULong(32), CKR_OK
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch typ {
		case CKA_MODULUS:
			return k.N.Bytes(), CKR_OK
		case CKA_MODULUS_BITS:
			return ckULong(uint64(k.N.BitLen())), CKR_OK
		case CKA_PUBLIC_EXPONENT:
			return big.NewInt(int64(k.E)).Bytes(), CKR_OK
		case CKA_PUBLIC_KEY_INFO:
			der, _ := x509.MarshalPKIXPublicKey(k)
			return der, CKR_OK
		}
	case *ecdsa.PublicKey:
		switch typ {
		case CKA_EC_PARAMS:
			return ecParams(k.Curve), CKR_OK
		case CKA_EC_POINT:
			if o.class != CKO_PUBLIC_KEY {
				break
			}
			raw, err := k.Bytes()
			if err != nil {
				return nil, CKR_GENERAL_ERROR
			}
			der, _ := asn1.Marshal(raw)
			return der, CKR_OK
		case CKA_PUBLIC_KEY_INFO:
			der, _ := x509.MarshalPKIXPublicKey(k)
			return der, CKR_OK
		}
	}
	return nil, CKR_ATTRIBUTE_TYPE_INVALID
}

// needsPublic reports whether attribute typ comes from the public key.
func needsPublic(typ uint64) bool {
	switch typ {
	case CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS, CKA_EC_POINT, CKA_PUBLIC_KEY_INFO:
		return true
	}
	return false
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

func ecParams(c elliptic.Curve) []byte {
	var oid asn1.ObjectIdentifier
	switch c {
	case elliptic.P256():
		oid = oidP256
	case elliptic.P384():
		oid = oidP384
	default:
		oid = oidP521
	}
	der, _ := asn1.Marshal(oid)
	return der
}

// matches reports whether o has every attribute of the search template.
func (o *object) matches(tmpl []Attribute, pub any) bool {
	for _, a := range tmpl {
		switch a.Type {
		case CKA_LABEL:
			if !containsBytes(stringsToBytes(o.labels()), a.Value) && !(len(o.labels()) == 0 && string(a.Value) == o.keyID) {
				return false
			}
		case CKA_ID:
			if !containsBytes(o.ids(), a.Value) {
				return false
			}
		default:
			v, rv := o.attr(a.Type, pub)
			if rv != CKR_OK || !bytes.Equal(v, a.Value) {
				return false
			}
		}
	}
	return true
}

func stringsToBytes(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i, v := range s {
		out[i] = []byte(v)
	}
	return out
}

func containsBytes(list [][]byte, v []byte) bool {
	for _, b := range list {
		if bytes.Equal(b, v) {
			return true
		}
	}
	return false
}
