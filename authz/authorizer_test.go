package authz

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestDecideKey(t *testing.T) {
	a := NewAuthorizer(acct, testKeyARN)
	admin := Caller{Principal: "root", Role: RoleAdmin}
	alice := Caller{Principal: "alice", Role: RoleUser}
	bob := Caller{Principal: "bob", Role: RoleUser}
	audra := Caller{Principal: "audra", Role: RoleAuditor}
	policy := []byte(`{"Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Allow","Principal":{"AWS":"alice"},"Action":["kms:Encrypt","kms:ReEncryptFrom","kms:DescribeKey"]},
	  {"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Decrypt","Condition":{"StringEquals":{"kms:EncryptionContext:mount":"db"}}},
	  {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"frozen"}}}]}`)
	k := Key{Creator: "root", Policy: policy}
	tenant := func(v string) map[string]string { return map[string]string{"tenant": v} }
	bobGrants := []Grant{{Operations: []string{"Decrypt", "ReEncryptTo"}, ContextSubset: map[string]string{"tenant": "acme"}}}
	tests := []struct {
		name   string
		req    KeyRequest
		key    Key
		grants []Grant
		want   Verdict
		reason string // contained in the reason
		action string
	}{
		{"internal work passes", KeyRequest{Caller: Caller{Principal: "node", Role: RoleInternal, Internal: true}, Action: "internal:rotation"}, k, nil, Allow, "", "internal:rotation"},
		{"no principal", KeyRequest{Caller: Caller{Role: RoleAdmin}, Action: "kms:Encrypt"}, k, nil, DenyUnauthenticated, "unauthenticated", "kms:Encrypt"},
		{"open server", KeyRequest{Caller: Caller{Open: true}, Action: "kms:Decrypt", EncryptionContext: tenant("frozen")}, k, nil, Allow, "", "kms:Decrypt"},
		{"by role: auditor describes", KeyRequest{Caller: audra, Action: "kms:DescribeKey"}, k, nil, Allow, "", "kms:DescribeKey"},
		{"by role: admin lists grants", KeyRequest{Caller: admin, Action: "kms:ListGrants"}, Key{Policy: []byte(`{"Statement":{"Effect":"Deny","Principal":"*","Action":"*"}}`)}, nil, Allow, "", "kms:ListGrants"},
		{"role not admitted", KeyRequest{Caller: audra, Action: "kms:Encrypt"}, k, nil, DenyRole, "role auditor", "kms:Encrypt"},
		{"no role", KeyRequest{Caller: Caller{Principal: "eve"}, Action: "kms:Encrypt"}, k, nil, DenyRole, "role none", "kms:Encrypt"},
		{"policy allows", KeyRequest{Caller: alice, Action: "kms:Encrypt"}, k, nil, Allow, "", "kms:Encrypt"},
		{"policy allows with condition", KeyRequest{Caller: alice, Action: "kms:Decrypt", EncryptionContext: map[string]string{"mount": "db"}}, k, nil, Allow, "", "kms:Decrypt"},
		{"condition unmet", KeyRequest{Caller: alice, Action: "kms:Decrypt", EncryptionContext: map[string]string{"mount": "web"}}, k, nil, DenyKey, "no statement in the key policy and no grant", "kms:Decrypt"},
		{"deny wins over the account", KeyRequest{Caller: admin, Action: "kms:Decrypt", EncryptionContext: tenant("frozen")}, k, nil, DenyKey, "a Deny statement", "kms:Decrypt"},
		{"grant allows", KeyRequest{Caller: bob, Action: "kms:Decrypt", EncryptionContext: tenant("acme")}, k, bobGrants, Allow, "", "kms:Decrypt"},
		{"grant constraint unmet", KeyRequest{Caller: bob, Action: "kms:Decrypt", EncryptionContext: tenant("other")}, k, bobGrants, DenyKey, "no grant", "kms:Decrypt"},
		{"deny wins over a grant", KeyRequest{Caller: bob, Action: "kms:Decrypt", EncryptionContext: tenant("frozen")}, k, []Grant{{Operations: []string{"Decrypt"}}}, DenyKey, "a Deny statement", "kms:Decrypt"},
		{"grant of another operation", KeyRequest{Caller: bob, Action: "kms:Encrypt", EncryptionContext: tenant("acme")}, k, bobGrants, DenyKey, "no grant", "kms:Encrypt"},
		{"ReEncrypt source is ReEncryptFrom", KeyRequest{Caller: alice, Action: "kms:ReEncrypt", Field: "SourceKeyId"}, k, nil, Allow, "", "kms:ReEncryptFrom"},
		{"ReEncrypt destination is ReEncryptTo", KeyRequest{Caller: alice, Action: "kms:ReEncrypt", Field: "DestinationKeyId"}, k, nil, DenyKey, "no statement", "kms:ReEncryptTo"},
		{"ReEncryptTo under the destination context", KeyRequest{Caller: bob, Action: "kms:ReEncrypt", Field: "DestinationKeyId",
			SourceContext: tenant("other"), DestinationContext: tenant("acme")}, k, bobGrants, Allow, "", "kms:ReEncryptTo"},
		{"ReEncryptTo not under the source context", KeyRequest{Caller: bob, Action: "kms:ReEncrypt", Field: "DestinationKeyId",
			SourceContext: tenant("acme"), DestinationContext: tenant("other")}, k, bobGrants, DenyKey, "no grant", "kms:ReEncryptTo"},
		{"TDE key read is Decrypt", KeyRequest{Caller: alice, Action: ActionReadTDEKey, EncryptionContext: map[string]string{"mount": "db"}}, k, nil, Allow, "", "kms:Decrypt"},
		{"TDE key read under another mount", KeyRequest{Caller: alice, Action: ActionReadTDEKey, EncryptionContext: map[string]string{"mount": "x"}}, k, nil, DenyKey, "no statement", "kms:Decrypt"},
		{"default policy: creator", KeyRequest{Caller: alice, Action: "kms:Sign"}, Key{Creator: "alice"}, nil, Allow, "", "kms:Sign"},
		{"default policy: admins", KeyRequest{Caller: admin, Action: "kms:DisableKey"}, Key{Creator: "alice"}, nil, Allow, "", "kms:DisableKey"},
		{"default policy: other users", KeyRequest{Caller: bob, Action: "kms:Sign"}, Key{Creator: "alice"}, nil, DenyKey, "no statement", "kms:Sign"},
		{"stored policy that no longer parses", KeyRequest{Caller: admin, Action: "kms:Encrypt"}, Key{Policy: []byte(`{"Statement":{"Effect":"Maybe"}}`)}, nil, DenyKey,
			"the key policy cannot be evaluated (statement 1: the Effect must be Allow or Deny", "kms:Encrypt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			d := a.DecideKey(tt.req, tt.key, func() []Grant { called = true; return tt.grants })
			if d.Verdict != tt.want || !strings.Contains(d.Reason, tt.reason) || (tt.reason == "") != (d.Reason == "") || d.Action != tt.action {
				t.Errorf("DecideKey = %+v; want verdict %d, reason with %q, action %s", d, tt.want, tt.reason, tt.action)
			}
			// Grants are read only when the policy leaves the decision open.
			if called && (d.Reason == "a Deny statement in the key policy applies" || tt.grants == nil && d.Allowed()) {
				t.Errorf("grants read although the policy decided")
			}
		})
	}
}

