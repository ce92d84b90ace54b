package authz

import "testing"

func TestGrantAllows(t *testing.T) {
	ec := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	ops := []string{"Decrypt", "Encrypt", "GenerateDataKey"}
	tests := []struct {
		name  string
		grant Grant
		op    string
		ec    map[string]string
		want  bool
	}{
		{"operation given", Grant{Operations: ops}, "Decrypt", nil, true},
		{"any context without constraint", Grant{Operations: ops}, "Encrypt", ec("a", "1"), true},
		{"operation not given", Grant{Operations: ops}, "Sign", nil, false},
		{"operation names are exact", Grant{Operations: ops}, "decrypt", nil, false},
		{"no prefix: kms:Decrypt is not Decrypt", Grant{Operations: ops}, "kms:Decrypt", nil, false},
		{"no operations", Grant{}, "Decrypt", nil, false},

		{"equals: exact context", Grant{Operations: ops, ContextEquals: ec("t", "acme", "p", "x")}, "Decrypt", ec("p", "x", "t", "acme"), true},
		{"equals: extra pair", Grant{Operations: ops, ContextEquals: ec("t", "acme")}, "Decrypt", ec("t", "acme", "p", "x"), false},
		{"equals: missing pair", Grant{Operations: ops, ContextEquals: ec("t", "acme", "p", "x")}, "Decrypt", ec("t", "acme"), false},
		{"equals: other value", Grant{Operations: ops, ContextEquals: ec("t", "acme")}, "Decrypt", ec("t", "evil"), false},
		{"equals: same size, other key", Grant{Operations: ops, ContextEquals: ec("t", "acme")}, "Decrypt", ec("u", "acme"), false},
		{"equals: no context", Grant{Operations: ops, ContextEquals: ec("t", "acme")}, "Decrypt", nil, false},
		{"equals: empty value matches only empty", Grant{Operations: ops, ContextEquals: ec("t", "")}, "Decrypt", ec("t", ""), true},
		{"equals: absent is not empty", Grant{Operations: ops, ContextEquals: ec("t", "")}, "Decrypt", ec("u", ""), false},

		{"subset: same context", Grant{Operations: ops, ContextSubset: ec("t", "acme")}, "Decrypt", ec("t", "acme"), true},
		{"subset: more pairs", Grant{Operations: ops, ContextSubset: ec("t", "acme")}, "Decrypt", ec("t", "acme", "p", "x"), true},
		{"subset: pair missing", Grant{Operations: ops, ContextSubset: ec("t", "acme", "p", "x")}, "Decrypt", ec("t", "acme"), false},
		{"subset: other value", Grant{Operations: ops, ContextSubset: ec("t", "acme")}, "Decrypt", ec("t", "ACME"), false},
		{"subset: no context", Grant{Operations: ops, ContextSubset: ec("t", "acme")}, "Decrypt", nil, false},
		{"subset: right context, operation not given", Grant{Operations: ops, ContextSubset: ec("t", "acme")}, "Sign", ec("t", "acme"), false},
		{"empty constraints are none", Grant{Operations: ops, ContextEquals: ec(), ContextSubset: ec()}, "Decrypt", ec("t", "x"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.grant.Allows(tt.op, tt.ec); got != tt.want {
				t.Errorf("Allows(%q, %v) = %v, want %v", tt.op, tt.ec, got, tt.want)
			}
		})
	}
}
