package authz

import (
	"strings"
	"testing"
)

// TestRuleTable pins who may do what for one action of each kind: a
// change to the table shows up here as a decision, not as a diff of a map.
func TestRuleTable(t *testing.T) {
	const (
		no = Access(0)
		p  = ByPolicy
		r  = ByRole
	)
	roles := []Role{RoleAdmin, RoleUser, RoleAuditor, RoleNone, "", RoleNode, RoleInternal}
	tests := []struct {
		action string
		want   []Access // in the order of roles
	}{
		{"kms:Encrypt", []Access{p, p, no, no, no, no, no}},
		{"kms:ReEncrypt", []Access{p, p, no, no, no, no, no}},
		{"kms:RawDecrypt", []Access{p, p, no, no, no, no, no}},
		{"kms:GenerateRandom", []Access{r, r, no, no, no, no, no}},
		{"kms:DescribeKey", []Access{r, p, r, no, no, no, no}},
		{"kms:DisableKey", []Access{p, no, no, no, no, no, no}},
		{"kms:CreateGrant", []Access{p, no, no, no, no, no, no}},
		{"kms:CreateKey", []Access{r, no, no, no, no, no, no}},
		{"kms:PutKeyPolicy", []Access{r, no, no, no, no, no, no}},
		{"kms:DeleteAlias", []Access{p, no, no, no, no, no, no}},
		{"kms:ListKeys", []Access{r, r, r, no, no, no, no}},
		{"kms:GetKeyPolicy", []Access{r, no, r, no, no, no, no}},
		{"kms:RetireGrant", []Access{r, r, no, no, no, no, no}},
		{"hsmbroker:ForwardCommand", []Access{no, no, no, no, no, r, no}},
		{"hsmbroker:JoinCluster", []Access{no, no, no, no, no, r, no}},
		{"hsmbroker:RemoveNode", []Access{r, no, no, no, no, r, no}},
		{"hsmbroker:GetClusterStatus", []Access{r, no, r, no, no, r, no}},
		{"hsmbroker:WhoAmI", []Access{r, r, r, no, no, r, no}},
		{"hsmbroker:Backup", []Access{r, no, no, no, no, no, no}},
		{"hsmbroker:VerifyBackup", []Access{r, no, r, no, no, no, no}},
		{"hsmbroker:ListJoinTokens", []Access{r, no, r, no, no, no, no}},
		{"hsmbroker:RevokeJoinToken", []Access{r, no, no, no, no, no, no}},
		{"hsmbroker:CreateDataObject", []Access{r, r, no, no, no, no, no}},
		{ActionReadTDEKey, []Access{p, p, no, no, no, no, no}},
		{ActionReadTDEMount, []Access{r, r, no, no, no, no, no}},
		{"hsmbroker:TDEListTokens", []Access{r, no, r, no, no, no, no}},
		{"kmip:Get", []Access{p, p, no, no, no, no, no}},
		{"kmip:SignatureVerify", []Access{p, p, no, no, no, no, no}},
		{"kmip:Query", []Access{r, r, r, no, no, no, no}},
		{"kmip:DiscoverVersions", []Access{r, r, r, no, no, no, no}},
		{"kms:NoSuchAction", []Access{no, no, no, no, no, no, no}},
		{"kms-xks-proxy:Encrypt", []Access{no, no, no, no, no, no, no}},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			wantKnown := !strings.Contains(tt.action, "NoSuch") && !strings.HasPrefix(tt.action, "kms-xks")
			if Known(tt.action) != wantKnown {
				t.Errorf("Known = %v, want %v", Known(tt.action), wantKnown)
			}
			for i, role := range roles {
				got, ok := AccessFor(tt.action, role)
				if ok != (tt.want[i] != no) || got != tt.want[i] {
					t.Errorf("AccessFor(%s) = %d, %v; want %d", role.Name(), got, ok, tt.want[i])
				}
			}
		})
	}
}

// TestNoRuleAdmitsNoneOrInternal: none withdraws all access, and the
// node's own work never passes through the role gate, so no rule may name
// either; node certificates may make only node calls and reads.
func TestNoRuleAdmitsNoneOrInternal(t *testing.T) {
	nodeActions := map[string]bool{"hsmbroker:ForwardCommand": true, "hsmbroker:ReadIndex": true, "hsmbroker:JoinCluster": true,
		"hsmbroker:RemoveNode": true, "hsmbroker:TransferLeadership": true, "hsmbroker:GetClusterStatus": true, "hsmbroker:WhoAmI": true}
	for action, rule := range rules {
		for role, access := range rule {
			switch {
			case role == RoleNone || role == "" || role == RoleInternal:
				t.Errorf("%s admits role %q", action, role)
			case role == RoleNode && !nodeActions[action]:
				t.Errorf("%s admits node certificates", action)
			case access != ByRole && access != ByPolicy:
				t.Errorf("%s: role %s has access %d", action, role, access)
			case access == ByPolicy && !strings.HasPrefix(action, "kms:") && !strings.HasPrefix(action, "kmip:") && action != ActionReadTDEKey:
				t.Errorf("%s is decided by key policy but names no key action", action)
			}
		}
	}
}

func TestGate(t *testing.T) {
	tests := []struct {
		name   string
		caller Caller
		action string
		want   Verdict
		reason string
	}{
		{"user encrypts", Caller{Principal: "alice", Role: RoleUser}, "kms:Encrypt", Allow, ""},
		{"auditor cannot encrypt", Caller{Principal: "audra", Role: RoleAuditor}, "kms:Encrypt", DenyRole, "role auditor may not perform kms:Encrypt"},
		{"no role", Caller{Principal: "eve"}, "kms:ListKeys", DenyRole, "role none may not perform kms:ListKeys"},
		{"revoked", Caller{Principal: "eve", Role: RoleNone}, "hsmbroker:WhoAmI", DenyRole, "role none may not perform hsmbroker:WhoAmI"},
		{"node makes node calls", Caller{Principal: "n1", Role: RoleNode}, "hsmbroker:ReadIndex", Allow, ""},
		{"node is no client", Caller{Principal: "n1", Role: RoleNode}, "kms:Decrypt", DenyRole, "role node may not perform kms:Decrypt"},
		{"unknown action", Caller{Principal: "root", Role: RoleAdmin}, "kms:Nope", DenyRole, "role admin may not perform kms:Nope"},
		{"unauthenticated", Caller{Role: RoleAdmin}, "kms:ListKeys", DenyUnauthenticated, "unauthenticated"},
		{"open server", Caller{Open: true}, "kms:Nope", Allow, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Gate(tt.caller, tt.action)
			if d.Verdict != tt.want || d.Reason != tt.reason || d.Allowed() != (tt.want == Allow) {
				t.Errorf("Gate = %+v, want verdict %d, reason %q", d, tt.want, tt.reason)
			}
		})
	}
}
