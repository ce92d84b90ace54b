package cluster

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func tdeVersion(n uint32) TDEVersion {
	return TDEVersion{Number: n, Wrapped: []byte(fmt.Sprintf("blob-%d", n)), CreatedAt: t0.Add(time.Duration(n) * time.Minute)}
}

func tdeKey(mount, name string) TDEKey {
	return TDEKey{Mount: mount, Name: name, Bytes: 32, Creator: "admin", CreatedAt: t0, Versions: []TDEVersion{tdeVersion(1)}}
}

// tdeSetup makes mount "tde" on key k1 with TDE keys 1 (two versions) and
// 2, and one token. It runs after baseSetup.
func tdeSetup() []Command {
	return []Command{
		&CreateTDEKey{Key: tdeKey("tde", "1"), KMSKeyID: "k1"},
		&AddTDEVersion{Mount: "tde", Name: "1", Version: tdeVersion(2)},
		&CreateTDEKey{Key: tdeKey("tde", "2"), KMSKeyID: "k1"},
		&IssueTDEToken{Token: TDEToken{Accessor: "acc1", Hash: tokenHash("tde-token"), Principal: "db", Creator: "admin", CreatedAt: t0}},
	}
}

func TestTDECommands(t *testing.T) {
	a := &fsmApplier{f: NewFSM(nil, nil)}
	for _, c := range append(baseSetup(), tdeSetup()...) {
		a.must(t, c)
	}
	st := a.f.State()
	k, ok := st.TDEKey("tde", "1")
	if !ok || k.Current() != 2 || !bytes.Equal(k.Versions[1].Wrapped, []byte("blob-2")) {
		t.Fatalf("TDE key 1 = %+v, %v", k, ok)
	}
	if m, ok := st.TDEMount("tde"); !ok || m.KMSKeyID != "k1" {
		t.Fatalf("mount = %+v, %v", m, ok)
	}
	tok, ok := st.TDEToken(tokenHash("tde-token"))
	if !ok || tok.Principal != "db" || tok.Accessor != "acc1" {
		t.Fatalf("token = %+v, %v", tok, ok)
	}
	if ts := st.TDETokens(); len(ts) != 1 || ts[0].Hash != nil {
		t.Fatalf("token list = %+v (must carry no hash)", ts)
	}

	for _, tc := range []struct {
		name string
		c    Command
		want error
	}{
		{"key exists", &CreateTDEKey{Key: tdeKey("tde", "1"), KMSKeyID: "k1"}, ErrAlreadyExists},
		{"mount bound elsewhere", &CreateTDEKey{Key: tdeKey("tde", "3"), KMSKeyID: "k2"}, ErrInvalidState},
		{"missing KMS key", &CreateTDEKey{Key: tdeKey("other", "1"), KMSKeyID: "nope"}, ErrNotFound},
		{"version taken", &AddTDEVersion{Mount: "tde", Name: "1", Version: tdeVersion(2)}, ErrAlreadyExists},
		{"version gap", &AddTDEVersion{Mount: "tde", Name: "1", Version: tdeVersion(4)}, ErrInvalidCommand},
		{"missing key", &AddTDEVersion{Mount: "tde", Name: "9", Version: tdeVersion(2)}, ErrNotFound},
		{"retire latest", &RetireTDEVersion{Mount: "tde", Name: "1", Version: 2, At: t0}, ErrInvalidState},
		{"retire beyond", &RetireTDEVersion{Mount: "tde", Name: "1", Version: 3, At: t0}, ErrNotFound},
		{"same token", &IssueTDEToken{Token: TDEToken{Accessor: "acc2", Hash: tokenHash("tde-token"), Principal: "x", CreatedAt: t0}}, ErrAlreadyExists},
		{"same accessor", &IssueTDEToken{Token: TDEToken{Accessor: "acc1", Hash: tokenHash("other"), Principal: "x", CreatedAt: t0}}, ErrAlreadyExists},
		{"revoke unknown", &RevokeTDEToken{Accessor: "zzz"}, ErrNotFound},
	} {
		before := st.Digest()
		_, err := a.apply(t, tc.c)
		if !errorsIs(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
		if st.Digest() != before {
			t.Errorf("%s: a refused command changed the state", tc.name)
		}
	}

	a.must(t, &RetireTDEVersion{Mount: "tde", Name: "1", Version: 1, At: t0.Add(time.Hour)})
	if k, _ := st.TDEKey("tde", "1"); k.Versions[0].RetiredAt.IsZero() {
		t.Error("version 1 not retired")
	}
	if _, err := a.apply(t, &RetireTDEVersion{Mount: "tde", Name: "1", Version: 1, At: t0}); !errorsIs(err, ErrInvalidState) {
		t.Errorf("retire twice: %v", err)
	}
	a.must(t, &RevokeTDEToken{Accessor: "acc1"})
	if _, ok := st.TDEToken(tokenHash("tde-token")); ok {
		t.Error("revoked token still found")
	}
}

func TestTDEValidation(t *testing.T) {
	long := strings.Repeat("a", MaxTDENameLen+1)
	for name, c := range map[string]Command{
		"empty mount":    &CreateTDEKey{Key: tdeKey("", "1"), KMSKeyID: "k1"},
		"mount slash":    &CreateTDEKey{Key: tdeKey("a/b", "1"), KMSKeyID: "k1"},
		"mount upper":    &CreateTDEKey{Key: tdeKey("TDE", "1"), KMSKeyID: "k1"},
		"long name":      &CreateTDEKey{Key: tdeKey("tde", long), KMSKeyID: "k1"},
		"dot name":       &CreateTDEKey{Key: tdeKey("tde", ".."), KMSKeyID: "k1"},
		"name slash":     &CreateTDEKey{Key: tdeKey("tde", "1/2"), KMSKeyID: "k1"},
		"size":           &CreateTDEKey{Key: func() TDEKey { k := tdeKey("tde", "1"); k.Bytes = 20; return k }(), KMSKeyID: "k1"},
		"no KMS key":     &CreateTDEKey{Key: tdeKey("tde", "1")},
		"two versions":   &CreateTDEKey{Key: func() TDEKey { k := tdeKey("tde", "1"); k.Versions = append(k.Versions, tdeVersion(2)); return k }(), KMSKeyID: "k1"},
		"empty blob":     &AddTDEVersion{Mount: "tde", Name: "1", Version: TDEVersion{Number: 2, CreatedAt: t0}},
		"huge blob":      &AddTDEVersion{Mount: "tde", Name: "1", Version: TDEVersion{Number: 2, Wrapped: make([]byte, maxTDEWrappedLen+1), CreatedAt: t0}},
		"too many":       &AddTDEVersion{Mount: "tde", Name: "1", Version: tdeVersion(MaxTDEVersions + 1)},
		"short hash":     &IssueTDEToken{Token: TDEToken{Accessor: "a", Hash: []byte("x"), Principal: "p", CreatedAt: t0}},
		"no principal":   &IssueTDEToken{Token: TDEToken{Accessor: "a", Hash: tokenHash("x"), CreatedAt: t0}},
		"bad accessor":   &RevokeTDEToken{Accessor: "A B"},
		"retire zero":    &RetireTDEVersion{Mount: "tde", Name: "1", At: t0},
		"retired at new": &AddTDEVersion{Mount: "tde", Name: "1", Version: TDEVersion{Number: 2, Wrapped: []byte("w"), CreatedAt: t0, RetiredAt: t0}},
	} {
		if _, err := EncodeCommand(c); !errorsIs(err, ErrInvalidCommand) {
			t.Errorf("%s: EncodeCommand error %v, want ErrInvalidCommand", name, err)
		}
	}
}

func TestTDEDigestAndSnapshot(t *testing.T) {
	f := richFSM(t)
	base := f.State().Data()
	sum := base.Digest()
	for name, mutate := range map[string]func(d *Data){
		"wrapped":   func(d *Data) { d.TDE.Keys["tde/1"].Versions[0].Wrapped[0] ^= 1 },
		"retired":   func(d *Data) { d.TDE.Keys["tde/1"].Versions[0].RetiredAt = t0 },
		"principal": func(d *Data) { d.TDE.Tokens[fmt.Sprintf("%x", tokenHash("tde-token"))].Principal = "x" },
		"mount key": func(d *Data) { d.TDE.Mounts["tde"].KMSKeyID = "k2" },
	} {
		d := base.Clone()
		mutate(d)
		if d.Digest() == sum {
			t.Errorf("digest blind to %s", name)
		}
	}
	dst := NewFSM(nil, nil)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if dst.State().Digest() != sum {
		t.Fatal("restored TDE state differs")
	}
	if k, ok := dst.State().TDEKey("tde", "1"); !ok || k.Current() != 2 {
		t.Fatalf("restored TDE key = %+v, %v", k, ok)
	}
}
