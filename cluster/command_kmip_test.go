package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func testKMIPObject(id, keyID string) KMIPObject {
	return KMIPObject{ID: id, ObjectType: 2, State: KMIPPreActive, Algorithm: 3, Length: 256, UsageMask: 12,
		Extractable: true, Names: []string{"name-" + id}, Groups: []string{"g"}, Custom: map[string]string{"x-a": "b"},
		Owner: "app", WrappingKeyID: keyID, Wrapped: []byte("blob:" + id), CreatedAt: t0, LastChange: t0}
}

func TestKMIPLifecycle(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &CreateKey{Key: symKey("k1")})
	o := testKMIPObject("o1", "k1")
	a.must(t, &KMIPCreateObject{Object: o})
	if _, err := a.apply(t, &KMIPCreateObject{Object: o}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
	missing := testKMIPObject("o2", "nokey")
	if _, err := a.apply(t, &KMIPCreateObject{Object: missing}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("create under a missing key: %v", err)
	}

	// Activate; an update cannot touch the material or type.
	up := o.Clone()
	up.State, up.Wrapped, up.ObjectType, up.Names = KMIPActive, []byte("other"), 7, []string{"renamed"}
	a.must(t, &KMIPUpdateObject{FromState: KMIPPreActive, Object: up})
	got, _ := a.f.State().KMIPObject("o1")
	if got.State != KMIPActive || string(got.Wrapped) != "blob:o1" || got.ObjectType != 2 || got.Names[0] != "renamed" {
		t.Fatalf("after update: %+v", got)
	}
	// A stale FromState and a transition the lifecycle forbids are refused.
	if _, err := a.apply(t, &KMIPUpdateObject{FromState: KMIPPreActive, Object: up}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("stale from state: %v", err)
	}
	back := got.Clone()
	back.State = KMIPPreActive
	if _, err := a.apply(t, &KMIPUpdateObject{FromState: KMIPActive, Object: back}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("active to pre-active: %v", err)
	}
	// An active object cannot be deleted; a deactivated one can.
	if _, err := EncodeCommand(&KMIPDeleteObject{ID: "o1", FromState: KMIPActive}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("delete active: %v", err)
	}
	if _, err := a.apply(t, &KMIPDeleteObject{ID: "o1", FromState: KMIPDeactivated}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("delete while active: %v", err)
	}
	off := got.Clone()
	off.State = KMIPDeactivated
	a.must(t, &KMIPUpdateObject{FromState: KMIPActive, Object: off})
	a.must(t, &KMIPDeleteObject{ID: "o1", FromState: KMIPDeactivated})
	if _, ok := a.f.State().KMIPObject("o1"); ok {
		t.Fatal("object still there after delete")
	}
	if d := a.f.State().Data(); d.KMIP != nil {
		t.Fatalf("empty KMIP map kept: %v", d.KMIP)
	}
}

