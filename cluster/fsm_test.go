package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/keys"
)

// richFSM returns an FSM holding something of every kind of state.
func richFSM(t testing.TB) *FSM {
	t.Helper()
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for _, c := range baseSetup() {
		a.must(t, c)
	}
	for _, c := range []Command{
		&AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w2"), CreatedAt: t0.Add(time.Hour)}},
		&TagKey{KeyID: "k1", Tags: map[string]string{"team": "payments", "env": "prod"}},
		&PutPolicy{KeyID: "k1", Policy: []byte(`{"Statement":[]}`)},
		&SetRotation{KeyID: "k1", Enabled: true},
		&CreateAlias{Name: "alias/two", KeyID: "k1", At: t0},
		&SetKeyState{KeyID: "k2", State: keys.StateDisabled},
		&UpsertNode{Node: testNode("n1")},
		&UpsertNode{Node: testNode("n2")},
		&UpsertNode{Node: testNode("n3")},
		&RemoveNode{ID: "n3"},
		&AddJoinToken{Hash: tokenHash("tok"), Expires: t0.Add(time.Hour), At: t0},
		&SetDomainKeyID{ID: "dk-0123"},
		&CreateGrant{Grant: testGrant("g1", "k1", "app")},
		&SetPrincipalRole{Name: "app", Role: authz.RoleUser, At: t0},
		&AuditCheckpoint{Node: "n1", Segment: "0a1b", Seq: 7, Head: strings.Repeat("ab", 32), MAC: []byte("mac"), At: t0},
		&KMIPCreateObject{Object: testKMIPObject("o1", "k1")},
	} {
		a.must(t, c)
	}
	for _, c := range tdeSetup() {
		a.must(t, c)
	}
	return a.f
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := richFSM(t)
	b := snapshotBytes(t, src)

	var events []Event
	dst := NewFSM(func(ev Event) { events = append(events, ev) }, nil)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if src.State().Digest() != dst.State().Digest() {
		t.Fatal("digest differs after restore")
	}
	if !reflect.DeepEqual(src.State().Data(), dst.State().Data()) {
		t.Fatalf("state differs after restore:\n%+v\n%+v", src.State().Data(), dst.State().Data())
	}
	si, st := src.State().LastApplied()
	di, dt := dst.State().LastApplied()
	if si != di || st != dt {
		t.Fatalf("applied position %d/%d restored as %d/%d", si, st, di, dt)
	}
	if len(events) != 1 || events[0].Type != TypeRestore {
		t.Fatalf("events = %+v", events)
	}
	// A second snapshot of the restored state is byte-identical.
	if b2 := snapshotBytes(t, dst); !bytes.Equal(b, b2) {
		t.Fatal("snapshot of restored state differs")
	}
}

// The snapshot writer streams entry by entry; what it writes must be the
// JSON encoding/json makes of the same snapshot, field for field (a field
// added to Data but not to writeSnapshot fails here).
func TestSnapshotWriterMatchesEncodingJSON(t *testing.T) {
	for name, f := range map[string]*FSM{"rich": richFSM(t), "empty": NewFSM(nil, nil)} {
		sf := f.capture()
		var streamed bytes.Buffer
		if err := writeSnapshot(&streamed, &sf); err != nil {
			t.Fatal(err)
		}
		whole, err := json.Marshal(&sf)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if err := json.Unmarshal(streamed.Bytes(), &a); err != nil {
			t.Fatalf("%s: the streamed snapshot is not JSON: %v", name, err)
		}
		if err := json.Unmarshal(whole, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: streamed snapshot\n%s\nencoding/json\n%s", name, streamed.Bytes(), whole)
		}
		if _, err := readSnapshot(bytes.NewReader(streamed.Bytes())); err != nil {
			t.Errorf("%s: readSnapshot of the streamed snapshot: %v", name, err)
		}
	}
	// A nil map is written as encoding/json writes it.
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, &snapshotFile{Format: snapshotFormat, Data: &Data{}}); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(&snapshotFile{Format: snapshotFormat, Data: &Data{}})
	var got, wantV any
	_ = json.Unmarshal(want, &wantV)
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || !reflect.DeepEqual(got, wantV) {
		t.Errorf("empty Data: %s, want %s (%v)", buf.Bytes(), want, err)
	}
}

