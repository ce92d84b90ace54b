package authz

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

func TestRoles(t *testing.T) {
	tests := []struct {
		role            Role
		issuable, valid bool
		name            string
	}{
		{RoleAdmin, true, true, "admin"},
		{RoleUser, true, true, "user"},
		{RoleAuditor, true, true, "auditor"},
		{RoleNone, false, true, "none"},
		{"", false, false, "none"},
		{RoleNode, false, false, "node"},
		{RoleInternal, false, false, "internal"},
		{"root", false, false, "root"},
		{"Admin", false, false, "Admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+string(tt.role), func(t *testing.T) {
			if got := tt.role.Issuable(); got != tt.issuable {
				t.Errorf("Issuable = %v, want %v", got, tt.issuable)
			}
			if got := tt.role.Valid(); got != tt.valid {
				t.Errorf("Valid = %v, want %v", got, tt.valid)
			}
			if got := tt.role.Name(); got != tt.name {
				t.Errorf("Name = %q, want %q", got, tt.name)
			}
			r, err := ParseRole(string(tt.role))
			if tt.issuable != (err == nil) || tt.issuable && r != tt.role {
				t.Errorf("ParseRole = %q, %v; want %q accepted: %v", r, err, tt.role, tt.issuable)
			}
		})
	}
}

func TestRoleOf(t *testing.T) {
	for _, tt := range []struct {
		ou   []string
		want Role
	}{
		{nil, ""},
		{[]string{"user"}, RoleUser},
		{[]string{"auditor", "admin"}, RoleAuditor}, // the first unit only
		{[]string{"root"}, "root"},                  // read as written; Issuable decides
	} {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: "p", OrganizationalUnit: tt.ou}}
		if got := RoleOf(c); got != tt.want {
			t.Errorf("RoleOf(OU %q) = %q, want %q", tt.ou, got, tt.want)
		}
	}
}
