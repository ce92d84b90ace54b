package kmip

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
)

// object reads an object from the replicated state.
func (e *env) object(t *testing.T, id string) cluster.KMIPObject {
	t.Helper()
	o, ok := e.c.Nodes[0].Raft.State().KMIPObject(id)
	if !ok {
		t.Fatalf("object %s is not in the replicated state", id)
	}
	return o
}

// symKeyStated is a Raw symmetric key whose Key Block states algorithm
// and length (bits) as given, whatever the material.
func symKeyStated(material []byte, alg uint32, bits int32) ttlv.Item {
	return ttlv.Struct(tagSymmetricKey, ttlv.Struct(tagKeyBlock, ttlv.Enum(tagKeyFormatType, formatRaw),
		ttlv.Struct(tagKeyValue, ttlv.Bytes(tagKeyMaterial, material)),
		ttlv.Enum(tagCryptographicAlgorithm, alg), ttlv.Int(tagCryptographicLength, bits)))
}

// Register refuses an AES key that is not 128, 192 or 256 bits, and any
// stated Cryptographic Length that is not the material's, with Invalid
// Field naming Cryptographic Length; nothing is stored. Other algorithms
// keep their lengths.
func TestRegisterChecksKeyLength(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	state := e.c.Nodes[0].Raft.State()
	for _, v := range []version{{1, 2}, {2, 0}} {
		before := state.Digest()
		for _, n := range []int{1, 15, 17, 31, 33, 64, 4096} {
			_, rs := c.send(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, n))}})
			if len(rs) != 1 || rs[0].status != statusOperationFailed || rs[0].reason != reasonInvalidField || !strings.Contains(rs[0].message, "Cryptographic Length") {
				t.Fatalf("%s: Register of a %d-byte AES key: %+v, want Invalid Field naming Cryptographic Length", v, n, rs)
			}
		}
		// Stated lengths that disagree with 16 bytes of material: in the
		// Key Block, in the attributes, or in one of them only.
		attrs := func(bits int32) ttlv.Item {
			if v.major >= 2 {
				return ttlv.Struct(tagAttributes, ttlv.Int(tagCryptographicLength, bits))
			}
			return ttlv.Struct(tagTemplateAttribute, attr1("Cryptographic Length", ttlv.Int(0, bits)))
		}
		for _, tc := range []struct {
			name    string
			payload []ttlv.Item
		}{
			{"Key Block says 256", []ttlv.Item{symKeyStated(randBytes(t, 16), 3, 256)}},
			{"attributes say 256", []ttlv.Item{attrs(256), symKeyStated(randBytes(t, 16), 3, 128)}},
			{"attributes say 128, Key Block 256", []ttlv.Item{attrs(128), symKeyStated(randBytes(t, 16), 3, 256)}},
		} {
			_, rs := c.send(v, op{opRegister, append([]ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey)}, tc.payload...)})
			if len(rs) != 1 || rs[0].status != statusOperationFailed || rs[0].reason != reasonInvalidField || !strings.Contains(rs[0].message, "Cryptographic Length") {
				t.Fatalf("%s: Register where %s: %+v, want Invalid Field naming Cryptographic Length", v, tc.name, rs)
			}
		}
		if state.Digest() != before {
			t.Fatalf("%s: a refused Register changed the replicated state", v)
		}
		for _, n := range []int{16, 24, 32} {
			id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, n))))[0]
			c.do(v, opActivate, uid(id))
			c.do(v, opEncrypt, uid(id), ttlv.Bytes(tagData, []byte("sixteen byte msg")))
		}
		// An HMAC-SHA256 key (algorithm 8) has no such bound.
		c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKeyStated(randBytes(t, 40), 8, 320))
	}
}

