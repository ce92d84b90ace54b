package cluster

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/keys"
)

// baseSetup is the state most command tests start from: a symmetric key
// "k1" (alias/one), a second symmetric key "k2", an HMAC key "h1", RSA keys
// for encryption ("re") and signing ("rs"), an EC signing key "es" and a
// key "pd" pending deletion until t0+7d (alias/pending).
func baseSetup() []Command {
	return []Command{
		&CreateKey{Key: symKey("k1"), Alias: "alias/one"},
		&CreateKey{Key: symKey("k2")},
		&CreateKey{Key: testKey("h1", keys.SpecHMAC256, keys.UsageGenerateVerifyMAC), Alias: "alias/mac"},
		&CreateKey{Key: testKey("re", keys.SpecRSA2048, keys.UsageEncryptDecrypt), Alias: "alias/rsa-enc"},
		&CreateKey{Key: testKey("rs", keys.SpecRSA3072, keys.UsageSignVerify), Alias: "alias/rsa-sign"},
		&CreateKey{Key: testKey("es", keys.SpecECCNISTP256, keys.UsageSignVerify)},
		&CreateKey{Key: symKey("pd"), Alias: "alias/pending"},
		&ScheduleDeletion{KeyID: "pd", DeletionDate: t0.Add(7 * 24 * time.Hour), PendingWindowDays: 7},
	}
}

func mutateKey(k Key, f func(*Key)) Key {
	k = k.Clone()
	f(&k)
	return k
}

