package main

import (
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/authz"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

// roleNames are the principal roles as the command line names them.
var roleNames = map[authz.Role]pb.PrincipalRole{
	authz.RoleAdmin: pb.PrincipalRole_PRINCIPAL_ROLE_ADMIN, authz.RoleUser: pb.PrincipalRole_PRINCIPAL_ROLE_USER,
	authz.RoleAuditor: pb.PrincipalRole_PRINCIPAL_ROLE_AUDITOR, authz.RoleNone: pb.PrincipalRole_PRINCIPAL_ROLE_NONE,
}

func roleString(r pb.PrincipalRole) string {
	for name, v := range roleNames {
		if v == r {
			return string(name)
		}
	}
	return string(authz.RoleNone)
}

func (a *app) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the principal and role the broker sees for this client",
		Example: `  hsmctl whoami
  HSMBROKER_CERT=./certs/alice.pem HSMBROKER_KEY=./certs/alice-key.pem hsmctl whoami -o json`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Access.WhoAmI(a.ctx, &pb.WhoAmIRequest{})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"principal": resp.GetPrincipal(), "role": roleString(resp.GetRole()),
					"roleSource": resp.GetRoleSource(), "nodeId": resp.GetNodeId()})
			}
			return fields(a.stdout, "Principal", resp.GetPrincipal(), "Role", roleString(resp.GetRole()),
				"Role from", resp.GetRoleSource(), "Answered by", resp.GetNodeId())
		}),
	}
}

func (a *app) principalsCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "principals",
		Short: "Give principals roles that override their certificates' (admin)",
		Long: `A principal's role is the one the cluster records for it, else the one its
client certificate (or AWS access key) names. Records are replicated to
every broker. Role none withdraws all access from a principal whose
certificate is still valid. Nobody can change their own role.`,
	}, a.principalsListCommand(), a.principalsSetRoleCommand(), a.principalsDeleteCommand())
}

func (a *app) principalsListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the principals the cluster records a role for",
		Example: `  hsmctl principals list
  hsmctl principals list -o json | jq -r '.principals[] | select(.role == "none") | .principal'`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Access.ListPrincipals(a.ctx, &pb.ListPrincipalsRequest{})
			if err != nil {
				return err
			}
			type row struct {
				Principal string `json:"principal"`
				Role      string `json:"role"`
				Updated   string `json:"updated"`
			}
			out := []row{}
			var rows [][]string
			for _, p := range resp.GetPrincipals() {
				r := row{p.GetPrincipal(), roleString(p.GetRole()), timeString(p.GetUpdateTime())}
				out = append(out, r)
				rows = append(rows, []string{r.Principal, r.Role, r.Updated})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"principals": out})
			}
			return table(a.stdout, []string{"PRINCIPAL", "ROLE", "UPDATED"}, rows)
		}),
	}
}

func (a *app) principalsSetRoleCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "set-role PRINCIPAL ROLE",
		Short:   "Record a principal's role: admin, user, auditor or none",
		Example: "  hsmctl principals set-role alice auditor\n  hsmctl principals set-role mallory none",
		Args:    exactArgs("PRINCIPAL", "ROLE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			role, ok := roleNames[authz.Role(args[1])]
			if !ok {
				return usageErr(fmt.Sprintf("invalid ROLE %q: valid values are admin, user, auditor, none", args[1]))
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Access.SetPrincipalRole(a.ctx, &pb.SetPrincipalRoleRequest{Principal: args[0], Role: role})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"principal": resp.GetRecord().GetPrincipal(), "role": roleString(resp.GetRecord().GetRole())})
			}
			fmt.Fprintf(a.stdout, "%s now has role %s\n", resp.GetRecord().GetPrincipal(), roleString(resp.GetRecord().GetRole()))
			return nil
		}),
	}
}

func (a *app) principalsDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete PRINCIPAL",
		Short:   "Forget a principal's record; its certificate's role applies again",
		Example: "  hsmctl principals delete mallory",
		Args:    exactArgs("PRINCIPAL"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Access.DeletePrincipalRole(a.ctx, &pb.DeletePrincipalRoleRequest{Principal: args[0]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"principal": args[0], "deleted": true}, "Role record of %s deleted; its certificate's role applies again", args[0])
		}),
	}
}