func TestDefaultPolicy(t *testing.T) {
	a := NewAuthorizer("123456789012", testKeyARN)
	plain := a.DefaultPolicy("")
	if !strings.Contains(plain, `"AWS" : "arn:aws:iam::123456789012:root"`) || strings.Contains(plain, "creator") {
		t.Errorf("default policy:\n%s", plain)
	}
	// A creator's name is JSON-escaped, so that no name can add a statement.
	evil := `x"}, {"Effect":"Allow","Principal":"*","Action":"kms:*`
	doc := a.DefaultPolicy(evil)
	var v struct{ Statement []map[string]any }
	if err := json.Unmarshal([]byte(doc), &v); err != nil || len(v.Statement) != 2 {
		t.Fatalf("default policy with creator %q: %v, %d statements:\n%s", evil, err, len(v.Statement), doc)
	}
	if err := CheckPolicy(doc); err != nil {
		t.Fatalf("the default policy does not pass CheckPolicy: %v", err)
	}
	p, err := a.PolicyOf(Key{Creator: evil})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Decide("123456789012", keyARN, Caller{Principal: "mallory", Role: RoleUser}, "kms:Decrypt", nil); got != EffectNone {
		t.Errorf("a user other than the creator: %d", got)
	}
	if got := p.Decide("123456789012", keyARN, Caller{Principal: evil, Role: RoleUser}, "kms:Decrypt", nil); got != EffectAllow {
		t.Errorf("the creator: %d", got)
	}
}

// TestPolicyCacheBounded: the cache holds at most maxCachedPolicies
// parsed policies, and a cached policy is the one its text parses to.
func TestPolicyCacheBounded(t *testing.T) {
	a := NewAuthorizer(acct, testKeyARN)
	for i := range maxCachedPolicies + 10 {
		doc := `{"Statement":{"Effect":"Allow","Principal":{"AWS":"p` + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + `"},"Action":"kms:Encrypt"},"Id":"` + strings.Repeat("i", i) + `"}`
		p, err := a.PolicyOf(Key{Policy: []byte(doc)})
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := a.PolicyOf(Key{Policy: []byte(doc)}); again != p {
			t.Fatal("a cached policy was parsed again")
		}
		if n := len(a.policies); n > maxCachedPolicies {
			t.Fatalf("%d policies cached", n)
		}
	}
}

