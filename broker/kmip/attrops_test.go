package kmip

import (
	"slices"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// Add, Modify and Delete Attribute (1.x forms) on names, groups and custom
// attributes; server-set attributes refuse them.
func TestAttributeOperations(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("first"))), symKey(randBytes(t, 16))))[0]
	names := func() []string {
		p := c.do(v, opGetAttributes, uid(id), ttlv.Text(tagAttributeName, "Name"))
		var out []string
		for _, a := range p.ChildrenOf(tagAttribute) {
			av, _ := a.Child(tagAttributeValue)
			n, _ := av.Child(tagNameValue)
			out = append(out, n.Text())
		}
		return out
	}
	c.do(v, opAddAttribute, uid(id), attr1("Name", nameValue("second")))
	if got := names(); !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("after Add: %v", got)
	}
	// Modify index 1, then Delete index 0.
	mod := attr1("Name", nameValue("changed"))
	mod.Children = slices.Insert(mod.Children, 1, ttlv.Int(tagAttributeIndex, 1))
	c.do(v, opModifyAttribute, uid(id), mod)
	if got := names(); !slices.Equal(got, []string{"first", "changed"}) {
		t.Fatalf("after Modify: %v", got)
	}
	c.do(v, opDeleteAttribute, uid(id), ttlv.Text(tagAttributeName, "Name"), ttlv.Int(tagAttributeIndex, 0))
	if got := names(); !slices.Equal(got, []string{"changed"}) {
		t.Fatalf("after Delete: %v", got)
	}
	if r := c.fail(v, opDeleteAttribute, uid(id), ttlv.Text(tagAttributeName, "Name"), ttlv.Int(tagAttributeIndex, 5)); r != reasonItemNotFound {
		t.Fatalf("Delete of a missing index: %s", reasonName(r))
	}
	// Custom attributes.
	c.do(v, opAddAttribute, uid(id), attr1("x-owner", ttlv.Text(0, "dba")))
	if r := c.fail(v, opAddAttribute, uid(id), attr1("x-owner", ttlv.Text(0, "again"))); r != reasonIllegalOperation {
		t.Fatalf("second Add of a custom attribute: %s", reasonName(r))
	}
	c.do(v, opModifyAttribute, uid(id), attr1("x-owner", ttlv.Text(0, "ops")))
	p := c.do(v, opGetAttributes, uid(id), ttlv.Text(tagAttributeName, "x-owner"))
	a, _ := p.Child(tagAttribute)
	av, _ := a.Child(tagAttributeValue)
	if av.Text() != "ops" {
		t.Fatalf("x-owner = %q", av.Text())
	}
	c.do(v, opDeleteAttribute, uid(id), ttlv.Text(tagAttributeName, "x-owner"))
	if p := c.do(v, opGetAttributes, uid(id), ttlv.Text(tagAttributeName, "x-owner")); len(p.ChildrenOf(tagAttribute)) != 0 {
		t.Fatalf("x-owner still there: %+v", p)
	}
	// Object Group through Add, found by Locate.
	c.do(v, opAddAttribute, uid(id), attr1("Object Group", ttlv.Text(0, "late")))
	if got := ids(c.do(v, opLocate, attr1("Object Group", ttlv.Text(0, "late")))); !slices.Equal(got, []string{id}) {
		t.Fatalf("Locate by an added group: %v", got)
	}
	// Server-set and unknown attributes cannot be changed, whatever value
	// they carry: the core refuses them before their value is read.
	for _, a := range []ttlv.Item{attr1("State", ttlv.Enum(0, 2)), attr1("Cryptographic Length", ttlv.Int(0, 64)),
		attr1("Unique Identifier", ttlv.Text(0, "other")), attr1("Initial Date", ttlv.Int(0, 1)), attr1("No Such Attribute", ttlv.Int(0, 1))} {
		if r := c.fail(v, opModifyAttribute, uid(id), a); r != reasonPermissionDenied {
			t.Fatalf("Modify of a server-set attribute: %s", reasonName(r))
		}
	}
	if r := c.fail(v, opAddAttribute, uid(id), attr1("Activation Date", ttlv.Int(0, 1))); r != reasonInvalidField {
		t.Fatalf("Activation Date of the wrong type: %s", reasonName(r))
	}
}
