package p11

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// writeTokens writes a configuration file of tokens on the fixture's
// broker, one per "label=prefix" (an empty prefix is the whole cluster),
// and points the library at it.
func writeTokens(t *testing.T, f *fixture, toks ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("tokens:\n")
	for _, tk := range toks {
		label, prefix, _ := strings.Cut(tk, "=")
		fmt.Fprintf(&b, "  - label: %s\n    endpoints: [%s]\n    ca: %s\n    cert: %s\n    key: %s\n",
			label, os.Getenv("HSMBROKER_ADDR"), os.Getenv("HSMBROKER_CA"), os.Getenv("HSMBROKER_CERT"), os.Getenv("HSMBROKER_KEY"))
		if prefix != "" {
			fmt.Fprintf(&b, "    key_prefix: %s\n", prefix)
		}
	}
	p := filepath.Join(f.dir, "tokens.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, p)
}

func TestTokensAreSlots(t *testing.T) {
	f := newFixture(t, "")
	writeTokens(t, f, "cluster", "db1=db1/", "db2=db2/")
	m := New(&bytes.Buffer{})
	if rv := m.Initialize(InitArgs{}); rv != CKR_OK {
		t.Fatalf("Initialize: %#x", rv)
	}
	defer m.Finalize()
	slots, rv := m.SlotList()
	if rv != CKR_OK || len(slots) != 3 {
		t.Fatalf("SlotList: %v %#x", slots, rv)
	}
	for i, want := range []string{"cluster", "db1", "db2"} {
		ti, rv := m.GetTokenInfo(slots[i])
		if rv != CKR_OK || ti.Label != want {
			t.Fatalf("slot %d: token %q %#x, want %q", slots[i], ti.Label, rv, want)
		}
	}
	if _, rv := m.GetTokenInfo(3); rv != CKR_SLOT_ID_INVALID {
		t.Fatalf("slot 3: %#x", rv)
	}
	g := &fixture{t: t, m: m}
	open := func(slot uint64) uint64 {
		h, rv := m.OpenSession(slot, CKF_SERIAL_SESSION|CKF_RW_SESSION)
		if rv != CKR_OK {
			t.Fatalf("OpenSession(%d): %#x", slot, rv)
		}
		if si, _ := m.GetSessionInfo(h); si.Slot != slot {
			t.Fatalf("session of slot %d says slot %d", slot, si.Slot)
		}
		return h
	}
	all, s1, s2 := open(0), open(1), open(2)

	// The same label in two tokens makes two keys, each seen in its own.
	gen := func(h uint64) uint64 {
		k, rv := m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("ORACLE.TDE.HSM.MK.01")}, {CKA_VALUE_LEN, ulong(32)}})
		if rv != CKR_OK {
			t.Fatalf("GenerateKey: %#x", rv)
		}
		return k
	}
	k1, k2 := gen(s1), gen(s2)
	if _, rv := m.GenerateKey(s1, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("ORACLE.TDE.HSM.MK.01")}}); rv != CKR_ATTRIBUTE_VALUE_INVALID {
		t.Fatalf("a label twice in one token: %#x", rv)
	}
	if got := g.find(s1, Attribute{CKA_CLASS, ulong(CKO_SECRET_KEY)}); len(got) != 1 || got[0] != k1 {
		t.Fatalf("db1 sees %v, want [%d]", got, k1)
	}
	if got := g.find(s2, Attribute{CKA_CLASS, ulong(CKO_SECRET_KEY)}); len(got) != 1 || got[0] != k2 {
		t.Fatalf("db2 sees %v, want [%d]", got, k2)
	}
	// The whole-cluster token sees both, and keys made elsewhere; the
	// prefixed tokens do not see keys outside their prefix.
	f.createKey("elsewhere", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	f.createKey("db1/by-hsmctl", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	if got := g.find(all, Attribute{CKA_CLASS, ulong(CKO_SECRET_KEY)}); len(got) != 2 {
		t.Fatalf("whole cluster sees %d secret keys, want 2", len(got))
	}
	g.one(all, CKO_PRIVATE_KEY, "elsewhere")
	if got := g.find(s1, Attribute{CKA_LABEL, []byte("elsewhere")}); len(got) != 0 {
		t.Fatalf("db1 sees a key outside its prefix: %v", got)
	}
	priv := g.one(s1, CKO_PRIVATE_KEY, "by-hsmctl")
	if got := g.find(s2, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}); len(got) != 0 {
		t.Fatalf("db2 sees db1's key: %v", got)
	}
	// Handles are per slot: another slot's handle is not a key here.
	if rv := m.EncryptInit(s2, Mechanism{Type: CKM_AES_CBC_PAD, Param: make([]byte, 16)}, k1); rv != CKR_KEY_HANDLE_INVALID {
		t.Fatalf("db1's key through db2: %#x", rv)
	}
	if _, rv := m.GetAttribute(s2, priv, CKA_LABEL); rv != CKR_OBJECT_HANDLE_INVALID {
		t.Fatalf("db1's object read through db2: %#x", rv)
	}
	ct, rv := g.crypt(s1, true, Mechanism{Type: CKM_AES_CBC_PAD, Param: make([]byte, 16)}, k1, []byte("table key"))
	if rv != CKR_OK {
		t.Fatalf("encrypt in db1: %#x", rv)
	}
	if pt, rv := g.crypt(s1, false, Mechanism{Type: CKM_AES_CBC_PAD, Param: make([]byte, 16)}, k1, ct); rv != CKR_OK || string(pt) != "table key" {
		t.Fatalf("decrypt in db1: %#x %q", rv, pt)
	}

	// Data objects: kept under the prefix, shown without it, per token.
	label := []byte("ORACLE.SECURITY.KM.ENCRYPTION.01")
	if _, rv := m.CreateObject(s1, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_LABEL, label}, {CKA_VALUE, []byte("one")}}); rv != CKR_OK {
		t.Fatalf("CreateObject in db1: %#x", rv)
	}
	d := g.one(s1, CKO_DATA, string(label))
	if v, rv := m.GetAttribute(s1, d, CKA_LABEL); rv != CKR_OK || !bytes.Equal(v, label) {
		t.Fatalf("data label in db1: %q %#x", v, rv)
	}
	if got := g.find(s2, Attribute{CKA_CLASS, ulong(CKO_DATA)}); len(got) != 0 {
		t.Fatalf("db2 sees db1's data object: %v", got)
	}
	g.one(all, CKO_DATA, "db1/"+string(label))

	// C_CloseAllSessions closes one slot's sessions only.
	if rv := m.CloseAllSessions(1); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := m.GetSessionInfo(s1); rv != CKR_SESSION_HANDLE_INVALID {
		t.Fatalf("db1 session after CloseAllSessions(1): %#x", rv)
	}
	if _, rv := m.GetSessionInfo(s2); rv != CKR_OK {
		t.Fatalf("db2 session after CloseAllSessions(1): %#x", rv)
	}
}