func TestKMIPObjectBounds(t *testing.T) {
	cases := map[string]func(o *KMIPObject){
		"no material":    func(o *KMIPObject) { o.Wrapped = nil },
		"huge material":  func(o *KMIPObject) { o.Wrapped = make([]byte, maxBlobLen+1) },
		"too many names": func(o *KMIPObject) { o.Names = make([]string, MaxKMIPNames+1) },
		"long name":      func(o *KMIPObject) { o.Names = []string{strings.Repeat("n", MaxKMIPTextLen+1)} },
		"empty group":    func(o *KMIPObject) { o.Groups = []string{""} },
		"bad state":      func(o *KMIPObject) { o.State = KMIPDestroyed },
		"bad type":       func(o *KMIPObject) { o.ObjectType = 99 },
		"control char":   func(o *KMIPObject) { o.Names = []string{"a\x00b"} },
	}
	for name, mutate := range cases {
		o := testKMIPObject("o1", "k1")
		mutate(&o)
		if _, err := EncodeCommand(&KMIPCreateObject{Object: o}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestKMIPObjectsFilterAndPage(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &CreateKey{Key: symKey("k1")})
	for _, id := range []string{"c", "a", "d", "b"} {
		a.must(t, &KMIPCreateObject{Object: testKMIPObject(id, "k1")})
	}
	all := func(*KMIPObject) bool { return true }
	if ids := a.f.State().KMIPObjectIDs(all, 1, 2); strings.Join(ids, ",") != "b,c" {
		t.Fatalf("offset 1 limit 2: %v", ids)
	}
	if got := a.f.State().KMIPObjectIDs(func(o *KMIPObject) bool { return o.ID == "d" }, 0, 0); len(got) != 1 {
		t.Fatalf("filter: %v", got)
	}
	if ids := a.f.State().KMIPObjectIDs(all, 0, 0); strings.Join(ids, ",") != "a,b,c,d" {
		t.Fatalf("no limit: %v", ids)
	}
	if ids := a.f.State().KMIPObjectIDs(all, 3, 5); strings.Join(ids, ",") != "d" {
		t.Fatalf("offset 3 limit 5: %v", ids)
	}
	for _, off := range []int{4, 9} {
		if ids := a.f.State().KMIPObjectIDs(all, off, 1); len(ids) != 0 {
			t.Fatalf("offset %d: %v", off, ids)
		}
	}
}

// BenchmarkKMIPLocateFull is one Locate that matches every object of a
// full KMIP store (MaxKMIPObjects) and returns the first page.
func BenchmarkKMIPLocateFull(b *testing.B) {
	f := NewFSM(nil, nil)
	d := f.State().data
	d.KMIP = make(map[string]*KMIPObject, MaxKMIPObjects)
	for i := range MaxKMIPObjects {
		o := testKMIPObject(fmt.Sprintf("%08x-obj", i*2654435761%(1<<32)), "k1")
		d.KMIP[o.ID] = &o
	}
	all := func(*KMIPObject) bool { return true }
	b.ResetTimer()
	for b.Loop() {
		if ids := f.State().KMIPObjectIDs(all, 0, 1000); len(ids) != 1000 {
			b.Fatal(len(ids))
		}
	}
}

func testKMIPPair(priv, pub, keyID string) *KMIPCreateKeyPair {
	p := KMIPObject{ID: priv, ObjectType: KMIPPrivateKey, State: KMIPPreActive, Algorithm: 4, Length: 2048, UsageMask: 1,
		Owner: "app", WrappingKeyID: keyID, Wrapped: []byte("domain-wrapped:" + priv), CreatedAt: t0, LastChange: t0,
		KeySpec: "RSA_2048", PublicKey: []byte("spki"), LinkedID: pub}
	q := p.Clone()
	q.ID, q.ObjectType, q.UsageMask, q.Wrapped, q.LinkedID, q.Extractable = pub, KMIPPublicKey, 2, nil, priv, true
	return &KMIPCreateKeyPair{Private: p, Public: q}
}

// A key pair is stored in one step, both halves linked; an update keeps
// the pair fields; malformed pairs are refused before they are applied.
func TestKMIPKeyPair(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &CreateKey{Key: symKey("k1")})
	c := testKMIPPair("pv", "pb", "k1")
	a.must(t, c)
	st := a.f.State()
	pv, ok1 := st.KMIPObject("pv")
	pb, ok2 := st.KMIPObject("pb")
	if !ok1 || !ok2 || pv.LinkedID != "pb" || pb.LinkedID != "pv" || len(pb.Wrapped) != 0 || string(pv.Wrapped) != "domain-wrapped:pv" || pv.KeySpec != "RSA_2048" {
		t.Fatalf("stored pair: %+v %+v", pv, pb)
	}
	if _, err := a.apply(t, testKMIPPair("pv", "other", "k1")); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("a pair reusing an id: %v", err)
	}
	if _, ok := st.KMIPObject("other"); ok {
		t.Fatal("a refused pair left its public half")
	}
	up := pv.Clone()
	up.State, up.KeySpec, up.PublicKey, up.LinkedID = KMIPActive, "ECC_NIST_P256", []byte("x"), "elsewhere"
	a.must(t, &KMIPUpdateObject{FromState: KMIPPreActive, Object: up})
	if got, _ := st.KMIPObject("pv"); got.KeySpec != "RSA_2048" || string(got.PublicKey) != "spki" || got.LinkedID != "pb" {
		t.Fatalf("an update changed the pair fields: %+v", got)
	}
	for name, bad := range map[string]func(c *KMIPCreateKeyPair){
		"unlinked": func(c *KMIPCreateKeyPair) { c.Public.LinkedID = "zz" },
		"same id": func(c *KMIPCreateKeyPair) {
			c.Public.ID, c.Private.LinkedID, c.Public.LinkedID = c.Private.ID, c.Private.ID, c.Private.ID
		},
		"public with blob":   func(c *KMIPCreateKeyPair) { c.Public.Wrapped = []byte("x") },
		"private no blob":    func(c *KMIPCreateKeyPair) { c.Private.Wrapped = nil },
		"no spec":            func(c *KMIPCreateKeyPair) { c.Private.KeySpec, c.Public.KeySpec = "", "" },
		"types swapped":      func(c *KMIPCreateKeyPair) { c.Private.ObjectType, c.Public.ObjectType = KMIPPublicKey, KMIPPrivateKey },
		"disagreeing halves": func(c *KMIPCreateKeyPair) { c.Public.PublicKey = []byte("other") },
	} {
		c := testKMIPPair("a", "b", "k1")
		bad(c)
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v, want ErrInvalidCommand", name, err)
		}
	}
	// Pair fields on a symmetric key are refused.
	o := testKMIPObject("s", "k1")
	o.LinkedID = "pv"
	if _, err := EncodeCommand(&KMIPCreateObject{Object: o}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("linked symmetric key: %v", err)
	}
}