func (a *app) policyCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "policy",
		Short: "Get and put key policies",
		Long: `Every key has a policy: Allow and Deny statements naming principals, actions
(kms:Encrypt, kms:Decrypt, ...) and optional encryption context conditions.
A Deny wins; with no statement (and no grant) that allows it, a request is
refused. The default policy allows the key's creator and every admin. See
docs/SECURITY.md for the format.`,
	}, a.policyGetCommand(), a.policyPutCommand())
}

func (a *app) policyGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's policy",
		Example: `  hsmctl policy get alias/payments > payments-policy.json
  hsmctl policy get alias/payments -o json | jq .isDefault`,
		Args: exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.GetKeyPolicy(a.ctx, &pb.GetKeyPolicyRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"policy": resp.GetPolicy(), "isDefault": resp.GetIsDefault()})
			}
			fmt.Fprintln(a.stdout, strings.TrimSuffix(resp.GetPolicy(), "\n"))
			return nil
		}),
	}
}

func (a *app) policyPutCommand() *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "put KEY --in FILE|-",
		Short: "Replace a key's policy (admin)",
		Example: `  KEY=$(hsmctl keys describe alias/payments -o json | jq -r .keyId)
  hsmctl policy put "$KEY" --in payments-policy.json`,
		Args: exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if in == "" {
				return usageErr("--in is required (a file, or - for stdin)")
			}
			doc, err := a.readInput(in, 32<<10, "a key policy is at most 32 KiB")
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.PutKeyPolicy(a.ctx, &pb.PutKeyPolicyRequest{KeyId: args[0], Policy: string(doc)}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"keyId": args[0], "policyReplaced": true}, "Policy of key %s replaced", args[0])
		}),
	}
	cmd.Flags().StringVar(&in, "in", "", "the policy document, JSON (- for stdin)")
	return cmd
}

func (a *app) grantsCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "grants",
		Short: "Delegate operations on one key to one principal",
		Long: `A grant lets one principal perform some operations on one key, beyond what
the key's policy allows, optionally only with a given encryption context. A
Deny in the key's policy still wins. Admins create, list and revoke grants;
the grant's retiring principal (or its grantee, when the grant gives
RetireGrant) retires it.`,
	}, a.grantsCreateCommand(), a.grantsListCommand(), a.grantsRevokeCommand(), a.grantsRetireCommand())
}

func (a *app) grantsCreateCommand() *cobra.Command {
	var key, grantee, retiring, name string
	var ops, subset, equals []string
	cmd := &cobra.Command{
		Use:   "create --key KEY --grantee PRINCIPAL --operations OP[,OP...] [--context-subset K=V]... [--context-equals K=V]...",
		Short: "Create a grant (admin)",
		Example: `  KEY=$(hsmctl keys describe alias/payments -o json | jq -r .keyId)
  hsmctl grants create --key "$KEY" --grantee batch --operations Decrypt,GenerateDataKey \
    --context-subset app=batch`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if key == "" || grantee == "" || len(ops) == 0 {
				return usageErr("--key, --grantee and --operations are required")
			}
			if len(subset) > 0 && len(equals) > 0 {
				return usageErr("give --context-subset or --context-equals, not both: a grant constrains the encryption context one way")
			}
			req := &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: grantee, Operations: ops, RetiringPrincipal: retiring, Name: name}
			s, err := parsePairs("--context-subset", subset)
			if err != nil {
				return err
			}
			e, err := parsePairs("--context-equals", equals)
			if err != nil {
				return err
			}
			if s != nil || e != nil {
				req.Constraints = &pb.GrantConstraints{EncryptionContextSubset: s, EncryptionContextEquals: e}
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.CreateGrant(a.ctx, req)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"grantId": resp.GetGrantId(), "grantToken": resp.GetGrantToken()})
			}
			fmt.Fprintln(a.stdout, resp.GetGrantId())
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "the key (key id or key ARN)")
	f.StringVar(&grantee, "grantee", "", "the principal to give the operations to")
	f.StringSliceVar(&ops, "operations", nil, "operations: Encrypt, Decrypt, ReEncryptFrom, ReEncryptTo, GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext, Sign, Verify, GenerateMac, VerifyMac, GetPublicKey, DescribeKey, RetireGrant")
	f.StringVar(&retiring, "retiring-principal", "", "a principal that may retire the grant")
	f.StringVar(&name, "name", "", "a label; creating the same named grant again returns the existing one")
	f.StringArrayVar(&subset, "context-subset", nil, "only requests whose encryption context includes K=V; repeat for more")
	f.StringArrayVar(&equals, "context-equals", nil, "only requests whose encryption context is exactly these pairs; repeat for more")
	return cmd
}

