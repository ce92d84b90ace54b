package cluster

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/keys"
)

// fuzzSeeds are valid entries of every type against the baseSetup state,
// plus near misses, to start the fuzzer deep inside the apply code.
func fuzzSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{nil, {0}, {byte(TypeCreateKey)}, []byte("\x01{}"), []byte("\x01null"), []byte("\x06{\"key_id\":\"pd\",\"at\":\"9999-12-31T23:59:59Z\"}")}
	for _, c := range append(baseSetup(),
		&CreateKey{Key: symKey("new"), Alias: "alias/new"},
		&UpdateDescription{KeyID: "k1", Description: "d"},
		&SetKeyState{KeyID: "k1", State: keys.StateDisabled},
		&ScheduleDeletion{KeyID: "k2", DeletionDate: t0, PendingWindowDays: 7},
		&CancelDeletion{KeyID: "pd"},
		&DeleteKey{KeyID: "pd", At: t0.Add(8 * 24 * time.Hour)},
		&AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0}},
		&SetRotation{KeyID: "k1", Enabled: true},
		&TagKey{KeyID: "k1", Tags: map[string]string{"a": "b"}},
		&UntagKey{KeyID: "k1", TagKeys: []string{"a"}},
		&CreateAlias{Name: "alias/x", KeyID: "k1", At: t0},
		&UpdateAlias{Name: "alias/one", KeyID: "k2", At: t0},
		&DeleteAlias{Name: "alias/one"},
		&PutPolicy{KeyID: "k1", Policy: []byte("{}")},
		&UpsertNode{Node: testNode("n")},
		&RemoveNode{ID: "n"},
		&AddJoinToken{Hash: tokenHash("t"), Expires: t0.Add(time.Hour), At: t0},
		&ConsumeJoinToken{Hash: tokenHash("t"), At: t0},
		&RevokeJoinToken{ID: JoinTokenID(tokenHash("t")), At: t0},
		&KMIPCreateObject{Object: testKMIPObject("o", "k1")}, &KMIPDeleteObject{ID: "o", FromState: KMIPPreActive},
		&SetDomainKeyID{ID: "dk"},
		&CreateGrant{Grant: testGrant("g", "k1", "app")},
		&RemoveGrant{GrantID: "g"},
		&SetPrincipalRole{Name: "app", Role: authz.RoleAuditor, At: t0},
		&DeletePrincipal{Name: "app"},
	) {
		seeds = append(seeds, rawEntry(t, c))
	}
	return seeds
}

// FuzzApply feeds arbitrary entries to the apply path. It calls applyEntry,
// not FSM.Apply, so that the FSM's recover cannot hide a panic. Besides not
// panicking, a rejected entry must leave the state untouched, and an
// accepted one must leave it encodable and consistent.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for _, c := range baseSetup() {
		a.must(f, c)
	}
	base := a.f.State().Data()
	before := base.Digest()

	f.Fuzz(func(t *testing.T, b []byte) {
		d := base.Clone()
		_, _, err := applyEntry(d, b)
		if err != nil {
			if d.Digest() != before {
				t.Fatalf("rejected entry changed the state: %v", err)
			}
			return
		}
		enc, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("state no longer encodes: %v", err)
		}
		if _, err := readSnapshot(bytes.NewReader(append([]byte(`{"format":1,"data":`), append(enc, '}')...))); err != nil {
			t.Fatalf("state no longer consistent: %v", err)
		}
	})
}

// FuzzDecodeCommand checks that decoding never panics and that whatever
// decodes re-encodes to a stable form.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		b1, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		c2, err := DecodeCommand(b1)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		b2, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding not stable:\n%q\n%q", b1, b2)
		}
	})
}