// KMIPObjectCount counts every object and those of one owner, as the
// commands that add and delete objects change them, and the same after a
// snapshot is restored (the count is derived, not encoded).
func TestKMIPObjectCount(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &CreateKey{Key: symKey("k1")})
	for i, owner := range []string{"app", "app", "other", "app"} {
		o := testKMIPObject(fmt.Sprintf("obj-%d", i), "k1")
		o.Owner = owner
		a.must(t, &KMIPCreateObject{Object: o})
	}
	pair := testKMIPPair("priv", "pub", "k1")
	pair.Private.Owner, pair.Public.Owner = "other", "other"
	a.must(t, pair)
	a.must(t, &KMIPDeleteObject{ID: "obj-1", FromState: KMIPPreActive})
	check := func(f *FSM, when string) {
		t.Helper()
		for _, tc := range []struct {
			owner        string
			total, owned int
		}{{"app", 5, 2}, {"other", 5, 3}, {"nobody", 5, 0}} {
			if total, owned := f.State().KMIPObjectCount(tc.owner); total != tc.total || owned != tc.owned {
				t.Errorf("%s: KMIPObjectCount(%q) = %d, %d; want %d, %d", when, tc.owner, total, owned, tc.total, tc.owned)
			}
		}
	}
	check(a.f, "after the commands")
	dst := NewFSM(nil, nil)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	check(dst, "after a snapshot restore")
	// The last of an owner's objects deleted leaves no count behind.
	for _, id := range []string{"obj-0", "obj-3"} {
		a.must(t, &KMIPDeleteObject{ID: id, FromState: KMIPPreActive})
	}
	if _, owned := a.f.State().KMIPObjectCount("app"); owned != 0 {
		t.Fatalf("app owns %d objects after all were deleted", owned)
	}
}

// TestKMIPOwnerShare: a command's OwnerShare is applied: an object or pair
// that would make its owner hold more than the share is refused with
// ErrInvalidState, leaving the state as it was, while other owners and
// commands without a share are not held to it; a share below 0 or above
// MaxKMIPObjects does not decode.
func TestKMIPOwnerShare(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &CreateKey{Key: symKey("k1")})
	obj := func(id, owner string) KMIPObject {
		o := testKMIPObject(id, "k1")
		o.Owner = owner
		return o
	}
	a.must(t, &KMIPCreateObject{Object: obj("a1", "app"), OwnerShare: 3})
	a.must(t, &KMIPCreateObject{Object: obj("a2", "app"), OwnerShare: 3})
	// A pair would make 4.
	pair := testKMIPPair("priv", "pub", "k1")
	pair.Private.Owner, pair.Public.Owner = "app", "app"
	pair.OwnerShare = 3
	before := a.f.State().Digest()
	if _, err := a.apply(t, pair); !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), "at most 3") {
		t.Fatalf("a pair past the share: %v", err)
	}
	if a.f.State().Digest() != before {
		t.Fatal("the refused pair changed the state")
	}
	a.must(t, &KMIPCreateObject{Object: obj("a3", "app"), OwnerShare: 3})
	if _, err := a.apply(t, &KMIPCreateObject{Object: obj("a4", "app"), OwnerShare: 3}); !errors.Is(err, ErrInvalidState) ||
		!strings.Contains(err.Error(), "this client owns 3 KMIP objects; one client may own at most 3") {
		t.Fatalf("an object past the share: %v", err)
	}
	if _, ok := a.f.State().KMIPObject("a4"); ok {
		t.Fatal("the refused object was stored")
	}
	// Another owner has its own share; a command without one is not held.
	a.must(t, &KMIPCreateObject{Object: obj("o1", "other"), OwnerShare: 3})
	a.must(t, &KMIPCreateObject{Object: obj("a5", "app")})
	// Room again after a deletion, counted with the object just stored.
	a.must(t, &KMIPDeleteObject{ID: "a1", FromState: KMIPPreActive})
	a.must(t, &KMIPDeleteObject{ID: "a2", FromState: KMIPPreActive})
	a.must(t, &KMIPCreateObject{Object: obj("a6", "app"), OwnerShare: 4})
	if _, owned := a.f.State().KMIPObjectCount("app"); owned != 3 {
		t.Fatalf("app owns %d objects, want 3", owned)
	}

	for _, share := range []int{-1, MaxKMIPObjects + 1} {
		c := &KMIPCreateObject{Object: obj("bad", "app"), OwnerShare: share}
		if _, err := DecodeCommand(rawEntry(t, c)); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("owner share %d: %v, want ErrInvalidCommand", share, err)
		}
		p := testKMIPPair("p1", "p2", "k1")
		p.OwnerShare = share
		if _, err := DecodeCommand(rawEntry(t, p)); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("pair owner share %d: %v, want ErrInvalidCommand", share, err)
		}
	}
	// The halves of a pair have one owner.
	p := testKMIPPair("p1", "p2", "k1")
	p.Private.Owner, p.Public.Owner = "app", "other"
	if _, err := DecodeCommand(rawEntry(t, p)); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("a pair with two owners: %v, want ErrInvalidCommand", err)
	}
}
