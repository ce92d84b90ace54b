package authz

// Access says how an action is authorized for a role.
type Access uint8

const (
	// ByPolicy: the role may ask; the key's policy and grants decide.
	ByPolicy Access = iota + 1
	// ByRole: the role alone decides; key policies are not consulted.
	ByRole
)

// Rule maps the roles an action admits to how each is authorized. A role
// missing from it is refused.
type Rule map[Role]Access

// Actions of the TDE key endpoint. ActionReadTDEKey is checked on the
// mount's KMS key as kms:Decrypt (see KeyRequest).
const (
	ActionReadTDEKey   = "hsmbroker:ReadTDEKey"
	ActionReadTDEMount = "hsmbroker:ReadTDEMount"
)

var (
	useRule      = Rule{RoleAdmin: ByPolicy, RoleUser: ByPolicy}
	manageRule   = Rule{RoleAdmin: ByPolicy}
	adminRule    = Rule{RoleAdmin: ByRole}
	readRule     = Rule{RoleAdmin: ByRole, RoleAuditor: ByRole}
	listRule     = Rule{RoleAdmin: ByRole, RoleAuditor: ByRole, RoleUser: ByRole}
	describeRule = Rule{RoleAdmin: ByRole, RoleAuditor: ByRole, RoleUser: ByPolicy}
	anyRoleRule  = Rule{RoleAdmin: ByRole, RoleUser: ByRole, RoleAuditor: ByRole}
	callerRule   = Rule{RoleAdmin: ByRole, RoleUser: ByRole}
	nodeRule     = Rule{RoleNode: ByRole}
	// A node joins before it is a member.
	joinRule = Rule{RoleNode: ByRole, RoleOutsideNode: ByRole}
)

// kmipObjectActions are the KMIP operations that reach an object, and so
// the KMS key that wraps it: kmip:NAME, decided by that key's policy.
var kmipObjectActions = []string{
	"Create", "Register", "Get", "GetAttributes", "GetAttributeList", "Locate", "Activate", "Revoke",
	"Destroy", "AddAttribute", "ModifyAttribute", "DeleteAttribute", "SetAttribute", "Encrypt", "Decrypt",
	"MAC", "CreateKeyPair", "Sign", "SignatureVerify",
}