func TestCommandApply(t *testing.T) {
	day := 24 * time.Hour
	due := t0.Add(7 * day)
	tests := []struct {
		name    string
		setup   []Command // applied after baseSetup; must succeed
		cmd     Command
		wantErr error
		check   func(t *testing.T, s *State, res any)
	}{
		// CreateKey
		{name: "create key with alias", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/new"},
			check: func(t *testing.T, s *State, res any) {
				k, ok := s.Key("new")
				if !ok || k.CurrentVersion != 1 || len(k.Versions) != 1 {
					t.Fatalf("key = %+v, %v", k, ok)
				}
				if id, ok := s.ResolveAlias("alias/new"); !ok || id != "new" {
					t.Fatalf("alias/new -> %q, %v", id, ok)
				}
				if a, _ := s.Alias("alias/new"); !a.CreatedAt.Equal(t0) || !a.UpdatedAt.Equal(t0) {
					t.Fatalf("alias times = %v, %v", a.CreatedAt, a.UpdatedAt)
				}
				if r, ok := res.(Key); !ok || r.ID != "new" {
					t.Fatalf("result = %#v", res)
				}
			}},
		{name: "create key without alias", cmd: &CreateKey{Key: symKey("new")},
			check: func(t *testing.T, s *State, _ any) {
				if len(s.Aliases("new")) != 0 {
					t.Fatal("alias created")
				}
			}},
		{name: "create disabled key", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.State = keys.StateDisabled })}},
		{name: "create key with tags and policy", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) {
			k.Tags = map[string]string{"team": "a"}
			k.Policy = []byte(`{"Version":"2012-10-17"}`)
			k.RotationEnabled = true
		})},
			check: func(t *testing.T, s *State, _ any) {
				// The policy is the key's from its first entry, as PutPolicy
				// would have stored it.
				k, _ := s.Key("new")
				if string(k.Policy) != `{"Version":"2012-10-17"}` || k.Tags["team"] != "a" {
					t.Fatalf("policy %q, tags %v", k.Policy, k.Tags)
				}
			}},
		{name: "create asymmetric key", cmd: &CreateKey{Key: testKey("new", keys.SpecECCNISTP384, keys.UsageSignVerify)}},
		{name: "create duplicate key id", cmd: &CreateKey{Key: symKey("k1"), Alias: "alias/other"}, wantErr: ErrAlreadyExists},
		{name: "create key with taken alias is atomic", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/one"}, wantErr: ErrAlreadyExists,
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.Key("new"); ok {
					t.Fatal("key created although its alias was taken")
				}
			}},
		{name: "create key alias without prefix", cmd: &CreateKey{Key: symKey("new"), Alias: "one"}, wantErr: ErrInvalidCommand},
		{name: "create key reserved alias", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/aws/s3"}, wantErr: ErrInvalidCommand},
		{name: "create key alias too long", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/" + strings.Repeat("a", keys.MaxAliasName-len("alias/")+1)}, wantErr: ErrInvalidCommand},
		{name: "create key alias at the limit", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/" + strings.Repeat("a", keys.MaxAliasName-len("alias/"))}},
		{name: "create key alias bad character", cmd: &CreateKey{Key: symKey("new"), Alias: "alias/a b"}, wantErr: ErrInvalidCommand},
		{name: "create key empty id", cmd: &CreateKey{Key: symKey("")}, wantErr: ErrInvalidCommand},
		{name: "create key unknown spec", cmd: &CreateKey{Key: testKey("new", "AES_128", keys.UsageEncryptDecrypt)}, wantErr: ErrInvalidCommand},
		{name: "create key usage not allowed", cmd: &CreateKey{Key: testKey("new", keys.SpecECCNISTP256, keys.UsageEncryptDecrypt)}, wantErr: ErrInvalidCommand},
		{name: "create key hmac for encryption", cmd: &CreateKey{Key: testKey("new", keys.SpecHMAC384, keys.UsageEncryptDecrypt)}, wantErr: ErrInvalidCommand},
		{name: "create key pending deletion", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.State = keys.StatePendingDeletion })}, wantErr: ErrInvalidCommand},
		{name: "create key with deletion date", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.DeletionDate = due })}, wantErr: ErrInvalidCommand},
		{name: "create key without versions", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Versions = nil })}, wantErr: ErrInvalidCommand},
		{name: "create key starting at version 2", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Versions[0].Number = 2; k.CurrentVersion = 2 })}, wantErr: ErrInvalidCommand},
		{name: "create key without wrapped blob", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Versions[0].Wrapped = nil })}, wantErr: ErrInvalidCommand},
		{name: "create asymmetric key without public key", cmd: &CreateKey{Key: mutateKey(testKey("new", keys.SpecRSA4096, keys.UsageSignVerify), func(k *Key) { k.Versions[0].PublicKey = nil })}, wantErr: ErrInvalidCommand},
		{name: "create symmetric key with public key", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Versions[0].PublicKey = []byte("x") })}, wantErr: ErrInvalidCommand},
		{name: "create key without time", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.CreatedAt = time.Time{} })}, wantErr: ErrInvalidCommand},
		{name: "create rsa key with rotation", cmd: &CreateKey{Key: mutateKey(testKey("new", keys.SpecRSA2048, keys.UsageSignVerify), func(k *Key) { k.RotationEnabled = true })}, wantErr: ErrInvalidCommand},
		{name: "create key oversized policy", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Policy = bytes.Repeat([]byte("x"), maxPolicyLen+1) })}, wantErr: ErrInvalidCommand},
		{name: "create key control character in description", cmd: &CreateKey{Key: mutateKey(symKey("new"), func(k *Key) { k.Description = "a\x00b" })}, wantErr: ErrInvalidCommand},

		// UpdateDescription
		{name: "update description", cmd: &UpdateDescription{KeyID: "k1", Description: "new"},
			check: func(t *testing.T, s *State, _ any) {
				if k, _ := s.Key("k1"); k.Description != "new" {
					t.Fatalf("description = %q", k.Description)
				}
			}},
		{name: "update description missing key", cmd: &UpdateDescription{KeyID: "nope"}, wantErr: ErrNotFound},
		{name: "update description pending key", cmd: &UpdateDescription{KeyID: "pd"}, wantErr: ErrInvalidState},

		// SetKeyState
		{name: "disable key", cmd: &SetKeyState{KeyID: "k1", State: keys.StateDisabled},
			check: func(t *testing.T, s *State, _ any) {
				if k, _ := s.Key("k1"); k.State != keys.StateDisabled {
					t.Fatalf("state = %s", k.State)
				}
			}},
		{name: "enable disabled key", setup: []Command{&SetKeyState{KeyID: "k1", State: keys.StateDisabled}},
			cmd: &SetKeyState{KeyID: "k1", State: keys.StateEnabled}},
		{name: "enable enabled key is a no-op", cmd: &SetKeyState{KeyID: "k1", State: keys.StateEnabled}},
		{name: "enable pending key", cmd: &SetKeyState{KeyID: "pd", State: keys.StateEnabled}, wantErr: ErrInvalidState},
		{name: "disable pending key", cmd: &SetKeyState{KeyID: "pd", State: keys.StateDisabled}, wantErr: ErrInvalidState},
		{name: "set state pending via SetKeyState", cmd: &SetKeyState{KeyID: "k1", State: keys.StatePendingDeletion}, wantErr: ErrInvalidCommand},
		{name: "set state unknown", cmd: &SetKeyState{KeyID: "k1", State: "Bogus"}, wantErr: ErrInvalidCommand},
		{name: "set state missing key", cmd: &SetKeyState{KeyID: "nope", State: keys.StateEnabled}, wantErr: ErrNotFound},

		// ScheduleDeletion
		{name: "schedule deletion", cmd: &ScheduleDeletion{KeyID: "k1", DeletionDate: t0.Add(30 * day), PendingWindowDays: 30},
			check: func(t *testing.T, s *State, _ any) {
				k, _ := s.Key("k1")
				if k.State != keys.StatePendingDeletion || !k.DeletionDate.Equal(t0.Add(30*day)) || k.PendingWindowDays != 30 {
					t.Fatalf("key = %+v", k)
				}
			}},
		{name: "schedule deletion of disabled key", setup: []Command{&SetKeyState{KeyID: "k1", State: keys.StateDisabled}},
			cmd: &ScheduleDeletion{KeyID: "k1", DeletionDate: due, PendingWindowDays: 7}},
		{name: "schedule deletion of pending key", cmd: &ScheduleDeletion{KeyID: "pd", DeletionDate: due, PendingWindowDays: 7}, wantErr: ErrInvalidState},
		{name: "schedule deletion window too short", cmd: &ScheduleDeletion{KeyID: "k1", DeletionDate: due, PendingWindowDays: 6}, wantErr: ErrInvalidCommand},
		{name: "schedule deletion window too long", cmd: &ScheduleDeletion{KeyID: "k1", DeletionDate: due, PendingWindowDays: 31}, wantErr: ErrInvalidCommand},
		{name: "schedule deletion without date", cmd: &ScheduleDeletion{KeyID: "k1", PendingWindowDays: 7}, wantErr: ErrInvalidCommand},
		{name: "schedule deletion missing key", cmd: &ScheduleDeletion{KeyID: "nope", DeletionDate: due, PendingWindowDays: 7}, wantErr: ErrNotFound},

		// CancelDeletion
		{name: "cancel deletion leaves key disabled", cmd: &CancelDeletion{KeyID: "pd"},
			check: func(t *testing.T, s *State, _ any) {
				k, _ := s.Key("pd")
				if k.State != keys.StateDisabled || !k.DeletionDate.IsZero() || k.PendingWindowDays != 0 {
					t.Fatalf("key = %+v", k)
				}
				if _, ok := s.ResolveAlias("alias/pending"); !ok {
					t.Fatal("alias lost")
				}
			}},
		{name: "cancel deletion of enabled key", cmd: &CancelDeletion{KeyID: "k1"}, wantErr: ErrInvalidState},
		{name: "cancel deletion missing key", cmd: &CancelDeletion{KeyID: "nope"}, wantErr: ErrNotFound},

		// DeleteKey
		{name: "delete due key and its aliases",
			setup: []Command{&CreateAlias{Name: "alias/pending2", KeyID: "k2", At: t0}, &UpdateAlias{Name: "alias/pending2", KeyID: "k2", At: t0}},
			cmd:   &DeleteKey{KeyID: "pd", At: due},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.Key("pd"); ok {
					t.Fatal("key still there")
				}
				if _, ok := s.ResolveAlias("alias/pending"); ok {
					t.Fatal("alias still there")
				}
				if _, ok := s.ResolveAlias("alias/pending2"); !ok {
					t.Fatal("another key's alias was deleted")
				}
			}},
		{name: "delete key before its date", cmd: &DeleteKey{KeyID: "pd", At: due.Add(-time.Second)}, wantErr: ErrInvalidState},
		{name: "delete key not pending", cmd: &DeleteKey{KeyID: "k1", At: due.Add(365 * day)}, wantErr: ErrInvalidState},
		{name: "delete cancelled key", setup: []Command{&CancelDeletion{KeyID: "pd"}}, cmd: &DeleteKey{KeyID: "pd", At: due}, wantErr: ErrInvalidState},
		{name: "delete missing key", cmd: &DeleteKey{KeyID: "nope", At: due}, wantErr: ErrNotFound},
		{name: "delete key without time", cmd: &DeleteKey{KeyID: "pd"}, wantErr: ErrInvalidCommand},

		// AddVersion
		{name: "add version", cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w2"), CreatedAt: t0}},
			check: func(t *testing.T, s *State, res any) {
				k, _ := s.Key("k1")
				if k.CurrentVersion != 2 || len(k.Versions) != 2 || string(k.Versions[1].Wrapped) != "w2" {
					t.Fatalf("key = %+v", k)
				}
				if v, ok := k.Version(1); !ok || v.Number != 1 {
					t.Fatalf("version 1 = %+v, %v", v, ok)
				}
			}},
		{name: "add version twice", setup: []Command{&AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w2"), CreatedAt: t0}}},
			cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w2b"), CreatedAt: t0}}, wantErr: ErrAlreadyExists},
		{name: "add version with gap", cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 3, Wrapped: []byte("w3"), CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version 1", cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 1, Wrapped: []byte("w"), CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version without blob", cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version with public key to symmetric key", cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), PublicKey: []byte("p"), CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version to rsa key", cmd: &AddVersion{KeyID: "re", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), PublicKey: []byte("p"), CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version to hmac key", cmd: &AddVersion{KeyID: "h1", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}}, wantErr: ErrInvalidCommand},
		{name: "add version to disabled key", setup: []Command{&SetKeyState{KeyID: "k1", State: keys.StateDisabled}},
			cmd: &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}}, wantErr: ErrInvalidState},
		{name: "add version to pending key", cmd: &AddVersion{KeyID: "pd", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}}, wantErr: ErrInvalidState},
		{name: "add version to missing key", cmd: &AddVersion{KeyID: "nope", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}}, wantErr: ErrNotFound},

		// SetRotation
		{name: "enable rotation", cmd: &SetRotation{KeyID: "k1", Enabled: true},
			check: func(t *testing.T, s *State, _ any) {
				if k, _ := s.Key("k1"); !k.RotationEnabled {
					t.Fatal("rotation not enabled")
				}
			}},
		{name: "enable rotation on rsa key", cmd: &SetRotation{KeyID: "re", Enabled: true}, wantErr: ErrInvalidCommand},
		{name: "enable rotation on disabled key", setup: []Command{&SetKeyState{KeyID: "k1", State: keys.StateDisabled}},
			cmd: &SetRotation{KeyID: "k1", Enabled: true}, wantErr: ErrInvalidState},
		{name: "disable rotation on disabled key",
			setup: []Command{&SetRotation{KeyID: "k1", Enabled: true}, &SetKeyState{KeyID: "k1", State: keys.StateDisabled}},
			cmd:   &SetRotation{KeyID: "k1", Enabled: false}},
		{name: "set rotation on pending key", cmd: &SetRotation{KeyID: "pd"}, wantErr: ErrInvalidState},

		// TagKey, UntagKey
		{name: "tag key merges", setup: []Command{&TagKey{KeyID: "k1", Tags: map[string]string{"a": "1", "b": "2"}}},
			cmd: &TagKey{KeyID: "k1", Tags: map[string]string{"b": "3", "c": ""}},
			check: func(t *testing.T, s *State, _ any) {
				k, _ := s.Key("k1")
				if len(k.Tags) != 3 || k.Tags["a"] != "1" || k.Tags["b"] != "3" || k.Tags["c"] != "" {
					t.Fatalf("tags = %v", k.Tags)
				}
			}},
		{name: "tag key too many", setup: []Command{&TagKey{KeyID: "k1", Tags: manyTags("a", maxTags)}},
			cmd: &TagKey{KeyID: "k1", Tags: map[string]string{"extra": "x"}}, wantErr: ErrInvalidCommand},
		{name: "tag key empty tag key", cmd: &TagKey{KeyID: "k1", Tags: map[string]string{"": "x"}}, wantErr: ErrInvalidCommand},
		{name: "tag pending key", cmd: &TagKey{KeyID: "pd", Tags: map[string]string{"a": "1"}}, wantErr: ErrInvalidState},
		{name: "untag key", setup: []Command{&TagKey{KeyID: "k1", Tags: map[string]string{"a": "1", "b": "2"}}},
			cmd: &UntagKey{KeyID: "k1", TagKeys: []string{"a", "b", "absent"}},
			check: func(t *testing.T, s *State, _ any) {
				if k, _ := s.Key("k1"); k.Tags != nil {
					t.Fatalf("tags = %#v, want nil", k.Tags)
				}
			}},
		{name: "untag missing key", cmd: &UntagKey{KeyID: "nope", TagKeys: []string{"a"}}, wantErr: ErrNotFound},

		// CreateAlias
		{name: "create alias", cmd: &CreateAlias{Name: "alias/two", KeyID: "k1", At: t0.Add(time.Hour)},
			check: func(t *testing.T, s *State, res any) {
				as := s.Aliases("k1")
				if len(as) != 2 || as[0].Name != "alias/one" || as[1].Name != "alias/two" {
					t.Fatalf("aliases = %+v", as)
				}
				if a, ok := res.(Alias); !ok || a.Name != "alias/two" {
					t.Fatalf("result = %#v", res)
				}
			}},
		{name: "create alias taken", cmd: &CreateAlias{Name: "alias/one", KeyID: "k2", At: t0}, wantErr: ErrAlreadyExists},
		{name: "create alias missing key", cmd: &CreateAlias{Name: "alias/x", KeyID: "nope", At: t0}, wantErr: ErrNotFound},
		{name: "create alias for pending key", cmd: &CreateAlias{Name: "alias/x", KeyID: "pd", At: t0}, wantErr: ErrInvalidState},
		{name: "create alias reserved", cmd: &CreateAlias{Name: "alias/aws/x", KeyID: "k1", At: t0}, wantErr: ErrInvalidCommand},
		{name: "create alias too long", cmd: &CreateAlias{Name: "alias/" + strings.Repeat("a", 251), KeyID: "k1", At: t0}, wantErr: ErrInvalidCommand},

		// UpdateAlias
		{name: "update alias", cmd: &UpdateAlias{Name: "alias/one", KeyID: "k2", At: t0.Add(time.Hour)},
			check: func(t *testing.T, s *State, _ any) {
				a, _ := s.Alias("alias/one")
				if a.KeyID != "k2" || !a.CreatedAt.Equal(t0) || !a.UpdatedAt.Equal(t0.Add(time.Hour)) {
					t.Fatalf("alias = %+v", a)
				}
			}},
		{name: "update alias rsa sign to ec sign", cmd: &UpdateAlias{Name: "alias/rsa-sign", KeyID: "es", At: t0}},
		{name: "update alias symmetric to hmac", cmd: &UpdateAlias{Name: "alias/one", KeyID: "h1", At: t0}, wantErr: ErrInvalidCommand},
		{name: "update alias rsa encrypt to rsa sign", cmd: &UpdateAlias{Name: "alias/rsa-enc", KeyID: "rs", At: t0}, wantErr: ErrInvalidCommand},
		{name: "update alias symmetric to rsa encrypt", cmd: &UpdateAlias{Name: "alias/one", KeyID: "re", At: t0}, wantErr: ErrInvalidCommand},
		{name: "update alias to pending key", cmd: &UpdateAlias{Name: "alias/one", KeyID: "pd", At: t0}, wantErr: ErrInvalidState},
		{name: "update alias away from pending key", cmd: &UpdateAlias{Name: "alias/pending", KeyID: "k1", At: t0}},
		{name: "update missing alias", cmd: &UpdateAlias{Name: "alias/none", KeyID: "k1", At: t0}, wantErr: ErrNotFound},
		{name: "update alias to missing key", cmd: &UpdateAlias{Name: "alias/one", KeyID: "nope", At: t0}, wantErr: ErrNotFound},

		// DeleteAlias
		{name: "delete alias", cmd: &DeleteAlias{Name: "alias/one"},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.ResolveAlias("alias/one"); ok {
					t.Fatal("alias still there")
				}
				if _, ok := s.Key("k1"); !ok {
					t.Fatal("key deleted with its alias")
				}
			}},
		{name: "delete alias of pending key", cmd: &DeleteAlias{Name: "alias/pending"}},
		{name: "delete missing alias", cmd: &DeleteAlias{Name: "alias/none"}, wantErr: ErrNotFound},

		// PutPolicy
		{name: "put policy", cmd: &PutPolicy{KeyID: "k1", Policy: []byte(`{"a":1}`)},
			check: func(t *testing.T, s *State, _ any) {
				if k, _ := s.Key("k1"); string(k.Policy) != `{"a":1}` {
					t.Fatalf("policy = %q", k.Policy)
				}
			}},
		{name: "put policy on pending key", cmd: &PutPolicy{KeyID: "pd", Policy: []byte(`{}`)}},
		{name: "put policy missing key", cmd: &PutPolicy{KeyID: "nope", Policy: []byte(`{}`)}, wantErr: ErrNotFound},
		{name: "put policy too large", cmd: &PutPolicy{KeyID: "k1", Policy: bytes.Repeat([]byte("x"), maxPolicyLen+1)}, wantErr: ErrInvalidCommand},

		// UpsertNode, RemoveNode
		{name: "upsert node", cmd: &UpsertNode{Node: testNode("n1")},
			check: func(t *testing.T, s *State, _ any) {
				n, ok := s.Node("n1")
				if !ok || n.Partition.Serial != "serial-n1" || len(n.Partition.Mechanisms) != 2 {
					t.Fatalf("node = %+v, %v", n, ok)
				}
			}},
		{name: "upsert node replaces", setup: []Command{&UpsertNode{Node: testNode("n1")}},
			cmd: &UpsertNode{Node: NodeInfo{ID: "n1", RaftAddr: "10.0.0.9:7001", LastSeen: t0.Add(time.Minute)}},
			check: func(t *testing.T, s *State, _ any) {
				if ns := s.Nodes(); len(ns) != 1 || ns[0].RaftAddr != "10.0.0.9:7001" || ns[0].Partition.Serial != "" {
					t.Fatalf("nodes = %+v", ns)
				}
			}},
		{name: "upsert node without id", cmd: &UpsertNode{Node: NodeInfo{RaftAddr: "x"}}, wantErr: ErrInvalidCommand},
		{name: "remove node", setup: []Command{&UpsertNode{Node: testNode("n1")}}, cmd: &RemoveNode{ID: "n1"},
			check: func(t *testing.T, s *State, _ any) {
				if len(s.Nodes()) != 0 {
					t.Fatal("node still there")
				}
				if !s.NodeRemoved("n1") {
					t.Fatal("node not marked removed")
				}
			}},
		{name: "remove node without a record", cmd: &RemoveNode{ID: "n1"},
			check: func(t *testing.T, s *State, _ any) {
				if !s.NodeRemoved("n1") {
					t.Fatal("a member without a record is not marked removed")
				}
			}},
		{name: "removed node is not recorded again", setup: []Command{&UpsertNode{Node: testNode("n1")}, &RemoveNode{ID: "n1"}},
			cmd: &UpsertNode{Node: testNode("n1")}, wantErr: ErrInvalidState},
		{name: "removed node admitted again", setup: []Command{&UpsertNode{Node: testNode("n1")}, &RemoveNode{ID: "n1"}},
			cmd: &UpsertNode{Node: testNode("n1"), Admit: true},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.Node("n1"); !ok || s.NodeRemoved("n1") {
					t.Fatalf("after the admission: record %v, removed %v", ok, s.NodeRemoved("n1"))
				}
			}},

		// AddJoinToken, ConsumeJoinToken
		{name: "add join token prunes expired ones",
			setup: []Command{&AddJoinToken{Hash: tokenHash("old"), Expires: t0.Add(time.Minute), At: t0}},
			cmd:   &AddJoinToken{Hash: tokenHash("new"), Expires: t0.Add(time.Hour), At: t0.Add(time.Minute)},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.JoinToken(tokenHash("old")); ok {
					t.Fatal("expired token kept")
				}
				if _, ok := s.JoinToken(tokenHash("new")); !ok {
					t.Fatal("new token missing")
				}
			}},
		{name: "add join token twice", setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd: &AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(2 * time.Hour), At: t0}, wantErr: ErrAlreadyExists},
		{name: "add join token bad hash", cmd: &AddJoinToken{Hash: []byte("short"), Expires: t0.Add(time.Hour), At: t0}, wantErr: ErrInvalidCommand},
		{name: "add join token already expired", cmd: &AddJoinToken{Hash: tokenHash("a"), Expires: t0, At: t0}, wantErr: ErrInvalidCommand},
		{name: "consume join token", setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd: &ConsumeJoinToken{Hash: tokenHash("a"), At: t0.Add(59 * time.Minute)},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.JoinToken(tokenHash("a")); ok {
					t.Fatal("token not consumed")
				}
			}},
		{name: "consume join token twice",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}, &ConsumeJoinToken{Hash: tokenHash("a"), At: t0}},
			cmd:   &ConsumeJoinToken{Hash: tokenHash("a"), At: t0}, wantErr: ErrNotFound},
		{name: "consume expired join token", setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd: &ConsumeJoinToken{Hash: tokenHash("a"), At: t0.Add(time.Hour)}, wantErr: ErrInvalidState},
		{name: "consume unknown join token", cmd: &ConsumeJoinToken{Hash: tokenHash("x"), At: t0}, wantErr: ErrNotFound},
		{name: "consume a join token made for another node",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0, NodeID: "node7"}},
			cmd:   &ConsumeJoinToken{Hash: tokenHash("a"), At: t0, NodeID: "node9"}, wantErr: ErrInvalidState,
			check: func(t *testing.T, s *State, _ any) {
				if tok, ok := s.JoinToken(tokenHash("a")); !ok || tok.NodeID != "node7" {
					t.Fatalf("the token after a refused use: %+v, %v", tok, ok)
				}
			}},
		{name: "consume a join token made for this node",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0, NodeID: "node7"}},
			cmd:   &ConsumeJoinToken{Hash: tokenHash("a"), At: t0, NodeID: "node7"},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.JoinToken(tokenHash("a")); ok {
					t.Fatal("token not consumed")
				}
			}},
		{name: "a join token for a node id that is not text", cmd: &AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0, NodeID: "a\x00b"},
			wantErr: ErrInvalidCommand},
		{name: "add join token records its time and id",
			cmd: &AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0, NodeID: "node7"},
			check: func(t *testing.T, s *State, _ any) {
				ts := s.JoinTokens()
				if len(ts) != 1 || !ts[0].CreatedAt.Equal(t0) || ts[0].ID() != fmt.Sprintf("%x", tokenHash("a")[:8]) || ts[0].NodeID != "node7" {
					t.Fatalf("tokens = %+v", ts)
				}
			}},
		{name: "add join token whose id a live token has",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd:   &AddJoinToken{Hash: sameTokenID(tokenHash("a")), Expires: t0.Add(time.Hour), At: t0}, wantErr: ErrAlreadyExists},
		{name: "add join token whose id an expired token had",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Minute), At: t0}},
			cmd:   &AddJoinToken{Hash: sameTokenID(tokenHash("a")), Expires: t0.Add(time.Hour), At: t0.Add(time.Minute)},
			check: func(t *testing.T, s *State, _ any) {
				if ts := s.JoinTokens(); len(ts) != 1 || !bytes.Equal(ts[0].Hash, sameTokenID(tokenHash("a"))) {
					t.Fatalf("tokens = %+v", ts)
				}
			}},

		// RevokeJoinToken
		{name: "revoke join token",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}, &AddJoinToken{Hash: tokenHash("b"), Expires: t0.Add(time.Hour), At: t0}},
			cmd:   &RevokeJoinToken{ID: JoinTokenID(tokenHash("a")), At: t0.Add(59 * time.Minute)},
			check: func(t *testing.T, s *State, _ any) {
				if _, ok := s.JoinToken(tokenHash("a")); ok {
					t.Fatal("revoked token kept")
				}
				if _, ok := s.JoinToken(tokenHash("b")); !ok {
					t.Fatal("the other token went too")
				}
			}},
		{name: "revoke unknown join token", setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd: &RevokeJoinToken{ID: JoinTokenID(tokenHash("x")), At: t0}, wantErr: ErrNotFound},
		{name: "revoke a used join token",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}, &ConsumeJoinToken{Hash: tokenHash("a"), At: t0}},
			cmd:   &RevokeJoinToken{ID: JoinTokenID(tokenHash("a")), At: t0}, wantErr: ErrNotFound},
		{name: "revoke an expired join token", setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}},
			cmd: &RevokeJoinToken{ID: JoinTokenID(tokenHash("a")), At: t0.Add(time.Hour)}, wantErr: ErrNotFound},
		{name: "revoke join token twice",
			setup: []Command{&AddJoinToken{Hash: tokenHash("a"), Expires: t0.Add(time.Hour), At: t0}, &RevokeJoinToken{ID: JoinTokenID(tokenHash("a")), At: t0}},
			cmd:   &RevokeJoinToken{ID: JoinTokenID(tokenHash("a")), At: t0}, wantErr: ErrNotFound},
		{name: "revoke join token by a short id", cmd: &RevokeJoinToken{ID: "0123abcd", At: t0}, wantErr: ErrInvalidCommand},
		{name: "revoke join token by an upper-case id", cmd: &RevokeJoinToken{ID: "0123456789ABCDEF", At: t0}, wantErr: ErrInvalidCommand},
		{name: "revoke join token by its full hash", cmd: &RevokeJoinToken{ID: fmt.Sprintf("%x", tokenHash("a")), At: t0}, wantErr: ErrInvalidCommand},
		{name: "revoke join token without a time", cmd: &RevokeJoinToken{ID: JoinTokenID(tokenHash("a"))}, wantErr: ErrInvalidCommand},

		// SetDomainKeyID
		{name: "set domain key id", cmd: &SetDomainKeyID{ID: "dk-1"},
			check: func(t *testing.T, s *State, _ any) {
				if s.DomainKeyID() != "dk-1" {
					t.Fatalf("domain key id = %q", s.DomainKeyID())
				}
			}},
		{name: "set domain key id twice", setup: []Command{&SetDomainKeyID{ID: "dk-1"}}, cmd: &SetDomainKeyID{ID: "dk-1"}, wantErr: ErrAlreadyExists},
		{name: "set empty domain key id", cmd: &SetDomainKeyID{}, wantErr: ErrInvalidCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var events []Event
			f := NewFSM(func(ev Event) { events = append(events, ev) }, nil)
			a := &fsmApplier{f: f}
			for _, c := range append(baseSetup(), tc.setup...) {
				a.must(t, c)
			}
			before, nEvents := f.State().Digest(), len(events)
			res, err := a.apply(t, tc.cmd)
			wantErrIs(t, err, tc.wantErr)
			if tc.wantErr != nil {
				if f.State().Digest() != before {
					t.Fatal("a failed command changed the state")
				}
				if len(events) != nEvents {
					t.Fatal("a failed command produced an event")
				}
				if !strings.HasPrefix(err.Error(), "cluster: ") {
					t.Fatalf("error %q lacks the package prefix", err)
				}
			} else {
				if len(events) != nEvents+1 || events[nEvents].Type != tc.cmd.Type() {
					t.Fatalf("events = %+v, want one %s", events[nEvents:], tc.cmd.Type())
				}
				// What the FSM accepts, the proposer's encoder accepts too.
				if _, err := EncodeCommand(tc.cmd); err != nil {
					t.Fatalf("EncodeCommand: %v", err)
				}
			}
			if idx, _ := f.State().LastApplied(); idx != a.index {
				t.Fatalf("last applied = %d, want %d", idx, a.index)
			}
			if tc.check != nil {
				tc.check(t, f.State(), res)
			}
		})
	}
}

