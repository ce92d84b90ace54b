package kmip

import (
	"bytes"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
)

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// The Percona keyring sequence with the project's codec: Register (1.4) +
// Activate with an Object Group, Locate by group (1.0) on the same
// connection, Get, Get Attributes Name, Revoke + Destroy; and the object
// is stored only wrapped.
func TestMixedVersionsOnOneConnection(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	v14, v10 := version{1, 4}, version{1, 0}
	key := randBytes(t, 32)
	resp, rs := c.send(v14,
		op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("percona-key-1")), attr1("Object Group", ttlv.Text(0, "percona")),
				attr1("Cryptographic Usage Mask", ttlv.Int(0, 12))),
			symKey(key)}},
		op{opActivate, nil}) // the ID Placeholder names the registered key
	if got := responseVersion(t, resp); got != v14 {
		t.Fatalf("answered in %s", got)
	}
	if len(rs) != 2 || rs[0].status != statusSuccess || rs[1].status != statusSuccess {
		t.Fatalf("Register+Activate: %+v", rs)
	}
	id := ids(rs[0].payload)[0]

	// Locate in 1.0 on the same connection, answered in 1.0.
	b, _ := request(v10, op{opLocate, []ttlv.Item{attr1("Object Group", ttlv.Text(0, "percona"))}}).Encode()
	resp, err := c.roundTrip(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := responseVersion(t, resp); got != v10 {
		t.Fatalf("Locate answered in %s", got)
	}
	bi, _ := resp.Child(tagBatchItem)
	pl, _ := bi.Child(tagResponsePayload)
	if got := ids(pl); !slices.Equal(got, []string{id}) {
		t.Fatalf("Locate by group = %v, want [%s]", got, id)
	}

	got := c.do(v14, opGet, uid(id))
	sk, _ := got.Child(tagSymmetricKey)
	kb, _ := sk.Child(tagKeyBlock)
	kv, _ := kb.Child(tagKeyValue)
	km, _ := kv.Child(tagKeyMaterial)
	if !bytes.Equal(km.Bytes, key) {
		t.Fatal("Get returned other material")
	}
	ga := c.do(v14, opGetAttributes, uid(id), ttlv.Text(tagAttributeName, "Name"), ttlv.Text(tagAttributeName, "State"))
	as := ga.ChildrenOf(tagAttribute)
	if len(as) != 2 {
		t.Fatalf("Get Attributes: %+v", ga)
	}
	nv, _ := as[0].Child(tagAttributeValue)
	n, _ := nv.Child(tagNameValue)
	st, _ := as[1].Child(tagAttributeValue)
	if n.Text() != "percona-key-1" || st.Int != int64(cluster.KMIPActive) {
		t.Fatalf("Name %q State %d", n.Text(), st.Int)
	}

	// The replicated object holds the material only sealed.
	o, _ := e.c.Nodes[0].Raft.State().KMIPObject(id)
	if len(o.Wrapped) == 0 || bytes.Contains(o.Wrapped, key) || o.Owner != "mysql" {
		t.Fatalf("stored object: owner %q, %d wrapped bytes, contains key: %v", o.Owner, len(o.Wrapped), bytes.Contains(o.Wrapped, key))
	}
	data := e.c.Nodes[0].Raft.State().Data()
	if _, ok := data.KMIP[id]; !ok {
		t.Fatal("object not in the replicated state")
	}

	// Destroy refuses an Active object; Revoke then Destroy works.
	if r := c.fail(v14, opDestroy, uid(id)); r != reasonPermissionDenied {
		t.Fatalf("Destroy of an Active key at 1.4: reason %s", reasonName(r))
	}
	// A reason code outside 1-8 and a message over 1024 bytes are
	// refused (Invalid Field, naming the rule) and revoke nothing.
	for _, bad := range []struct {
		name, want string
		reason     ttlv.Item
	}{
		{"reason code 9", "Revocation Reason Code must be a KMIP revocation reason",
			ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, 9))},
		{"reason code 0", "Revocation Reason Code must be a KMIP revocation reason",
			ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, 0))},
		{"1025-byte message", "at most 1024 bytes",
			ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec),
				ttlv.Text(tagRevocationMessage, strings.Repeat("m", 1025)))},
	} {
		_, rs := c.send(v14, op{opRevoke, []ttlv.Item{uid(id), bad.reason}})
		if len(rs) != 1 || rs[0].status != statusOperationFailed || rs[0].reason != reasonInvalidField || !strings.Contains(rs[0].message, bad.want) {
			t.Fatalf("Revoke with %s: %+v, want Invalid Field naming %q", bad.name, rs, bad.want)
		}
	}
	if r := c.fail(v14, opDestroy, uid(id)); r != reasonPermissionDenied {
		t.Fatalf("Destroy after refused Revokes at 1.4: reason %s, want the key still Active", reasonName(r))
	}
	c.do(v14, opRevoke, uid(id), ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec),
		ttlv.Text(tagRevocationMessage, strings.Repeat("m", 1024))))
	c.do(v14, opDestroy, uid(id))
	if r := c.fail(v14, opGet, uid(id)); r != reasonItemNotFound {
		t.Fatalf("Get after Destroy: %s", reasonName(r))
	}
	if r := c.fail(version{2, 0}, opActivate, uid(id)); r != reasonItemNotFound {
		t.Fatalf("Activate after Destroy: %s", reasonName(r))
	}
}

