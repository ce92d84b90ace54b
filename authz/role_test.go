package authz

import "testing"

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