func manyTags(prefix string, n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[prefix+strings.Repeat("x", i)] = "v"
	}
	return m
}

func testNode(id string) NodeInfo {
	return NodeInfo{
		ID: id, RaftAddr: "10.0.0.1:7001", GRPCAddr: "10.0.0.1:7000",
		Partition: PartitionInfo{
			Model: "SoftHSM", Manufacturer: "SoftHSM project", Serial: "serial-" + id,
			TokenLabel: "hsmbroker", Library: "/usr/lib/softhsm/libsofthsm2.so", Firmware: "2.6",
			Mechanisms: []string{"CKM_AES_GCM", "CKM_AES_KEY_WRAP_PAD"}, DomainKeyPresent: true, Health: "SERVING",
		},
		LastSeen: t0,
	}
}

func TestEventCarriesKeyAndVersion(t *testing.T) {
	var events []Event
	a := &fsmApplier{f: NewFSM(func(ev Event) { events = append(events, ev) }, nil)}
	a.must(t, &CreateKey{Key: symKey("k"), Alias: "alias/k"})
	a.must(t, &AddVersion{KeyID: "k", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}})
	a.must(t, &ScheduleDeletion{KeyID: "k", DeletionDate: t0, PendingWindowDays: 7})
	a.must(t, &DeleteKey{KeyID: "k", At: t0})
	want := []Event{
		{Type: TypeCreateKey, KeyID: "k", Version: 1},
		{Type: TypeAddVersion, KeyID: "k", Version: 2},
		{Type: TypeScheduleDeletion, KeyID: "k"},
		{Type: TypeDeleteKey, KeyID: "k"},
	}
	if len(events) != len(want) {
		t.Fatalf("events = %+v", events)
	}
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("event %d = %+v, want %+v", i, events[i], want[i])
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	cmds := append(baseSetup(),
		&UpdateDescription{KeyID: "k", Description: "d"},
		&SetKeyState{KeyID: "k", State: keys.StateDisabled},
		&CancelDeletion{KeyID: "k"},
		&DeleteKey{KeyID: "k", At: t0},
		&AddVersion{KeyID: "k", Version: KeyVersion{Number: 2, Wrapped: []byte{0, 1, 2}, CreatedAt: t0}},
		&SetRotation{KeyID: "k", Enabled: true},
		&TagKey{KeyID: "k", Tags: map[string]string{"a": "b"}},
		&UntagKey{KeyID: "k", TagKeys: []string{"a"}},
		&CreateAlias{Name: "alias/a", KeyID: "k", At: t0},
		&UpdateAlias{Name: "alias/a", KeyID: "k", At: t0},
		&DeleteAlias{Name: "alias/a"},
		&PutPolicy{KeyID: "k", Policy: []byte("{}")},
		&UpsertNode{Node: testNode("n")},
		&RemoveNode{ID: "n"},
		&AddJoinToken{Hash: tokenHash("t"), Expires: t0.Add(time.Hour), At: t0},
		&ConsumeJoinToken{Hash: tokenHash("t"), At: t0},
		&RevokeJoinToken{ID: JoinTokenID(tokenHash("t")), At: t0},
		&SetDomainKeyID{ID: "dk"},
		&CreateGrant{Grant: testGrant("g", "k", "app")},
		&RemoveGrant{GrantID: "g", KeyID: "k"},
		&SetPrincipalRole{Name: "app", Role: authz.RoleUser, At: t0},
		&DeletePrincipal{Name: "app"},
		&RetireTDEVersion{Mount: "tde", Name: "1", Version: 1, At: t0},
		&RevokeTDEToken{Accessor: "acc1"},
		checkpoint("n", "ab", 1),
		&CreateDataObject{Object: testDataObject("0123456789abcdef0123456789abcdef")},
		&DeleteDataObject{ID: "0123456789abcdef0123456789abcdef"},
		&KMIPCreateObject{Object: testKMIPObject("o", "k")},
		&KMIPUpdateObject{FromState: KMIPPreActive, Object: testKMIPObject("o", "k")},
		&KMIPDeleteObject{ID: "o", FromState: KMIPDeactivated},
		testKMIPPair("pv", "pb", "k"),
	)
	cmds = append(cmds, tdeSetup()...)
	seen := map[CommandType]bool{}
	for _, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %s: %v", c.Type(), err)
		}
		if CommandType(b[0]) != c.Type() {
			t.Fatalf("type byte %d for %s", b[0], c.Type())
		}
		d, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %s: %v", c.Type(), err)
		}
		b2, err := EncodeCommand(d)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("%s does not round-trip:\n%s\n%s (%v)", c.Type(), b, b2, err)
		}
		seen[c.Type()] = true
	}
	for i, e := range commandTable {
		if e.new != nil && !seen[CommandType(i)] {
			t.Errorf("command type %s not covered", CommandType(i))
		}
		if e.new != nil && e.new().Type() != CommandType(i) {
			t.Errorf("dispatch table entry %d makes a %s", i, e.new().Type())
		}
	}
}