// Revoke follows KMIP's state model, at 1.2 and 2.0: a reason other than
// Key Compromise revokes only an Active object (to Deactivated); Key
// Compromise makes a Pre-Active, Active or Deactivated object Compromised.
// A refused revocation is Wrong Key Lifecycle State (2.0) or Permission
// Denied (1.x, as for Destroy of an Active key) and changes nothing.
func TestRevokeFollowsTheStateModel(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	reason := func(code uint32) ttlv.Item {
		return ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, code))
	}
	const (
		unspecified, keyCompromise, caCompromise, superseded, cessation = 1, 2, 3, 4, 5
	)
	for _, v := range []version{{1, 2}, {2, 0}} {
		wrongState := reasonPermissionDenied
		if v.major >= 2 {
			wrongState = reasonWrongLifecycleState
		}
		if r := c.fail(v, opDestroy, uid(func() string {
			id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 32))))[0]
			c.do(v, opActivate, uid(id))
			return id
		}())); r != wrongState {
			t.Fatalf("%s: Destroy of an Active key: %s, want %s", v, reasonName(r), reasonName(wrongState))
		}
		register := func() string {
			return ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
				ttlv.Struct(tagTemplateAttribute, attr1("Cryptographic Usage Mask", ttlv.Int(0, 12))), symKey(randBytes(t, 32))))[0]
		}
		refused := func(id string, code uint32, want uint32) {
			t.Helper()
			before := e.object(t, id)
			if r := c.fail(v, opRevoke, uid(id), reason(code)); r != wrongState {
				t.Fatalf("%s: Revoke (reason %d) of a %s object: %s, want %s", v, code, kmipState(before.State), reasonName(r), reasonName(wrongState))
			}
			if after := e.object(t, id); after.State != want || after.RevocationReason != before.RevocationReason || !after.LastChange.Equal(before.LastChange) {
				t.Fatalf("%s: a refused Revoke changed the object: %+v", v, after)
			}
		}

		// Pre-Active: no reason but a compromise.
		pre := register()
		for _, code := range []uint32{unspecified, superseded, cessation} {
			refused(pre, code, cluster.KMIPPreActive)
		}
		if r := c.fail(v, opEncrypt, uid(pre), ttlv.Bytes(tagData, []byte("data"))); r != wrongState {
			t.Fatalf("%s: Encrypt with the Pre-Active key after refused Revokes: %s", v, reasonName(r))
		}
		c.do(v, opRevoke, uid(pre), reason(keyCompromise))
		if o := e.object(t, pre); o.State != cluster.KMIPCompromised || o.CompromiseDate.IsZero() {
			t.Fatalf("%s: Key Compromise of a Pre-Active key: state %s", v, kmipState(o.State))
		}
		// Compromised: a later cessation is refused; Get never returns it.
		refused(pre, cessation, cluster.KMIPCompromised)
		if r := c.fail(v, opGet, uid(pre)); r != wrongState {
			t.Fatalf("%s: Get of a Compromised key: %s", v, reasonName(r))
		}
		c.do(v, opDestroy, uid(pre))

		// Active: cessation deactivates it; Decrypt still works, a
		// second cessation is refused, Key Compromise compromises it.
		act := register()
		c.do(v, opActivate, uid(act))
		c.do(v, opRevoke, uid(act), reason(cessation))
		if o := e.object(t, act); o.State != cluster.KMIPDeactivated || o.DeactivationDate.IsZero() || o.RevocationReason != cessation {
			t.Fatalf("%s: Cessation of an Active key: %+v", v, o)
		}
		refused(act, cessation, cluster.KMIPDeactivated)
		refused(act, unspecified, cluster.KMIPDeactivated)
		c.do(v, opRevoke, uid(act), reason(keyCompromise))
		if o := e.object(t, act); o.State != cluster.KMIPCompromised || o.RevocationReason != keyCompromise {
			t.Fatalf("%s: Key Compromise of a Deactivated key: %+v", v, o)
		}
		c.do(v, opRevoke, uid(act), reason(keyCompromise)) // stays Compromised
		c.do(v, opDestroy, uid(act))

		// Active, compromised at once; CA Compromise counts as one.
		for _, code := range []uint32{keyCompromise, caCompromise} {
			id := register()
			c.do(v, opActivate, uid(id))
			c.do(v, opRevoke, uid(id), reason(code))
			if o := e.object(t, id); o.State != cluster.KMIPCompromised {
				t.Fatalf("%s: Revoke (reason %d) of an Active key: state %s", v, code, kmipState(o.State))
			}
		}
	}
}