func TestRestoreReplacesEverything(t *testing.T) {
	empty := snapshotBytes(t, NewFSM(nil, nil))
	f := richFSM(t)
	if err := f.Restore(io.NopCloser(bytes.NewReader(empty))); err != nil {
		t.Fatal(err)
	}
	if f.State().Digest() != NewState().Digest() {
		t.Fatal("restore of an empty snapshot left state behind")
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	good := snapshotBytes(t, richFSM(t))
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not json")},
		{"truncated", good[:len(good)/2]},
		{"future format", edit(func(m map[string]any) { m["format"] = 2 })},
		{"no data", edit(func(m map[string]any) { delete(m, "data") })},
		{"unknown field", edit(func(m map[string]any) { m["extra"] = true })},
		{"null key", edit(func(m map[string]any) { data(m)["keys"].(map[string]any)["k1"] = nil })},
		{"key under wrong id", edit(func(m map[string]any) {
			ks := data(m)["keys"].(map[string]any)
			ks["other"] = ks["k1"]
		})},
		{"dangling alias", edit(func(m map[string]any) {
			delete(data(m)["keys"].(map[string]any), "k2")
			data(m)["aliases"].(map[string]any)["alias/x"] = map[string]any{"name": "alias/x", "key_id": "k2"}
		})},
		{"version gap", edit(func(m map[string]any) {
			k := data(m)["keys"].(map[string]any)["k1"].(map[string]any)
			k["versions"].([]any)[1].(map[string]any)["number"] = 3
		})},
		{"two join tokens with one id", edit(func(m map[string]any) {
			h := sameTokenID(tokenHash("tok"))
			data(m)["join_tokens"].(map[string]any)[fmt.Sprintf("%x", h)] = map[string]any{"hash": h, "expires": t0.Add(time.Hour)}
		})},
		{"join token created in year 0", edit(func(m map[string]any) {
			for _, v := range data(m)["join_tokens"].(map[string]any) {
				v.(map[string]any)["created_at"] = "0000-06-01T00:00:00Z"
			}
		})},
		{"join token under wrong hash", edit(func(m map[string]any) {
			ts := data(m)["join_tokens"].(map[string]any)
			for h, v := range ts {
				delete(ts, h)
				ts["00"] = v
			}
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := richFSM(t)
			before := f.State().Digest()
			if err := f.Restore(io.NopCloser(bytes.NewReader(tc.b))); err == nil {
				t.Fatal("bad snapshot restored")
			}
			if f.State().Digest() != before {
				t.Fatal("a failed restore changed the state")
			}
		})
	}
}

func TestApplyBatchMatchesApply(t *testing.T) {
	var entries []*raft.Log
	for i, c := range append(baseSetup(),
		&CreateKey{Key: symKey("k1")}, // fails: exists
		&UpdateDescription{KeyID: "k1", Description: "batched"},
	) {
		entries = append(entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: rawEntry(t, c)})
	}
	entries = append(entries,
		&raft.Log{Index: uint64(len(entries) + 1), Term: 1, Type: raft.LogConfiguration},
		&raft.Log{Index: uint64(len(entries) + 2), Term: 1, Type: raft.LogCommand, Data: []byte{0xff}},
	)

	one := NewFSM(nil, nil)
	var singles []any
	for _, l := range entries {
		singles = append(singles, one.Apply(l))
	}
	var events int
	batch := NewFSM(func(Event) { events++ }, nil)
	resps := batch.ApplyBatch(entries)

	if one.State().Digest() != batch.State().Digest() {
		t.Fatal("batch and single applies disagree")
	}
	if len(resps) != len(entries) {
		t.Fatalf("%d responses for %d entries", len(resps), len(entries))
	}
	for i := range resps {
		_, e1 := singles[i].(error)
		_, e2 := resps[i].(error)
		if e1 != e2 {
			t.Fatalf("entry %d: single %v, batch %v", i, singles[i], resps[i])
		}
	}
	if events != len(baseSetup())+1 {
		t.Fatalf("%d events", events)
	}
}