func TestEncodeRefusesInvalidCommands(t *testing.T) {
	for _, c := range []Command{nil, (*CreateKey)(nil), &CreateKey{}, &SetDomainKeyID{}, &ScheduleDeletion{KeyID: "k"},
		&DeleteKey{KeyID: "k", At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}} {
		if _, err := EncodeCommand(c); !errorsIs(err, ErrInvalidCommand) {
			t.Errorf("EncodeCommand(%#v) = %v, want ErrInvalidCommand", c, err)
		}
	}
}

func TestBadEntries(t *testing.T) {
	good := rawEntry(t, &SetDomainKeyID{ID: "dk"})
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"type zero", append([]byte{0}, good[1:]...)},
		{"unknown type", append([]byte{200}, good[1:]...)},
		{"type 255", append([]byte{255}, good[1:]...)},
		{"type byte only", good[:1]},
		{"truncated JSON", good[:len(good)-3]},
		{"garbage", []byte("\x13\xff\xfe garbage")},
		{"trailing data", append(append([]byte{}, good...), []byte(`{"id":"x"}`)...)},
		{"unknown field", append([]byte{byte(TypeSetDomainKeyID)}, []byte(`{"id":"dk","extra":1}`)...)},
		{"array body", append([]byte{byte(TypeSetDomainKeyID)}, []byte(`["dk"]`)...)},
		{"null body", append([]byte{byte(TypeSetDomainKeyID)}, []byte(`null`)...)},
		{"wrong field type", append([]byte{byte(TypeCreateKey)}, []byte(`{"key":{"versions":"x"}}`)...)},
		{"huge version number", append([]byte{byte(TypeAddVersion)}, []byte(`{"key_id":"k","version":{"number":99999999999}}`)...)},
		{"bad time", append([]byte{byte(TypeDeleteKey)}, []byte(`{"key_id":"k","at":"yesterday"}`)...)},
		{"year zero in UTC", append([]byte{byte(TypeDeleteKey)}, []byte(`{"key_id":"k","at":"0001-01-01T00:00:00+01:00"}`)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &fsmApplier{f: NewFSM(nil, nil)}
			for _, c := range baseSetup() {
				a.must(t, c)
			}
			before := a.f.State().Digest()
			_, err := applyRaw(a.f, 100, tc.b)
			wantErrIs(t, err, ErrInvalidCommand)
			if a.f.State().Digest() != before {
				t.Fatal("state changed")
			}
			if idx, _ := a.f.State().LastApplied(); idx != 100 {
				t.Fatalf("last applied = %d; a rejected entry still advances the log", idx)
			}
			if _, err := DecodeCommand(tc.b); !errorsIs(err, ErrInvalidCommand) {
				t.Fatalf("DecodeCommand: %v", err)
			}
		})
	}
}

