package kmip

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
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

// TestAttributesOfAnObjectBounded: an object's names, groups and custom
// attributes take at most broker.MaxKMIPAttributeBytes together, however
// they are given: at Register, or by Add and Modify later. A change over
// the bound is refused and nothing is stored; one that shrinks the
// attributes is taken.
func TestAttributesOfAnObjectBounded(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	name := func(i int) ttlv.Item { return attr1("Name", nameValue(strconv.Itoa(i)+strings.Repeat("n", 999))) }
	custom := func(k string, n int) ttlv.Item { return attr1(k, ttlv.Text(0, strings.Repeat("v", n))) }

	// Register: 12 names of 1000 bytes and a custom attribute of 4096
	// bytes are 16,105 bytes (under 16 KiB); 16 names and two such
	// custom attributes would be about 24 KB.
	var over []ttlv.Item
	for i := range 16 {
		over = append(over, name(i))
	}
	over = append(over, custom("x-a", 4096), custom("x-b", 4096))
	if r := c.fail(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute, over...), symKey(randBytes(t, 16))); r != reasonInvalidField {
		t.Fatalf("Register of %d names and 8 KiB of custom attributes: %s, want Invalid Field", 16, reasonName(r))
	}
	under := append(slices.Clone(over[:12]), custom("x-a", 4096))
	id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute, under...), symKey(randBytes(t, 16))))[0]

	// Add: one more name would take it over.
	_, rs := c.send(v, op{opAddAttribute, []ttlv.Item{uid(id), name(12)}})
	if len(rs) != 1 || rs[0].reason != reasonInvalidField || !strings.Contains(rs[0].message, strconv.Itoa(broker.MaxKMIPAttributeBytes)) {
		t.Fatalf("Add of a name past the bound: %+v, want Invalid Field naming %d bytes", rs, broker.MaxKMIPAttributeBytes)
	}
	if o := e.object(t, id); len(o.Names) != 12 {
		t.Fatalf("the refused Add stored a name: %d names", len(o.Names))
	}
	// Modify: near the bound (16,016 bytes), a longer value that takes it
	// over is refused; a shorter one is taken.
	c.do(v, opModifyAttribute, uid(id), custom("x-a", 10))
	c.do(v, opAddAttribute, uid(id), custom("x-b", 4000))
	if r := c.fail(v, opModifyAttribute, uid(id), custom("x-a", 400)); r != reasonInvalidField {
		t.Fatalf("Modify past the bound: %s, want Invalid Field", reasonName(r))
	}
	if o := e.object(t, id); len(o.Custom["x-a"]) != 10 {
		t.Fatalf("x-a is %d bytes after the refused Modify, want 10", len(o.Custom["x-a"]))
	}
	c.do(v, opModifyAttribute, uid(id), custom("x-a", 5))

	// An object stored over the bound before it was set (written here as
	// a replicated change, which does not check the total) stays, may
	// shrink, and may not grow.
	o := e.object(t, id)
	o.Custom = map[string]string{"x-a": strings.Repeat("v", 4096), "x-b": strings.Repeat("v", 4096), "x-c": strings.Repeat("v", 4096)}
	if _, err := e.c.Nodes[0].Raft.Apply(context.Background(), &cluster.KMIPUpdateObject{FromState: o.State, Object: o}); err != nil {
		t.Fatal(err)
	}
	c.do(v, opModifyAttribute, uid(id), custom("x-a", 100))
	if r := c.fail(v, opAddAttribute, uid(id), name(12)); r != reasonInvalidField {
		t.Fatalf("Add of a name to an object over the bound: %s, want Invalid Field", reasonName(r))
	}
	if o := e.object(t, id); len(o.Custom["x-a"]) != 100 || len(o.Names) != 12 {
		t.Fatalf("the object over the bound: x-a %d bytes, %d names; want 100 and 12", len(o.Custom["x-a"]), len(o.Names))
	}
}
