package kmip

import (
	"encoding/json"
	"os/exec"
	"reflect"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// runPyKMIP runs one scenario of testdata/pykmip_client.py as principal
// with role against e and returns what it printed.
func (e *env) runPyKMIP(t *testing.T, principal string, role authz.Role, scenario, version string) map[string]any {
	t.Helper()
	py := hsmtest.RequirePyKMIP(t)
	ca, cert, key := e.c.TLSFiles(principal, role)
	cmd := exec.Command(py, "testdata/pykmip_client.py", e.host, itoa(e.port), cert, key, ca, scenario, version)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("PyKMIP %s %s: %v\n%s\n%s", scenario, version, err, out, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("PyKMIP output %q: %v", out, err)
	}
	return m
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func expect(t *testing.T, got map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(got[k])
		var wv, gv any
		_ = json.Unmarshal(wj, &wv)
		_ = json.Unmarshal(gj, &gv)
		if !reflect.DeepEqual(wv, gv) {
			t.Errorf("%s = %s, want %s", k, gj, wj)
		}
	}
}

// Every operation PyKMIP's ProxyKmipClient offers, at 1.2, 1.4 and 2.0.
func TestPyKMIPOperations(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run(v, func(t *testing.T) {
			got := e.runPyKMIP(t, "app-"+v, authz.RoleUser, "ops", v)
			expect(t, got, map[string]any{
				"create_sizes":   map[string]int{"128": 16, "192": 24, "256": 32},
				"get_matches":    true,
				"secret_matches": true,
				"state_before":   []string{"PRE_ACTIVE"},
				"state_after":    []string{"ACTIVE"},
				"locate_name":    true,
				"locate_max":     2,
				"get_missing":    "ITEM_NOT_FOUND",
				"state_revoked":  []string{"DEACTIVATED"},
				"get_destroyed":  "ITEM_NOT_FOUND",
				"create_dsa":     "OPERATION_NOT_SUPPORTED",
				"encrypt_secret": "INVALID_FIELD", "decrypt_round_trip": true, "encrypt_is_aes_cbc": true,
				"query_operations":  21,
				"discover_versions": []string{"2.0", "1.4", "1.3", "1.2", "1.1", "1.0"},
			})
			expect(t, got, map[string]any{"destroy_active": wrongLifecycle(v)})
			if v != "1.2" {
				expect(t, got, map[string]any{"locate_page": true})
			}
			t.Logf("%s: attribute list %v", v, got["attribute_list"])
		})
	}
}

// MAC through PyKMIP's client.mac at 1.2, 1.4 and 2.0: HMAC-SHA256/384/512
// computed in the HSM equal Python's hmac with the registered material;
// the usage mask, the lifecycle, the key's own algorithm and the key
// length are enforced.
func TestPyKMIPMAC(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run(v, func(t *testing.T) {
			got := e.runPyKMIP(t, "mac-"+v, authz.RoleUser, "mac", v)
			lifecycle := wrongLifecycle(v)
			expect(t, got, map[string]any{
				"HMAC_SHA256": true, "HMAC_SHA384": true, "HMAC_SHA512": true, "secret_sha256": true,
				"pre_active":           lifecycle,
				"other_algorithm":      "INVALID_FIELD",
				"secret_sha1":          "OPERATION_NOT_SUPPORTED",
				"secret_short_for_512": "INVALID_FIELD",
				"encrypt_only_key":     "INVALID_FIELD",
			})
		})
	}
}

