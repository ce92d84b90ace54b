package kmip

import (
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/keys"
)

// Texts a client asks to store (Name, Object Group, custom attribute names
// and values, Revocation Message) that hold a C1 control or a
// bidirectional formatting character are refused as Invalid Field naming
// the attribute, whether at Register, Create, Create Key Pair or in an
// attribute operation, and nothing is proposed.
func TestDisplayControlsRefused(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))))[0]
	state := e.c.Nodes[0].Raft.State()
	before := state.Digest()
	register := func(a ttlv.Item) []ttlv.Item {
		return []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute, a), symKey(randBytes(t, 16))}
	}
	create := func(a ttlv.Item) []ttlv.Item {
		return []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute,
			attr1("Cryptographic Algorithm", ttlv.Enum(0, 3)), attr1("Cryptographic Length", ttlv.Int(0, 128)), a)}
	}
	cases := []struct {
		name    string
		v       version
		code    uint32
		payload []ttlv.Item
		what    string
	}{
		{"Register Name RLO", v, opRegister, register(attr1("Name", nameValue("abc\u202Edef"))), "Name"},
		{"Register Name CSI", v, opRegister, register(attr1("Name", nameValue("a\u009B2J"))), "Name"},
		{"Register Object Group LRI", v, opRegister, register(attr1("Object Group", ttlv.Text(0, "g\u2066"))), "Object Group"},
		{"Register custom name RLM", v, opRegister, register(attr1("x-\u200Fk", ttlv.Text(0, "v"))), "custom attribute name"},
		{"Register custom value ALM", v, opRegister, register(attr1("x-k", ttlv.Text(0, "v\u061C"))), "custom attribute"},
		{"Create Name PDI", v, opCreate, create(attr1("Name", nameValue("n\u2069"))), "Name"},
		{"Register 2.0 Name", version{2, 0}, opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagAttributes, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "x\u202Ay"), ttlv.Enum(tagNameType, nameTypeText))), symKey(randBytes(t, 16))}, "Name"},
		{"Add Name", v, opAddAttribute, []ttlv.Item{uid(id), attr1("Name", nameValue("\u200Eleft"))}, "Name"},
		{"Add custom", v, opAddAttribute, []ttlv.Item{uid(id), attr1("x-note", ttlv.Text(0, "\u0085"))}, "custom attribute"},
		{"Modify Object Group", v, opModifyAttribute, []ttlv.Item{uid(id), attr1("Object Group", ttlv.Text(0, "\u202D"))}, "Object Group"},
		{"Set 2.0 Object Group", version{2, 0}, opSetAttribute, []ttlv.Item{uid(id), ttlv.Struct(tagNewAttribute, ttlv.Text(tagObjectGroup, "\u2067g"))}, "Object Group"},
		{"Revoke message", v, opRevoke, []ttlv.Item{uid(id), ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, 1), ttlv.Text(tagRevocationMessage, "\u202E"))}, "Revocation Message"},
	}
	for _, tc := range cases {
		_, rs := c.send(tc.v, op{tc.code, tc.payload})
		if len(rs) != 1 || rs[0].status != statusOperationFailed || rs[0].reason != reasonInvalidField {
			t.Errorf("%s: want Invalid Field, got %+v", tc.name, rs)
			continue
		}
		if !strings.Contains(rs[0].message, tc.what) {
			t.Errorf("%s: the message %q does not name %s", tc.name, rs[0].message, tc.what)
		}
	}
	if state.Digest() != before {
		t.Fatal("a refused request changed the replicated state")
	}
	// Plain text, and characters that are merely not ASCII, still go.
	c.do(v, opAddAttribute, uid(id), attr1("Name", nameValue("schlüssel-ключ")))
}

// The Item Not Found answer quotes the identifier the client sent, as the
// other answers do: an escape sequence, a C1 control, a bidirectional
// override or a byte that is not UTF-8 comes back escaped, and the
// message stays within maxResultMessage bytes.
func TestNotFoundQuotesIdentifier(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	for _, id := range []string{"\x1b[2J\u202Eevil", "a\u009B31m", "\xff\xfe", strings.Repeat("\u202E", 85)} {
		_, rs := c.send(v, op{opGet, []ttlv.Item{uid(id)}})
		if len(rs) != 1 || rs[0].reason != reasonItemNotFound {
			t.Fatalf("Get %q: want Item Not Found, got %+v", id, rs)
		}
		m := rs[0].message
		if strings.ContainsFunc(m, keys.IsDisplayControl) || strings.ContainsRune(m, '\uFFFD') {
			t.Errorf("Get %q: the message carries the raw identifier: %q", id, m)
		}
		if !strings.Contains(m, `\`) {
			t.Errorf("Get %q: the message does not escape the identifier: %q", id, m)
		}
		if len(m) > maxResultMessage {
			t.Errorf("Get %q: the message is %d bytes", id, len(m))
		}
	}
}