// KMIP 2.0 encodings: Attributes structures, attribute references, Create
// of AES keys of each size, Wrong Key Lifecycle State.
func TestKMIP20(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{2, 0}
	var created []string
	for _, bits := range []int32{128, 192, 256} {
		p := c.do(v, opCreate, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagAttributes,
			ttlv.Enum(tagCryptographicAlgorithm, 3), ttlv.Int(tagCryptographicLength, bits), ttlv.Int(tagCryptographicUsageMask, 12),
			ttlv.Struct(tagName, ttlv.Text(tagNameValue, "k20"), ttlv.Enum(tagNameType, nameTypeText))))
		id := ids(p)[0]
		created = append(created, id)
		g := c.do(v, opGet, uid(id))
		sk, _ := g.Child(tagSymmetricKey)
		kb, _ := sk.Child(tagKeyBlock)
		kv, _ := kb.Child(tagKeyValue)
		km, _ := kv.Child(tagKeyMaterial)
		if len(km.Bytes)*8 != int(bits) {
			t.Fatalf("AES-%d key has %d bytes", bits, len(km.Bytes))
		}
	}
	// Locate by Name in the 2.0 form, with Maximum Items and Offset.
	loc := func(maxItems, offset int32) []string {
		return ids(c.do(v, opLocate, ttlv.Int(tagMaximumItems, maxItems), ttlv.Int(tagOffsetItems, offset),
			ttlv.Struct(tagAttributes, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "k20"), ttlv.Enum(tagNameType, nameTypeText)))))
	}
	all := slices.Sorted(slices.Values(created))
	if got := loc(16, 0); !slices.Equal(got, all) {
		t.Fatalf("Locate = %v, want %v", got, all)
	}
	if got := loc(1, 1); !slices.Equal(got, all[1:2]) {
		t.Fatalf("Locate max 1 offset 1 = %v, want %v", got, all[1:2])
	}
	ga := c.do(v, opGetAttributes, uid(created[0]), ttlv.Enum(tagAttributeReference, uint32(tagState)))
	as, ok := ga.Child(tagAttributes)
	st, ok2 := as.Child(tagState)
	if !ok || !ok2 || st.Int != int64(cluster.KMIPPreActive) {
		t.Fatalf("Get Attributes State: %+v", ga)
	}
	gal := c.do(v, opGetAttributeList, uid(created[0]))
	if len(gal.ChildrenOf(tagAttributeReference)) < 5 {
		t.Fatalf("Get Attribute List: %+v", gal)
	}
	// Activate twice: the second is Wrong Key Lifecycle State in 2.0.
	c.do(v, opActivate, uid(created[0]))
	if r := c.fail(v, opActivate, uid(created[0])); r != reasonWrongLifecycleState {
		t.Fatalf("second Activate: %s", reasonName(r))
	}
	// Set Attribute (2.0) renames; the old name finds nothing.
	c.do(v, opSetAttribute, uid(created[0]), ttlv.Struct(tagNewAttribute, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "renamed"), ttlv.Enum(tagNameType, nameTypeText))))
	if got := loc(16, 0); slices.Contains(got, created[0]) {
		t.Fatalf("renamed key still found by its old name: %v", got)
	}
	// Unsupported: Create of an RSA key, MAC Verify.
	if r := c.fail(v, opCreate, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagAttributes, ttlv.Enum(tagCryptographicAlgorithm, 4), ttlv.Int(tagCryptographicLength, 2048))); r != reasonOperationNotSupported {
		t.Fatalf("Create RSA: %s", reasonName(r))
	}
	if r := c.fail(v, 0x24, uid(created[0])); r != reasonOperationNotSupported {
		t.Fatalf("MAC Verify: %s", reasonName(r))
	}
}

// Roles and the wrapping key's policy decide, as on gRPC.
func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	user := e.dial(t, "app", authz.RoleUser)
	v := version{1, 2}
	id := ids(user.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))))[0]
	auditor := e.dial(t, "watcher", authz.RoleAuditor)
	if r := auditor.fail(v, opGet, uid(id)); r != reasonPermissionDenied {
		t.Fatalf("auditor Get: %s", reasonName(r))
	}
	// The auditor may still discover versions.
	p := auditor.do(v, opDiscoverVersions)
	if n := len(p.ChildrenOf(tagProtocolVersion)); n != len(supported) {
		t.Fatalf("Discover Versions listed %d versions", n)
	}
	// A key registered as not extractable is never returned.
	ne := ids(user.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Sensitive", ttlv.Bool(0, true))), symKey(randBytes(t, 16))))[0]
	if r := user.fail(v, opGet, uid(ne)); r != reasonPermissionDenied {
		t.Fatalf("Get of a sensitive key: %s", reasonName(r))
	}
}