func kmipState(s uint32) string {
	return map[uint32]string{1: "Pre-Active", 2: "Active", 3: "Deactivated", 4: "Compromised"}[s]
}

// An Activation Date that is not in the future makes the object Active,
// at Register, Create and Create Key Pair and through Add, Modify (1.x)
// and Set (2.0) Attribute; a later one is recorded and leaves it
// Pre-Active; dates that cannot be represented are Invalid Field and
// store nothing.
func TestActivationDateActivates(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	past := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	now := time.Now().Truncate(time.Second).UTC()
	future := time.Now().Add(24 * time.Hour).Truncate(time.Second).UTC()
	expect := func(v version, what, id string, state uint32, date time.Time) {
		t.Helper()
		o := e.object(t, id)
		if o.State != state || !o.ActivationDate.Equal(date) {
			t.Fatalf("%s: %s: state %s, Activation Date %v; want %s, %v", v, what, kmipState(o.State), o.ActivationDate, kmipState(state), date)
		}
	}
	for _, v := range []version{{1, 2}, {2, 0}} {
		// The attributes of a Create or Register carrying an Activation
		// Date, in v's form.
		withDate := func(d time.Time, more ...ttlv.Item) ttlv.Item {
			if v.major >= 2 {
				return ttlv.Struct(tagAttributes, append([]ttlv.Item{ttlv.DateTime(tagActivationDate, d)}, more...)...)
			}
			ta := ttlv.Struct(tagTemplateAttribute, attr1("Activation Date", ttlv.DateTime(0, d)))
			for _, m := range more {
				if d, ok := attrByTag(m.Tag); ok {
					ta.Children = append(ta.Children, attr1(d.name, m))
				}
			}
			return ta
		}
		register := func(d time.Time) string {
			return ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), withDate(d), symKey(randBytes(t, 32))))[0]
		}
		for _, tc := range []struct {
			name  string
			date  time.Time
			state uint32
		}{{"an hour ago", past, cluster.KMIPActive}, {"now", now, cluster.KMIPActive}, {"tomorrow", future, cluster.KMIPPreActive}} {
			id := register(tc.date)
			expect(v, "Register with an Activation Date "+tc.name, id, tc.state, tc.date)
			if tc.state == cluster.KMIPActive {
				c.do(v, opEncrypt, uid(id), ttlv.Bytes(tagData, []byte("data")))
			}
		}
		id := ids(c.do(v, opCreate, ttlv.Enum(tagObjectType, objectSymmetricKey),
			withDate(past, ttlv.Enum(tagCryptographicAlgorithm, 3), ttlv.Int(tagCryptographicLength, 256))))[0]
		expect(v, "Create with a past Activation Date", id, cluster.KMIPActive, past)
		p := c.do(v, opCreateKeyPair, ttlv.Struct(tagCommonAttributes, ttlv.Enum(tagCryptographicAlgorithm, 6), ttlv.Int(tagCryptographicLength, 256)),
			ttlv.Struct(tagPrivateKeyAttributes, ttlv.DateTime(tagActivationDate, past)))
		expect(v, "the private half of a pair with a past Activation Date", textChild(t, p, tagPrivateKeyUID), cluster.KMIPActive, past)
		expect(v, "the public half, without one", textChild(t, p, tagPublicKeyUID), cluster.KMIPPreActive, time.Time{})

		// Through the attribute operations, on a Pre-Active object.
		change := func(op uint32, d time.Time) ttlv.Item {
			if v.major >= 2 {
				return c.do(v, op, uid(id), ttlv.Struct(tagNewAttribute, ttlv.DateTime(tagActivationDate, d)))
			}
			return c.do(v, op, uid(id), attr1("Activation Date", ttlv.DateTime(0, d)))
		}
		ops := []uint32{opAddAttribute, opModifyAttribute}
		if v.major >= 2 {
			ops = []uint32{opAddAttribute, opModifyAttribute, opSetAttribute}
		}
		for _, o := range ops {
			id = ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))))[0]
			change(o, future)
			expect(v, opNames[o]+" of a future Activation Date", id, cluster.KMIPPreActive, future)
			p := change(o, past)
			expect(v, opNames[o]+" of a past Activation Date", id, cluster.KMIPActive, past)
			if v.major < 2 { // 1.x answers with the attribute as set
				a, _ := p.Child(tagAttribute)
				if av, _ := a.Child(tagAttributeValue); !av.Time().Equal(past) {
					t.Fatalf("%s: %s answered %+v", v, opNames[o], p)
				}
			}
			// Active now: the date no longer changes.
			if v.major >= 2 {
				if r := c.fail(v, o, uid(id), ttlv.Struct(tagNewAttribute, ttlv.DateTime(tagActivationDate, future))); r != reasonWrongLifecycleState {
					t.Fatalf("%s: %s of an Active object's Activation Date: %s", v, opNames[o], reasonName(r))
				}
			} else if r := c.fail(v, o, uid(id), attr1("Activation Date", ttlv.DateTime(0, future))); r != reasonPermissionDenied {
				t.Fatalf("%s: %s of an Active object's Activation Date: %s", v, opNames[o], reasonName(r))
			}
		}

		// Dates that cannot be represented.
		state := e.c.Nodes[0].Raft.State()
		before := state.Digest()
		for _, secs := range []int64{-1, 253402300800, 1 << 62} { // before 1970, year 10000, far beyond
			bad := ttlv.Item{Tag: tagActivationDate, Type: ttlv.TypeDateTime, Int: secs}
			var as ttlv.Item
			if v.major >= 2 {
				as = ttlv.Struct(tagAttributes, bad)
			} else {
				bad.Tag = 0
				as = ttlv.Struct(tagTemplateAttribute, attr1("Activation Date", bad))
			}
			_, rs := c.send(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), as, symKey(randBytes(t, 16))}})
			if len(rs) != 1 || rs[0].reason != reasonInvalidField || !strings.Contains(rs[0].message, "Activation Date") {
				t.Fatalf("%s: Register with an Activation Date of %d s: %+v", v, secs, rs)
			}
		}
		if state.Digest() != before {
			t.Fatalf("%s: a refused Register changed the replicated state", v)
		}
	}
}