func TestReadsReturnCopies(t *testing.T) {
	f := richFSM(t)
	s := f.State()
	before := s.Digest()

	k, _ := s.Key("k1")
	k.Tags["team"] = "x"
	k.Versions[0].Wrapped[0] ^= 0xff
	k.Policy[0] = 'X'
	ks := s.Keys()
	ks[0].Description = "x"
	ns := s.Nodes()
	ns[0].Partition.Mechanisms[0] = "x"
	tok, _ := s.JoinToken(tokenHash("tok"))
	tok.Hash[0] ^= 0xff
	d := s.Data()
	d.Keys["k1"].Versions[1].Wrapped[0] ^= 0xff
	delete(d.Aliases, "alias/one")

	if s.Digest() != before {
		t.Fatal("state changed through a value returned by a read")
	}
}

func TestKeysPage(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("key-%02d", i)
		want = append(want, id)
		a.must(t, &CreateKey{Key: symKey(id)})
	}
	s := a.f.State()
	var got []string
	after, pages := "", 0
	for {
		page, next := s.KeysPage(after, 10)
		pages++
		for _, k := range page {
			got = append(got, k.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%d pages: %v", pages, got)
	}
	if page, next := s.KeysPage("", 25); len(page) != 25 || next != "" {
		t.Fatalf("exact page: %d keys, next %q", len(page), next)
	}
	if all := s.Keys(); len(all) != 25 || all[0].ID != "key-00" {
		t.Fatalf("Keys = %d", len(all))
	}
}

// BenchmarkKeysPageFull is the first page of 1,000 of a state of 100,000
// keys, as AWS ListKeys and the preloader ask for it.
func BenchmarkKeysPageFull(b *testing.B) {
	f := NewFSM(nil, nil)
	d := f.State().data
	for i := range 100000 {
		k := symKey(fmt.Sprintf("%08x-key", uint32(i*2654435761)))
		d.Keys[k.ID] = &k
	}
	for b.Loop() {
		if page, _ := f.State().KeysPage("", 1000); len(page) != 1000 {
			b.Fatal(len(page))
		}
	}
}

func TestDueForDeletion(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	day := 24 * time.Hour
	for i, id := range []string{"c", "a", "b"} {
		a.must(t, &CreateKey{Key: symKey(id)})
		a.must(t, &ScheduleDeletion{KeyID: id, DeletionDate: t0.Add(time.Duration(7+i) * day), PendingWindowDays: int32(7 + i)})
	}
	a.must(t, &CreateKey{Key: symKey("live")})
	s := a.f.State()
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{t0, ""},
		{t0.Add(7*day - time.Nanosecond), ""},
		{t0.Add(7 * day), "c"},
		{t0.Add(8 * day), "a,c"},
		{t0.Add(100 * day), "a,b,c"},
	} {
		if got := strings.Join(s.DueForDeletion(tc.now), ","); got != tc.want {
			t.Errorf("DueForDeletion(%v) = %q, want %q", tc.now, got, tc.want)
		}
	}
}