func TestCheckPolicy(t *testing.T) {
	valid := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Describe*","Resource":"*"}]}`
	tests := []struct {
		name, doc string
		want      string // "" for valid; else part of the message
	}{
		{"valid", valid, ""},
		{"one statement object", `{"Statement":{"Effect":"Deny","Principal":{"AWS":"mallory"},"Action":"*"}}`, ""},
		{"kmip actions", `{"Statement":{"Effect":"Allow","Principal":"*","Action":["kmip:*","kmip:Encrypt"]}}`, ""},
		{"kmip read-only", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":["kmip:Get","kmip:Locate","kmip:GetAttributes"]},` +
			`{"Effect":"Deny","Principal":"*","Action":"kmip:Destroy"}]}`, ""},
		{"every kmip operation a policy decides", `{"Statement":{"Effect":"Allow","Principal":"*","Action":["kmip:` + strings.Join(kmipObjectActions, `","kmip:`) + `","KMIP:get","kmip:Get*"]}}`, ""},
		{"unknown kmip action", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kmip:ScheduleKeyDeletion"}}`, `"kmip:ScheduleKeyDeletion" is not a KMIP operation a key policy decides; those are kmip:Create, kmip:Register`},
		{"kmip action by role alone", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kmip:Query"}}`, "answered by role alone"},
		{"kms name as kmip", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kmip:GenerateDataKey"}}`, "not a KMIP operation"},
		{"at the limit", valid[:len(valid)-1] + `,"Id":"` + strings.Repeat("a", MaxPolicySize-len(valid)-8) + `"}`, ""},
		{"over the limit", valid[:len(valid)-1] + `,"Id":"` + strings.Repeat("a", MaxPolicySize-len(valid)-7) + `"}`, "the limit is 32768"},
		{"not UTF-8", `{"Id":"` + "\xff" + `","Statement":[]}`, "not valid UTF-8"},
		{"array", `[` + valid + `]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"trailing data", valid + `{}`, "data after its JSON object"},
		{"no statement", `{"Version":"2012-10-17"}`, "has no Statement"},
		{"statement a string", `{"Statement":"all"}`, "has no Statement"},
		{"a statement that cannot be evaluated", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`,
			`statement 1: condition operator "IpAddress" is not supported`},
		{"second statement", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt"},{"Effect":"Allow","Principal":"nobody:x","Action":"kms:Sign","Resource":"*","Extra":1}]}`,
			`statement 2: "Extra" is not a statement member`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPolicy(tt.doc)
			var pe *PolicyError
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("CheckPolicy = %v, want nil", err)
			case tt.want != "" && (!errors.As(err, &pe) || !strings.Contains(pe.Reason, tt.want)):
				t.Fatalf("CheckPolicy = %v, want a *PolicyError mentioning %q", err, tt.want)
			}
		})
	}
	if err := CheckPolicy(""); !errors.Is(err, ErrPolicyRequired) {
		t.Errorf("CheckPolicy(\"\") = %v, want ErrPolicyRequired", err)
	}
}

// TestImportsNoBroker: authz sits below everything that decides access;
// it must build without cgo, and so without the HSM, Raft or gRPC.
func TestImportsNoBroker(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch p {
		case "github.com/hsmbroker/hsmbroker/authz", "github.com/hsmbroker/hsmbroker/internal/strictjson":
		default:
			t.Errorf("authz depends on %s; it may use the standard library and internal/strictjson only", p)
		}
	}
}

// testKeyARN is the ARN of key id in the tests' region and account.
func testKeyARN(id string) string { return "arn:aws:kms:us-east-1:" + acct + ":key/" + id }

// A policy whose statements name key ARNs is matched against the ARN of
// the key asked about, which the Authorizer builds from the key's id.
func TestAllowsMatchesResourceToTheKey(t *testing.T) {
	a := NewAuthorizer(acct, testKeyARN)
	policy := []byte(`{"Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Encrypt","Resource":"` + testKeyARN("k1") + `"}}`)
	alice := Caller{Principal: "alice", Role: RoleUser}
	if ok, why := a.Allows(Key{ID: "k1", Policy: policy}, alice, "kms:Encrypt", nil, nil); !ok {
		t.Errorf("the key the statement names: refused (%s)", why)
	}
	if ok, _ := a.Allows(Key{ID: "k2", Policy: policy}, alice, "kms:Encrypt", nil, nil); ok {
		t.Error("another key with the same policy: allowed")
	}
}