// rules names every operation a front serves by the action key policies
// use. An action missing here is refused to everyone.
var rules = func() map[string]Rule {
	m := map[string]Rule{
		// Using keys: users and admins, as the key's policy and grants allow.
		"kms:Encrypt":                             useRule,
		"kms:Decrypt":                             useRule,
		"kms:ReEncrypt":                           useRule,
		"kms:GenerateDataKey":                     useRule,
		"kms:GenerateDataKeyWithoutPlaintext":     useRule,
		"kms:GenerateDataKeyPair":                 useRule,
		"kms:GenerateDataKeyPairWithoutPlaintext": useRule,
		"kms:GetPublicKey":                        useRule,
		"kms:Sign":                                useRule,
		"kms:Verify":                              useRule,
		"kms:GenerateMac":                         useRule,
		"kms:VerifyMac":                           useRule,
		"kms:RawEncrypt":                          useRule, // RawService
		"kms:RawDecrypt":                          useRule,
		"kms:GenerateRandom":                      callerRule,
		"kms:DescribeKey":                         describeRule,
		// Managing keys: admins, as the key's policy allows (the default
		// policy allows every admin).
		"kms:UpdateKeyDescription": manageRule,
		"kms:EnableKey":            manageRule,
		"kms:DisableKey":           manageRule,
		"kms:ScheduleKeyDeletion":  manageRule,
		"kms:CancelKeyDeletion":    manageRule,
		"kms:RotateKeyOnDemand":    manageRule,
		"kms:EnableKeyRotation":    manageRule,
		"kms:DisableKeyRotation":   manageRule,
		"kms:TagResource":          manageRule,
		"kms:UntagResource":        manageRule,
		"kms:CreateAlias":          manageRule,
		"kms:UpdateAlias":          manageRule,
		// Deleting an alias is decided by the policy of the key it names,
		// as moving one is by the policies of both keys.
		"kms:DeleteAlias": manageRule,
		"kms:CreateGrant": manageRule,
		"kms:RevokeGrant": manageRule,
		// Admins only, whatever a key's policy says: making keys and putting
		// a key's policy, so that no policy can lock a key away from every
		// admin.
		"kms:CreateKey":    adminRule,
		"kms:PutKeyPolicy": adminRule,
		// Listing key ids and alias names: anyone with a role, as AWS lets
		// any principal of the account list them.
		"kms:ListKeys":    listRule,
		"kms:ListAliases": listRule,
		// Reading metadata: admins and auditors.
		"kms:ListResourceTags":     readRule,
		"kms:ListKeyRotations":     readRule,
		"kms:GetKeyRotationStatus": readRule,
		"kms:GetKeyPolicy":         readRule,
		"kms:ListKeyPolicies":      readRule,
		"kms:ListGrants":           readRule,
		// RetireGrant is for the grant's grantee or retiring principal (or an
		// admin the key's policy lets retire grants); the operation checks.
		"kms:RetireGrant": callerRule,

		"hsmbroker:GetClusterStatus":    {RoleAdmin: ByRole, RoleAuditor: ByRole, RoleNode: ByRole, RoleOutsideNode: ByRole},
		"hsmbroker:CreateJoinToken":     adminRule,
		"hsmbroker:ListJoinTokens":      readRule,
		"hsmbroker:RevokeJoinToken":     adminRule,
		"hsmbroker:Backup":              adminRule,
		"hsmbroker:VerifyBackup":        readRule,
		"hsmbroker:RemoveNode":          {RoleAdmin: ByRole, RoleNode: ByRole}, // a follower passes it on
		"hsmbroker:TransferLeadership":  {RoleAdmin: ByRole, RoleNode: ByRole},
		"hsmbroker:ForwardCommand":      nodeRule,
		"hsmbroker:ReadIndex":           nodeRule,
		"hsmbroker:JoinCluster":         joinRule,
		"hsmbroker:WhoAmI":              {RoleAdmin: ByRole, RoleUser: ByRole, RoleAuditor: ByRole, RoleNode: ByRole, RoleOutsideNode: ByRole},
		"hsmbroker:SetPrincipalRole":    adminRule,
		"hsmbroker:DeletePrincipalRole": adminRule,
		// PKCS#11 data objects (DataObjectService): application data, not keys.
		"hsmbroker:CreateDataObject": callerRule,
		"hsmbroker:ListDataObjects":  callerRule,
		"hsmbroker:DeleteDataObject": callerRule,
		"hsmbroker:ListPrincipals":   readRule,
		"hsmbroker:ReadAuditLog":     readRule,
		// The TDE key endpoint: reading a key needs kms:Decrypt on the
		// mount's KMS key (KeyRequest); managing keys and tokens is for
		// admins.
		ActionReadTDEKey:             useRule,
		ActionReadTDEMount:           callerRule,
		"hsmbroker:TDECreateKey":     adminRule,
		"hsmbroker:TDERotateKey":     adminRule,
		"hsmbroker:TDERetireVersion": adminRule,
		"hsmbroker:TDEIssueToken":    adminRule,
		"hsmbroker:TDERevokeToken":   adminRule,
		"hsmbroker:TDEListKeys":      readRule,
		"hsmbroker:TDEListTokens":    readRule,

		// Audit checkpoints (AuditService).
		"hsmbroker:ListAuditCheckpoints": readRule,

		// Discovering KMIP versions and querying the server reach no object.
		"kmip:DiscoverVersions": anyRoleRule,
		"kmip:Query":            anyRoleRule,
	}
	for _, a := range kmipObjectActions {
		m["kmip:"+a] = useRule
	}
	return m
}()

// Known reports whether action has a rule; an action without one is
// refused to everyone.
func Known(action string) bool {
	_, ok := rules[action]
	return ok
}

// AccessFor is how role is authorized for action, and false when the
// action does not admit the role (or has no rule).
func AccessFor(action string, role Role) (Access, bool) {
	a, ok := rules[action][role]
	return a, ok
}