func (a *app) grantsListCommand() *cobra.Command {
	var grantee string
	cmd := &cobra.Command{
		Use:   "list KEY [--grantee PRINCIPAL]",
		Short: "List a key's grants (admin, auditor)",
		Example: `  hsmctl grants list alias/payments
  hsmctl grants list alias/payments --grantee batch -o json | jq -r '.grants[].grantId'`,
		Args: exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			var grants []*pb.Grant
			token := ""
			for {
				resp, err := c.Keys.ListGrants(a.ctx, &pb.ListGrantsRequest{KeyId: args[0], GranteePrincipal: grantee, PageToken: token})
				if err != nil {
					return err
				}
				grants = append(grants, resp.GetGrants()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			type grantJSON struct {
				GrantID           string            `json:"grantId"`
				KeyID             string            `json:"keyId"`
				Name              string            `json:"name,omitempty"`
				Grantee           string            `json:"granteePrincipal"`
				RetiringPrincipal string            `json:"retiringPrincipal,omitempty"`
				Operations        []string          `json:"operations"`
				ContextSubset     map[string]string `json:"encryptionContextSubset,omitempty"`
				ContextEquals     map[string]string `json:"encryptionContextEquals,omitempty"`
				Issuer            string            `json:"issuingPrincipal"`
				Created           string            `json:"createTime"`
			}
			out := []grantJSON{}
			var rows [][]string
			for _, g := range grants {
				j := grantJSON{g.GetGrantId(), g.GetKeyId(), g.GetName(), g.GetGranteePrincipal(), g.GetRetiringPrincipal(), g.GetOperations(),
					g.GetConstraints().GetEncryptionContextSubset(), g.GetConstraints().GetEncryptionContextEquals(), g.GetIssuingPrincipal(), timeString(g.GetCreateTime())}
				out = append(out, j)
				cons := ""
				if len(j.ContextSubset) > 0 {
					cons = "includes " + tagString(j.ContextSubset)
				} else if len(j.ContextEquals) > 0 {
					cons = "equals " + tagString(j.ContextEquals)
				}
				rows = append(rows, []string{j.GrantID, j.Grantee, strings.Join(j.Operations, ","), dash(cons), dash(j.RetiringPrincipal)})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"grants": out})
			}
			return table(a.stdout, []string{"GRANT ID", "GRANTEE", "OPERATIONS", "CONTEXT", "RETIRING PRINCIPAL"}, rows)
		}),
	}
	cmd.Flags().StringVar(&grantee, "grantee", "", "only this principal's grants")
	return cmd
}

func (a *app) grantsRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke KEY GRANT_ID",
		Short: "Revoke a grant (admin)",
		Example: `  KEY=$(hsmctl keys describe alias/payments -o json | jq -r .keyId)
  hsmctl grants list "$KEY" --grantee batch
  hsmctl grants revoke "$KEY" 9f3c2a71d0b84e6a5c1f7e2d3b4a59687f0e1d2c3b4a5968778695a4b3c2d1e0`,
		Args: exactArgs("KEY", "GRANT_ID"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.RevokeGrant(a.ctx, &pb.RevokeGrantRequest{KeyId: args[0], GrantId: args[1]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"keyId": args[0], "grantId": args[1], "revoked": true}, "Grant %s of key %s revoked", args[1], args[0])
		}),
	}
}

func (a *app) grantsRetireCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "retire GRANT_ID",
		Short:   "Retire a grant (its retiring principal, or its grantee)",
		Example: "  hsmctl grants retire 9f3c2a71d0b84e6a5c1f7e2d3b4a59687f0e1d2c3b4a5968778695a4b3c2d1e0",
		Args:    exactArgs("GRANT_ID"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.RetireGrant(a.ctx, &pb.RetireGrantRequest{GrantId: args[0]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"grantId": args[0], "retired": true}, "Grant %s retired", args[0])
		}),
	}
}
