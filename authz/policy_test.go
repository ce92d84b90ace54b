package authz

import (
	"errors"
	"strings"
	"testing"
)

const acct = "000000000000"

// keyARN is the ARN of the key the policies of these tests are on.
const keyARN = "arn:aws:kms:us-east-1:000000000000:key/0f8e2c3a-5b6d-4e7f-8a9b-0c1d2e3f4a5b"

func TestParsePolicyRefuses(t *testing.T) {
	tests := []struct{ name, doc, mention string }{
		{"not json", `nope`, "JSON"},
		{"no statement", `{"Version":"2012-10-17"}`, "Statement"},
		{"misspelt statement member", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"},"Statements":{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt"}}`, `"Statements" is not a key policy member`},
		{"top-level condition", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"},"Condition":{}}`, "Condition"},
		{"unknown version", `{"Version":"2008-10-17x","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}`, "2008-10-17x"},
		{"id not a string", `{"Id":{"x":1},"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}`, "the member Id has the wrong type"},
		{"bad effect", `{"Statement":{"Effect":"Maybe","Principal":"*","Action":"kms:*"}}`, "Effect"},
		{"no principal", `{"Statement":{"Effect":"Allow","Action":"kms:*"}}`, "Principal"},
		{"service principal", `{"Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"kms:*"}}`, "Service"},
		{"other arn", `{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::000000000000:assumed-role/x"},"Action":"kms:*"}}`, "IAM ARN"},
		{"unknown role", `{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:role/root"},"Action":"kms:*"}}`, "role"},
		{"no action", `{"Statement":{"Effect":"Allow","Principal":"*"}}`, "Action"},
		{"misspelt action", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:Decrpyt"}}`, "kms:Decrpyt"},
		{"other service", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}}`, "s3:GetObject"},
		{"not action", `{"Statement":{"Effect":"Deny","Principal":"*","NotAction":"kms:Decrypt"}}`, "NotAction"},
		{"typo member", `{"Statement":{"Effect":"Deny","Principal":"*","Actions":"kms:Decrypt"}}`, "Actions"},
		{"condition op", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}}`, "Bool"},
		{"condition key", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:CallerAccount":"1"}}}}`, "kms:CallerAccount"},
		{"case variant member", `{"Statement":{"Effect":"Deny","effect":"Allow","Principal":"*","Action":"kms:*"}}`, "effect"},
		{"repeated member", `{"Statement":{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"kms:*"}}`, "Effect"},
		{"repeated statement list", `{"Statement":[],"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}`, "Statement"},
		{"case variant statement", `{"Statement":[],"statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}`, "statement"},
		{"repeated condition key", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContext:t":"a","kms:EncryptionContext:t":"b"}}}}`, "kms:EncryptionContext:t"},
		{"resource not an ARN", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"not-an-arn"}}`, "not-an-arn"},
		{"resource an alias ARN", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:000000000000:alias/x"}}`, "alias/x"},
		{"resource of another service", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":["*","arn:aws:s3:::bucket/key/x"]}}`, "arn:aws:s3"},
		{"resource a bare key id", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"key/1234"}}`, "key/1234"},
		{"resource empty list", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":[]}}`, "Resource"},
		{"resource null", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":null}}`, "resource"},
		{"not resource", `{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","NotResource":"*"}}`, "NotResource"},
		{"repeated principal", `{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/a","AWS":"*"},"Action":"kms:*"}}`, "AWS"},
	}
	tests = append(tests, []struct{ name, doc, mention string }{
		{"wrong type", `{"Statement":{"Effect":1,"Principal":"*","Action":"kms:*"}}`, "the member Effect has the wrong type (number)"},
		{"typo member, named", `{"Statement":{"Effect":"Allow","Principals":"*","Action":"kms:*"}}`, `"Principals" is not a statement member`},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy(tt.doc)
			if err != nil && (strings.Contains(err.Error(), "json:") || strings.Contains(err.Error(), "Go struct")) {
				t.Fatalf("ParsePolicy = %v, in Go's terms", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("ParsePolicy = %v, want an error mentioning %q", err, tt.mention)
			}
			var pe *PolicyError
			if err := CheckPolicy(tt.doc); !errors.As(err, &pe) {
				t.Fatalf("CheckPolicy = %v, want a *PolicyError", err)
			}
		})
	}
}

// TestParsePolicyTopLevel: the members a key policy may have at its top
// level are read; the others are refused (TestParsePolicyRefuses).
func TestParsePolicyTopLevel(t *testing.T) {
	const stmt = `"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}`
	for _, doc := range []string{
		`{` + stmt + `}`,
		`{"Version":"2012-10-17",` + stmt + `}`,
		`{"Version":"2008-10-17","Id":"key-default-1",` + stmt + `}`,
	} {
		if _, err := ParsePolicy(doc); err != nil {
			t.Errorf("ParsePolicy(%s) = %v", doc, err)
		}
	}
}