// A Pre-Active object whose Activation Date is in the future becomes
// Active when the date comes, keeping that date, without a client asking:
// the leader's daemon activates it (broker.Daemon.WatchKMIPActivation).
// Until then it stays Pre-Active, and ActivateDue names the date it waits
// for.
func TestFutureActivationDateComes(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "app", authz.RoleUser)
	v := version{1, 4}
	register := func(d time.Time) string {
		ta := ttlv.Struct(tagTemplateAttribute, attr1("Activation Date", ttlv.DateTime(0, d)))
		return ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), ta, symKey(randBytes(t, 32))))[0]
	}
	ctx := context.Background()
	later := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	waiting := register(later)
	n, next, err := e.c.Nodes[0].Daemon.ActivateDue(ctx)
	if err != nil || n != 0 || !next.Equal(later) {
		t.Fatalf("ActivateDue with a date an hour ahead: %d activated, next %v, %v; want 0, %v", n, next, err, later)
	}
	soon := time.Now().Add(2 * time.Second).Truncate(time.Second).UTC()
	id := register(soon)
	deadline := time.Now().Add(30 * time.Second)
	for {
		o := e.object(t, id)
		if o.State == cluster.KMIPActive {
			if !o.ActivationDate.Equal(soon) {
				t.Fatalf("activated with Activation Date %v, set to %v", o.ActivationDate, soon)
			}
			if time.Now().Before(soon) {
				t.Fatalf("activated before its Activation Date %v", soon)
			}
			break
		}
		if o.State != cluster.KMIPPreActive || time.Now().After(deadline) {
			t.Fatalf("object with Activation Date %v: state %s at %v", soon, kmipState(o.State), time.Now())
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.do(v, opEncrypt, uid(id), ttlv.Bytes(tagData, []byte("data")))
	if o := e.object(t, waiting); o.State != cluster.KMIPPreActive {
		t.Fatalf("the object due in an hour is %s", kmipState(o.State))
	}
}
