package cluster

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
)

func testGrant(id, keyID, grantee string) Grant {
	return Grant{ID: id, KeyID: keyID, Grantee: grantee, Operations: []string{"Decrypt", "Encrypt"},
		ContextSubset: map[string]string{"a": "b"}, Issuer: "admin", CreatedAt: t0}
}

func TestGrantCommands(t *testing.T) {
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
	}{
		{name: "create", cmd: &CreateGrant{Grant: testGrant("g2", "k1", "bob")}},
		{name: "create duplicate id", cmd: &CreateGrant{Grant: testGrant("g1", "k2", "bob")}, wantErr: ErrAlreadyExists},
		{name: "create on missing key", cmd: &CreateGrant{Grant: testGrant("g3", "nope", "bob")}, wantErr: ErrNotFound},
		{name: "create on key pending deletion", cmd: &CreateGrant{Grant: testGrant("g3", "pd", "bob")}, wantErr: ErrInvalidState},
		{name: "create without operations", cmd: &CreateGrant{Grant: func() Grant { g := testGrant("g3", "k1", "bob"); g.Operations = nil; return g }()}, wantErr: ErrInvalidCommand},
		{name: "create unsorted operations", cmd: &CreateGrant{Grant: func() Grant {
			g := testGrant("g3", "k1", "bob")
			g.Operations = []string{"Encrypt", "Decrypt"}
			return g
		}()}, wantErr: ErrInvalidCommand},
		{name: "create wildcard operation", cmd: &CreateGrant{Grant: func() Grant { g := testGrant("g3", "k1", "bob"); g.Operations = []string{"*"}; return g }()}, wantErr: ErrInvalidCommand},
		{name: "create both constraints", cmd: &CreateGrant{Grant: func() Grant {
			g := testGrant("g3", "k1", "bob")
			g.ContextEquals = map[string]string{"x": "y"}
			return g
		}()}, wantErr: ErrInvalidCommand},
		{name: "create without grantee", cmd: &CreateGrant{Grant: testGrant("g3", "k1", "")}, wantErr: ErrInvalidCommand},
		{name: "remove", cmd: &RemoveGrant{GrantID: "g1", KeyID: "k1"}},
		{name: "remove wrong key", cmd: &RemoveGrant{GrantID: "g1", KeyID: "k2"}, wantErr: ErrNotFound},
		{name: "remove missing", cmd: &RemoveGrant{GrantID: "nope"}, wantErr: ErrNotFound},
		{name: "set role", cmd: &SetPrincipalRole{Name: "bob", Role: authz.RoleAuditor, At: t0}},
		{name: "set unknown role", cmd: &SetPrincipalRole{Name: "bob", Role: "root", At: t0}, wantErr: ErrInvalidCommand},
		{name: "delete principal", cmd: &DeletePrincipal{Name: "app"}},
		{name: "delete missing principal", cmd: &DeletePrincipal{Name: "nobody"}, wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &fsmApplier{f: NewFSM(nil, nil)}
			for _, c := range baseSetup() {
				a.must(t, c)
			}
			a.must(t, &CreateGrant{Grant: testGrant("g1", "k1", "app")})
			a.must(t, &SetPrincipalRole{Name: "app", Role: authz.RoleUser, At: t0})
			before := a.f.State().Digest()
			_, err := a.apply(t, tt.cmd)
			wantErrIs(t, err, tt.wantErr)
			if err != nil && a.f.State().Digest() != before {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func TestGrantReads(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for _, c := range baseSetup() {
		a.must(t, c)
	}
	g := testGrant("g2", "k1", "bob")
	g.RetiringPrincipal = "ops"
	for _, c := range []Command{
		&CreateGrant{Grant: testGrant("g1", "k1", "app")},
		&CreateGrant{Grant: g},
		&CreateGrant{Grant: testGrant("g3", "k2", "app")},
	} {
		a.must(t, c)
	}
	s := a.f.State()
	if gs := s.Grants("k1", ""); len(gs) != 2 || gs[0].ID != "g1" || gs[1].ID != "g2" {
		t.Fatalf("grants of k1 = %+v", gs)
	}
	if gs := s.Grants("k1", "app"); len(gs) != 1 || gs[0].ID != "g1" {
		t.Fatalf("app's grants of k1 = %+v", gs)
	}
	if gs := s.RetirableGrants("ops"); len(gs) != 1 || gs[0].ID != "g2" {
		t.Fatalf("retirable by ops = %+v", gs)
	}
	got, ok := s.Grant("g1")
	if !ok {
		t.Fatal("g1 missing")
	}
	got.Operations[0] = "X"
	got.ContextSubset["a"] = "X"
	if again, _ := s.Grant("g1"); again.Operations[0] != "Decrypt" || again.ContextSubset["a"] != "b" {
		t.Fatal("Grant returned shared memory")
	}
}

// TestDeleteKeyDropsGrants: a deleted key's grants go with it, so no grant
// ever names a missing key (snapshots check it).
func TestDeleteKeyDropsGrants(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for _, c := range baseSetup() {
		a.must(t, c)
	}
	a.must(t, &CreateGrant{Grant: testGrant("g1", "k1", "app")})
	a.must(t, &ScheduleDeletion{KeyID: "k1", DeletionDate: t0, PendingWindowDays: 7})
	a.must(t, &DeleteKey{KeyID: "k1", At: t0.Add(time.Hour)})
	if _, ok := a.f.State().Grant("g1"); ok {
		t.Fatal("grant outlived its key")
	}
	b := snapshotBytes(t, a.f)
	if err := NewFSM(nil, nil).Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
}

func TestPrincipals(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	a.must(t, &SetPrincipalRole{Name: "zed", Role: authz.RoleNone, At: t0})
	a.must(t, &SetPrincipalRole{Name: "amy", Role: authz.RoleAdmin, At: t0})
	a.must(t, &SetPrincipalRole{Name: "amy", Role: authz.RoleAuditor, At: t0.Add(time.Second)})
	ps := a.f.State().Principals()
	if len(ps) != 2 || ps[0].Name != "amy" || ps[0].Role != authz.RoleAuditor || ps[1].Role != authz.RoleNone {
		t.Fatalf("principals = %+v", ps)
	}
	if p, ok := a.f.State().Principal("zed"); !ok || p.Role != authz.RoleNone {
		t.Fatalf("zed = %+v %v", p, ok)
	}
}

// TestRestoreRejectsBadGrants: a snapshot whose grants break the invariants
// is refused.
func TestRestoreRejectsBadGrants(t *testing.T) {
	for name, body := range map[string]string{
		"grant on missing key": `{"format":1,"data":{"keys":{},"grants":{"g":{"id":"g","key_id":"k","grantee":"a","operations":["Encrypt"],"created_at":"2026-01-01T00:00:00Z"}}}}`,
		"grant under wrong id": `{"format":1,"data":{"grants":{"g":{"id":"h"}}}}`,
		"unknown role":         `{"format":1,"data":{"principals":{"p":{"name":"p","role":"root"}}}}`,
	} {
		if _, err := readSnapshot(bytes.NewReader([]byte(body))); err == nil {
			t.Errorf("%s: snapshot accepted", name)
		}
	}
}