func TestPolicyDecide(t *testing.T) {
	doc := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":["alice","arn:aws:iam::000000000000:user/bob"]},"Action":["kms:Encrypt","kms:GenerateDataKey*"]},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:role/user"},"Action":"kms:Decrypt",
	   "Condition":{"StringLike":{"kms:EncryptionContext:tenant":"acme-*"}}},
	  {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"acme-frozen"}}},
	  {"Effect":"Deny","Principal":{"AWS":"mallory"},"Action":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"kms:Sign"}
	]}`
	p, err := ParsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	admin := Caller{Principal: "root-admin", Role: "admin"}
	alice := Caller{Principal: "alice", Role: "user"}
	bob := Caller{Principal: "bob", Role: "user"}
	carol := Caller{Principal: "carol", Role: "user"}
	mallory := Caller{Principal: "mallory", Role: "admin"}
	tenant := func(v string) map[string]string { return map[string]string{"tenant": v} }
	tests := []struct {
		name   string
		id     Caller
		action string
		ec     map[string]string
		want   Effect
	}{
		{"admin via account", admin, "kms:DisableKey", nil, EffectAllow},
		{"admin denied frozen tenant", admin, "kms:Decrypt", tenant("acme-frozen"), EffectDeny},
		{"alice encrypts", alice, "kms:Encrypt", nil, EffectAllow},
		{"alice wildcard action", alice, "kms:GenerateDataKeyWithoutPlaintext", nil, EffectAllow},
		{"action case", alice, "KMS:ENCRYPT", nil, EffectAllow},
		{"alice cannot sign", alice, "kms:Sign", nil, EffectNone},
		{"bob by user ARN", bob, "kms:Encrypt", nil, EffectAllow},
		{"role with condition", carol, "kms:Decrypt", tenant("acme-1"), EffectAllow},
		{"role condition unmet", carol, "kms:Decrypt", tenant("other"), EffectNone},
		{"role condition missing key", carol, "kms:Decrypt", nil, EffectNone},
		{"deny wins over allow", carol, "kms:Decrypt", tenant("acme-frozen"), EffectDeny},
		{"deny by name beats account", mallory, "kms:DescribeKey", nil, EffectDeny},
		{"other account is no one here", carol, "kms:Sign", nil, EffectNone},
	}
	for _, tt := range tests {
		if got := p.Decide(acct, keyARN, tt.id, tt.action, tt.ec); got != tt.want {
			t.Errorf("%s: Decide = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// A statement applies to the key only if its Resource is "*", absent, or
// matches the key's ARN: an Allow or a Deny written for another key (or
// another region or account) says nothing about this one.
func TestPolicyResource(t *testing.T) {
	alice := Caller{Principal: "alice", Role: "user"}
	admin := Caller{Principal: "root-admin", Role: "admin"}
	stmt := func(effect, principal, resource string) string {
		r := ""
		if resource != "" {
			r = `,"Resource":` + resource
		}
		return `{"Effect":"` + effect + `","Principal":{"AWS":"` + principal + `"},"Action":"kms:Encrypt"` + r + `}`
	}
	other := `"arn:aws:kms:us-east-1:000000000000:key/11111111-2222-4333-8444-555555555555"`
	tests := []struct {
		name     string
		resource string
		want     Effect
	}{
		{"star", `"*"`, EffectAllow},
		{"absent", ``, EffectAllow},
		{"this key's ARN", `"` + keyARN + `"`, EffectAllow},
		{"a list naming this key", `[` + other + `,"` + keyARN + `"]`, EffectAllow},
		{"wildcard over the account's keys", `"arn:aws:kms:*:000000000000:key/*"`, EffectAllow},
		{"another key", other, EffectNone},
		{"another region", `"arn:aws:kms:eu-west-1:000000000000:key/0f8e2c3a-5b6d-4e7f-8a9b-0c1d2e3f4a5b"`, EffectNone},
		{"another account's keys", `"arn:aws:kms:us-east-1:111111111111:key/*"`, EffectNone},
	}
	for _, tt := range tests {
		allow, err := ParsePolicy(`{"Statement":[` + stmt("Allow", "alice", tt.resource) + `]}`)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := allow.Decide(acct, keyARN, alice, "kms:Encrypt", nil); got != tt.want {
			t.Errorf("%s: Allow decides %d, want %d", tt.name, got, tt.want)
		}
		// The same Resource on a Deny next to an Allow for everyone.
		deny, err := ParsePolicy(`{"Statement":[` + stmt("Allow", "*", `"*"`) + `,` + stmt("Deny", "arn:aws:iam::000000000000:root", tt.resource) + `]}`)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		want := EffectAllow
		if tt.want == EffectAllow {
			want = EffectDeny
		}
		if got := deny.Decide(acct, keyARN, admin, "kms:Encrypt", nil); got != want {
			t.Errorf("%s: Deny decides %d, want %d", tt.name, got, want)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false}, {"*c", "abc", true},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"kms:generate*", "kms:generatemac", true}, {"", "x", false},
	} {
		if got := glob(c.p, c.s); got != c.want {
			t.Errorf("glob(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

// FuzzParsePolicy: a key policy is untrusted input (any admin, or the AWS
// API, can put one); parsing never panics, and a policy that parses can be
// evaluated for anyone.
func FuzzParsePolicy(f *testing.F) {
	f.Add(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":["alice","arn:aws:iam::000000000000:role/user"]},"Action":"kms:Gen*",
	  "Condition":{"StringLike":{"kms:EncryptionContext:t":"a*"}}}]}`)
	f.Add(`{"Statement":{"Effect":"Deny","Principal":"*","Action":["*"],"Condition":{"StringNotEquals":{"kms:EncryptionContext:x":["1","2"]}}}}`)
	f.Add(`{"Statement":[]}`)
	f.Fuzz(func(t *testing.T, doc string) {
		p, err := ParsePolicy(doc)
		if err != nil {
			return
		}
		for _, id := range []Caller{{Principal: "alice", Role: "user"}, {Principal: "root", Role: "admin"}, {}} {
			p.Decide(acct, keyARN, id, "kms:GenerateDataKey", map[string]string{"t": "abc", "x": "3"})
		}
	})
}