func TestCommandTypeString(t *testing.T) {
	if s := TypeCreateKey.String(); s != "CreateKey" {
		t.Errorf("TypeCreateKey = %q", s)
	}
	if s := TypeRestore.String(); s != "Restore" {
		t.Errorf("TypeRestore = %q", s)
	}
	if s := CommandType(250).String(); s != "CommandType(250)" {
		t.Errorf("CommandType(250) = %q", s)
	}
}

// TestAliasRulesAreTheKeyModels: a command accepts exactly the alias names
// keys accepts, so a name the broker let through is never refused
// at apply, and none it refused can be replicated.
func TestAliasRulesAreTheKeyModels(t *testing.T) {
	names := []string{"alias/ok", "alias/a/b_c-D9", "alias/", "alias", "ok", "alias/aws/x", "alias/awsx", "alias/a b", "alias/é",
		"alias/a\x00", "alias/" + strings.Repeat("x", 250), "alias/" + strings.Repeat("x", 251)}
	for _, name := range names {
		want := keys.ValidateAliasName(name) == nil
		got := (&CreateAlias{Name: name, KeyID: "k1", At: t0}).validate() == nil
		if got != want {
			t.Errorf("alias %q: command accepts %v, keys accepts %v", name, got, want)
		}
	}
}

// The removed node ids are bounded: past MaxRemovedNodes the lowest is
// forgotten, and the newest is kept.
func TestRemovedNodesBounded(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for i := range MaxRemovedNodes + 1 {
		a.must(t, &RemoveNode{ID: fmt.Sprintf("n%05d", i)})
	}
	s := a.f.State()
	if len(s.Data().RemovedNodes) != MaxRemovedNodes {
		t.Fatalf("%d removed ids kept, want %d", len(s.Data().RemovedNodes), MaxRemovedNodes)
	}
	if s.NodeRemoved("n00000") || !s.NodeRemoved("n00001") || !s.NodeRemoved(fmt.Sprintf("n%05d", MaxRemovedNodes)) {
		t.Fatal("the lowest id should be forgotten, the others kept")
	}
}
