package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestTwoTokensTwoSlots: a configuration file with two tokens on one
// cluster, each restricted to its key prefix, is two slots for
// pkcs11-tool; a key made in one is seen only there.
func TestTwoTokensTwoSlots(t *testing.T) {
	requireTool(t, pkcs11Tool, "opensc")
	e := newEnv(t, 1)
	get := func(name string) string {
		for _, v := range e.vars {
			if k, val, _ := strings.Cut(v, "="); k == name {
				return val
			}
		}
		t.Fatalf("%s not in the environment", name)
		return ""
	}
	var b strings.Builder
	b.WriteString("tokens:\n")
	for _, tk := range []string{"db1", "db2"} {
		fmt.Fprintf(&b, "  - label: %s\n    key_prefix: %s/\n    endpoints: [%s]\n    ca: %s\n    cert: %s\n    sealed_key: %s\n",
			tk, tk, get(client.EnvAddr), get(client.EnvCA), get(client.EnvCert), get(p11.EnvSealedKey))
	}
	cfg := e.write("tokens.yaml", []byte(b.String()))
	e.vars = append(e.vars, p11.EnvConfig+"="+cfg)

	out := e.run(pkcs11Tool, "--module", e.lib, "-L")
	if !strings.Contains(out, "Slot 0 (0x0)") || !strings.Contains(out, "Slot 1 (0x1)") || strings.Contains(out, "Slot 2") {
		t.Fatalf("-L does not show two slots:\n%s", out)
	}
	s0, s1, _ := strings.Cut(out, "Slot 1 (0x1)")
	if !strings.Contains(s0, "token label        : db1") || !strings.Contains(s1, "token label        : db2") {
		t.Fatalf("-L labels:\n%s", out)
	}

	label := "ORACLE.TDE.HSM.MK.0DB1"
	out = e.tool("--token-label", "db1", "--keygen", "--key-type", "AES:32", "--sensitive", "--label", label)
	if !strings.Contains(out, "Secret Key Object") {
		t.Fatalf("--keygen in db1:\n%s", out)
	}
	if out := e.tool("--token-label", "db1", "--list-objects", "--type", "secrkey"); !strings.Contains(out, "label:      "+label) {
		t.Fatalf("db1 does not list its key:\n%s", out)
	}
	if out := e.tool("--token-label", "db2", "--list-objects", "--type", "secrkey"); strings.Contains(out, label) {
		t.Fatalf("db2 lists db1's key:\n%s", out)
	}
	// The key works in db1 only.
	plain := e.write("plain.bin", []byte("table key of db1, 32 bytes long!"))
	iv := "00112233445566778899aabbccddeeff"
	e.tool("--token-label", "db1", "--encrypt", "-m", "AES-CBC-PAD", "--iv", iv, "--label", label, "-i", plain, "-o", e.path("ct.bin"))
	e.tool("--token-label", "db1", "--decrypt", "-m", "AES-CBC-PAD", "--iv", iv, "--label", label, "-i", e.path("ct.bin"), "-o", e.path("back.bin"))
	if back, _ := os.ReadFile(e.path("back.bin")); string(back) != "table key of db1, 32 bytes long!" {
		t.Fatalf("round trip in db1 gave %q", back)
	}
	if out, err := e.try(pkcs11Tool, "--module", e.lib, "--login", "--pin", "env:HSMBROKER_PKCS11_PIN", "--token-label", "db2",
		"--encrypt", "-m", "AES-CBC-PAD", "--iv", iv, "--label", label, "-i", plain, "-o", e.path("ct2.bin")); err == nil {
		t.Fatalf("db1's key used through db2:\n%s", out)
	}
	// In the cluster the key is db1's, by its alias.
	if _, err := e.cl.Keys.DescribeKey(t.Context(), &pb.DescribeKeyRequest{KeyId: "alias/db1/ORACLE_2ETDE_2EHSM_2EMK_2E0DB1"}); err != nil {
		t.Fatalf("the key's alias in the cluster: %v", err)
	}
}