// TestAliasIndexFollowsEveryChange checks the alias-by-key index against a
// scan of every alias after each command that adds, moves or removes an
// alias, and after a snapshot is restored.
func TestAliasIndexFollowsEveryChange(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	check := func(step string) {
		t.Helper()
		s := a.f.State()
		d := s.Data()
		for id := range d.Keys {
			var want []string
			for name, al := range d.Aliases {
				if al.KeyID == id {
					want = append(want, name)
				}
			}
			slices.Sort(want)
			var got []string
			for _, al := range s.Aliases(id) {
				if al.KeyID != id {
					t.Fatalf("%s: Aliases(%q) returned %+v", step, id, al)
				}
				got = append(got, al.Name)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: Aliases(%q) = %q, want %q", step, id, got, want)
			}
		}
	}
	day := 24 * time.Hour
	a.must(t, &CreateKey{Key: symKey("k1"), Alias: "alias/a"})
	a.must(t, &CreateKey{Key: symKey("k2")})
	a.must(t, &CreateKey{Key: symKey("k3"), Alias: "alias/c"})
	check("create")
	a.must(t, &CreateAlias{Name: "alias/b", KeyID: "k1", At: t0})
	a.must(t, &CreateAlias{Name: "alias/d", KeyID: "k2", At: t0})
	check("create alias")
	a.must(t, &UpdateAlias{Name: "alias/a", KeyID: "k2", At: t0})
	a.must(t, &UpdateAlias{Name: "alias/b", KeyID: "k2", At: t0})
	a.must(t, &UpdateAlias{Name: "alias/b", KeyID: "k2", At: t0}) // to where it is
	check("update alias")
	if got := a.f.State().Aliases("k1"); len(got) != 0 {
		t.Fatalf("k1 kept aliases %+v", got)
	}
	a.must(t, &DeleteAlias{Name: "alias/d"})
	check("delete alias")
	a.must(t, &ScheduleDeletion{KeyID: "k2", DeletionDate: t0.Add(7 * day), PendingWindowDays: 7})
	a.must(t, &DeleteKey{KeyID: "k2", At: t0.Add(7 * day)})
	check("delete key")
	if got := a.f.State().Aliases(""); len(got) != 1 || got[0].Name != "alias/c" {
		t.Fatalf("aliases after k2 was deleted: %+v", got)
	}
	// A name freed by the deletion can be used again, for another key.
	a.must(t, &CreateAlias{Name: "alias/a", KeyID: "k3", At: t0})
	check("reuse")

	restored := NewFSM(nil, nil)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	a.f = restored
	check("restore")
	a.must(t, &DeleteAlias{Name: "alias/a"})
	check("delete alias after restore")
}

func TestAliasesSorted(t *testing.T) {
	s := richFSM(t).State()
	all := s.Aliases("")
	for i := 1; i < len(all); i++ {
		if all[i-1].Name >= all[i].Name {
			t.Fatalf("aliases not sorted: %+v", all)
		}
	}
	if len(all) != 6 {
		t.Fatalf("%d aliases", len(all))
	}
	if got := s.Aliases("k1"); len(got) != 2 {
		t.Fatalf("aliases of k1 = %+v", got)
	}
}

// TestDigestCoversEveryField fails when a field is added to a state type
// without being added to Data.Digest.
func TestDigestCoversEveryField(t *testing.T) {
	for typ, n := range map[reflect.Type]int{
		reflect.TypeFor[Data]():          15, // 13 encoded, plus the derived alias index and KMIP owner counts
		reflect.TypeFor[TDEData]():       3,
		reflect.TypeFor[TDEMount]():      3,
		reflect.TypeFor[TDEKey]():        6,
		reflect.TypeFor[TDEVersion]():    4,
		reflect.TypeFor[TDEToken]():      5,
		reflect.TypeFor[AuditHead]():     4,
		reflect.TypeFor[AuditMark]():     4,
		reflect.TypeFor[DataObject]():    8,
		reflect.TypeFor[KMIPObject]():    24, // the 3 key pair fields only when KeySpec is set
		reflect.TypeFor[Key]():           14,
		reflect.TypeFor[KeyVersion]():    4,
		reflect.TypeFor[Alias]():         4,
		reflect.TypeFor[NodeInfo]():      5,
		reflect.TypeFor[PartitionInfo](): 9,
		reflect.TypeFor[JoinToken]():     4,
		reflect.TypeFor[Grant]():         10,
		reflect.TypeFor[Principal]():     3,
	} {
		if typ.NumField() != n {
			t.Errorf("%s has %d fields, Digest encodes %d: update Data.Digest, Clone and checkData", typ, typ.NumField(), n)
		}
	}
}