// Create Key Pair, Sign and Signature Verify through PyKMIP at 1.2, 1.4
// and 2.0: each pair is generated in the HSM; Get of the private key is
// refused, Get of the public key gives a key of the asked size; the
// halves link to each other; signatures made in the HSM verify with the
// cryptography package and with Signature Verify, and a tampered message
// does not.
func TestPyKMIPKeyPairSign(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run(v, func(t *testing.T) {
			got := e.runPyKMIP(t, "signer-"+v, authz.RoleUser, "pairs", v)
			lifecycle := wrongLifecycle(v)
			common := map[string]any{"get_private": "PERMISSION_DENIED", "sign_pre_active": lifecycle, "sign_with_public": "INVALID_FIELD"}
			if v != "2.0" {
				common["attribute_list_has_link"] = true
			}
			for name, bits := range map[string]int{"RSA_2048": 2048, "RSA_3072": 3072, "ECDSA_256": 256, "ECDSA_384": 384} {
				alg := "RSA"
				if bits < 1000 {
					alg = "ECDSA"
				}
				want := map[string]any{"public_bits": bits, "private_attrs": map[string]any{"Object Type": []string{"PRIVATE_KEY"},
					"Cryptographic Algorithm": []string{alg}, "Cryptographic Length": []int{bits}, "Name": []string{name + "-priv"}}}
				for k, v := range common {
					want[k] = v
				}
				schemes := []string{"ecdsa"}
				if bits > 1000 {
					schemes = []string{"pkcs1", "pkcs1_dsa", "pss"}
				}
				for _, s := range schemes {
					want[s+"_checks"], want[s+"_verify"], want[s+"_verify_tampered"] = true, "VALID", "INVALID"
				}
				r, _ := got[name].(map[string]any)
				t.Run(name, func(t *testing.T) { expect(t, r, want) })
			}
		})
	}
}

// Through PyKMIP at 1.2, 1.4 and 2.0: Register refuses AES keys that are
// not 128, 192 or 256 bits; Revoke for a reason other than Key Compromise
// takes only an Active key (to Deactivated), Key Compromise any other
// (to Compromised); an Activation Date an hour ago at Register activates.
func TestPyKMIPLifecycle(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run(v, func(t *testing.T) {
			got := e.runPyKMIP(t, "life-"+v, authz.RoleUser, "lifecycle", v)
			lifecycle := wrongLifecycle(v)
			bad := map[string]string{}
			for _, n := range []string{"1", "15", "17", "31", "33", "64", "4096"} {
				bad[n] = "INVALID_FIELD"
			}
			expect(t, got, map[string]any{
				"register_aes": bad, "register_aes_ok": "no failure",
				"pre_active_cessation": lifecycle, "pre_active_after": []string{"PRE_ACTIVE"},
				"pre_active_compromise": []string{"COMPROMISED"}, "compromised_cessation": lifecycle, "compromised_get": lifecycle,
				"active_cessation": []string{"DEACTIVATED"}, "deactivated_cessation": lifecycle,
				"deactivated_compromise": []string{"COMPROMISED"},
				"past_activation_date":   []string{"ACTIVE"},
			})
		})
	}
}

// The Percona Server keyring_kmip sequence, Register in 1.4 and Locate in
// 1.0 on one connection.
func TestPyKMIPPercona(t *testing.T) {
	e := newEnv(t)
	got := e.runPyKMIP(t, "mysql", authz.RoleUser, "percona", "")
	expect(t, got, map[string]any{"locate_group": true, "get": true, "name": []string{"percona-key"}, "after_destroy": []string{}})
}

// pg_tde's sequence; Locate by Name must find exactly one key, so each
// version runs against a fresh broker.
func TestPyKMIPPgTDE(t *testing.T) {
	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run(v, func(t *testing.T) {
			got := newEnv(t).runPyKMIP(t, "postgres", authz.RoleUser, "pgtde", v)
			expect(t, got, map[string]any{"locate": true, "get": true})
		})
	}
}

func TestPyKMIPMongoDB(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"1.0", "1.2", "2.0"} {
		got := e.runPyKMIP(t, "mongod", authz.RoleUser, "mongodb", v)
		expect(t, got, map[string]any{"get": true, "state": []string{"ACTIVE"}, "missing": "ITEM_NOT_FOUND"})
	}
}

// An auditor's certificate is refused as on gRPC.
func TestPyKMIPDenied(t *testing.T) {
	e := newEnv(t)
	got := e.runPyKMIP(t, "watcher", authz.RoleAuditor, "denied", "1.4")
	expect(t, got, map[string]any{"register": "PERMISSION_DENIED"})
}

// wrongLifecycle is the result reason PyKMIP reports for a change the
// lifecycle refuses at KMIP version v: Wrong Key Lifecycle State exists
// from 2.0; earlier versions answer Permission Denied.
func wrongLifecycle(v string) string {
	if v == "2.0" {
		return "WRONG_KEY_LIFECYCLE_STATE"
	}
	return "PERMISSION_DENIED"
}