func TestTokensConfigRefusals(t *testing.T) {
	dir := t.TempDir()
	tok := "endpoints: [127.0.0.1:1]\n    ca: a\n    cert: b\n    key: c\n"
	for name, body := range map[string]string{
		"duplicate label":      "tokens:\n  - label: x\n    " + tok + "  - label: x\n    " + tok,
		"two defaults":         "tokens:\n  - " + tok + "  - " + tok,
		"mixed forms":          "label: x\ntokens:\n  - " + tok,
		"nested prefix":        "tokens:\n  - key_prefix: a/b/\n    " + tok,
		"prefix without slash": "tokens:\n  - key_prefix: db1\n    " + tok,
		"prefix with _":        "tokens:\n  - key_prefix: d_b/\n    " + tok,
		"token lacks key":      "tokens:\n  - label: x\n    endpoints: [127.0.0.1:1]\n    ca: a\n    cert: b\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if cs, err := LoadConfig(func(k string) string {
			if k == EnvConfig {
				return p
			}
			return ""
		}); err == nil {
			t.Errorf("%s: accepted: %+v", name, cs)
		}
	}
	p := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(p, []byte("tokens:\n  - "+tok+"  - label: db1\n    key_prefix: db1/\n    "+tok), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := LoadConfig(func(k string) string {
		if k == EnvConfig {
			return p
		}
		return ""
	})
	if err != nil || len(cs) != 2 || cs[0].TokenLabel != DefaultTokenLabel || cs[1].TokenLabel != "db1" || cs[1].KeyPrefix != "db1/" {
		t.Fatalf("two tokens: %+v %v", cs, err)
	}
}