func TestDigestSeesChanges(t *testing.T) {
	base := richFSM(t).State().Data()
	sum := base.Digest()
	mutations := map[string]func(d *Data){
		"description":      func(d *Data) { d.Keys["k1"].Description += "x" },
		"tag value":        func(d *Data) { d.Keys["k1"].Tags["env"] = "dev" },
		"wrapped blob":     func(d *Data) { d.Keys["k1"].Versions[1].Wrapped[0] ^= 1 },
		"version time":     func(d *Data) { d.Keys["k1"].Versions[0].CreatedAt = t0.Add(time.Nanosecond) },
		"pending window":   func(d *Data) { d.Keys["pd"].PendingWindowDays++ },
		"rotation":         func(d *Data) { d.Keys["k1"].RotationEnabled = false },
		"policy":           func(d *Data) { d.Keys["k1"].Policy = nil },
		"alias target":     func(d *Data) { d.Aliases["alias/one"].KeyID = "k2" },
		"node health":      func(d *Data) { d.Nodes["n1"].Partition.Health = "NOT_SERVING" },
		"node mechanisms":  func(d *Data) { d.Nodes["n1"].Partition.Mechanisms = nil },
		"domain key id":    func(d *Data) { d.DomainKeyID = "" },
		"token expiry":     func(d *Data) { d.JoinTokens[fmt.Sprintf("%x", tokenHash("tok"))].Expires = t0 },
		"token node":       func(d *Data) { d.JoinTokens[fmt.Sprintf("%x", tokenHash("tok"))].NodeID = "node7" },
		"token created":    func(d *Data) { d.JoinTokens[fmt.Sprintf("%x", tokenHash("tok"))].CreatedAt = t0.Add(time.Second) },
		"key moved":        func(d *Data) { d.Keys["zz"] = d.Keys["k2"]; delete(d.Keys, "k2") },
		"domain key other": func(d *Data) { d.DomainKeyID = "dk" },
		"grant operation":  func(d *Data) { d.Grants["g1"].Operations = []string{"Decrypt"} },
		"grant constraint": func(d *Data) { d.Grants["g1"].ContextSubset = map[string]string{"a": "c"} },
		"principal role":   func(d *Data) { d.Principals["app"].Role = authz.RoleAdmin },
		"node removed":     func(d *Data) { d.RemovedNodes["n9"] = true },
		"node readmitted":  func(d *Data) { delete(d.RemovedNodes, "n3") },
	}
	for name, mutate := range mutations {
		d := base.Clone()
		mutate(d)
		if d.Digest() == sum {
			t.Errorf("digest blind to %s", name)
		}
	}
	// Representation details that carry no meaning do not count.
	d := base.Clone()
	d.Keys["k2"].Tags = map[string]string{}
	loc := time.FixedZone("UTC+2", 2*3600)
	d.Keys["k1"].CreatedAt = d.Keys["k1"].CreatedAt.In(loc)
	if d.Digest() != sum {
		t.Error("digest depends on empty-vs-nil maps or time zones")
	}
}

func TestKeyVersionLookup(t *testing.T) {
	k := symKey("k")
	if _, ok := k.Version(0); ok {
		t.Error("version 0 found")
	}
	if _, ok := k.Version(2); ok {
		t.Error("version 2 found")
	}
	if v, ok := k.Version(1); !ok || v.Number != 1 {
		t.Errorf("version 1 = %+v, %v", v, ok)
	}
}
