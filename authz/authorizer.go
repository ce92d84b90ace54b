package authz

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// Key is what of a key decides access to it.
type Key struct {
	// Creator is the principal that made the key ("" when unknown); the
	// default policy names it.
	Creator string
	// Policy is the policy document put on the key, nil for the default
	// policy.
	Policy []byte
	// ID is the key's id. A policy statement applies to the key only if
	// its Resource is "*", absent, or matches the key's ARN (built from ID
	// only for policies whose statements name key ARNs).
	ID string
}

// KeyRequest is one request's use of one key.
type KeyRequest struct {
	Caller Caller
	// Action is the request's action ("kms:Encrypt").
	Action string
	// Field is the request field that named the key: for ReEncrypt,
	// "DestinationKeyId" is checked as kms:ReEncryptTo under
	// DestinationContext, anything else as kms:ReEncryptFrom under
	// SourceContext.
	Field string
	// EncryptionContext is the request's encryption context; Source- and
	// DestinationContext are ReEncrypt's two.
	EncryptionContext  map[string]string
	SourceContext      map[string]string
	DestinationContext map[string]string
}

// keyAction is the action and encryption context r is checked for on its
// key: ReEncrypt needs ReEncryptFrom on the source key (named by
// SourceKeyId or by the ciphertext) and ReEncryptTo on the destination;
// reading a TDE key needs Decrypt on its mount's key.
func (r KeyRequest) keyAction() (string, map[string]string) {
	switch r.Action {
	case "kms:ReEncrypt":
		if r.Field == "DestinationKeyId" {
			return "kms:ReEncryptTo", r.DestinationContext
		}
		return "kms:ReEncryptFrom", r.SourceContext
	case ActionReadTDEKey:
		return "kms:Decrypt", r.EncryptionContext
	}
	return r.Action, r.EncryptionContext
}

// Authorizer decides access to keys in one account: it evaluates key
// policies (parsed once and cached by their text) and grants. It is safe
// for concurrent use.
type Authorizer struct {
	account string
	keyARN  func(id string) string

	mu       sync.Mutex
	policies map[string]*Policy
}

// maxCachedPolicies bounds the cache; when full it starts again empty.
const maxCachedPolicies = 1024

// NewAuthorizer returns an Authorizer for account (12 digits), the
// account of the ARNs its policies name; keyARN gives a key's ARN, which
// the Resource of a policy statement is matched against.
func NewAuthorizer(account string, keyARN func(id string) string) *Authorizer {
	return &Authorizer{account: account, keyARN: keyARN}
}

// defaultPolicyFormat is AWS KMS's default key policy, formatted with the
// account id and further statements (each starting ", {").
const defaultPolicyFormat = `{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : "arn:aws:iam::%s:root"
    },
    "Action" : "kms:*",
    "Resource" : "*"
  }%s ]
}`

// DefaultPolicy is the policy a key made by creator has until one is put:
// AWS KMS's default key policy, which gives the account full access to the
// key (here the account stands for every principal with the admin role),
// and, when creator is known, a statement for that principal.
func (a *Authorizer) DefaultPolicy(creator string) string {
	if creator == "" {
		return fmt.Sprintf(defaultPolicyFormat, a.account, "")
	}
	arn, _ := json.Marshal(fmt.Sprintf("arn:aws:iam::%s:user/%s", a.account, creator))
	return fmt.Sprintf(defaultPolicyFormat, a.account, fmt.Sprintf(`, {
    "Sid" : "Allow the key's creator",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : %s
    },
    "Action" : "kms:*",
    "Resource" : "*"
  }`, arn))
}

// PolicyOf is k's parsed policy: the one put, or the default one (cached
// by creator, since that is all that varies; no put policy starts with a
// NUL byte).
func (a *Authorizer) PolicyOf(k Key) (*Policy, error) {
	if len(k.Policy) == 0 {
		return a.cached("\x00default\x00"+k.Creator, func() string { return a.DefaultPolicy(k.Creator) })
	}
	doc := string(k.Policy)
	return a.cached(doc, func() string { return doc })
}

// cached returns the parsed policy cached under name, parsing doc() on a
// miss.
func (a *Authorizer) cached(name string, doc func() string) (*Policy, error) {
	a.mu.Lock()
	p, ok := a.policies[name]
	a.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := ParsePolicy(doc())
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.policies == nil || len(a.policies) >= maxCachedPolicies {
		a.policies = map[string]*Policy{}
	}
	a.policies[name] = p
	a.mu.Unlock()
	return p, nil
}

// Allows evaluates k's policy and then the caller's grants on k (grants is
// called only when the policy has nothing to say) for action under
// encryption context ec. A Deny statement wins over everything; then an
// Allow statement or a grant lets the request through; nothing else does.
// A refusal comes with its reason.
func (a *Authorizer) Allows(k Key, c Caller, action string, ec map[string]string, grants func() []Grant) (bool, string) {
	pol, err := a.PolicyOf(k)
	if err != nil {
		return false, "the key policy cannot be evaluated (" + err.Error() + "); an admin must put a new one"
	}
	arn := ""
	if pol.namesKeys {
		arn = a.keyARN(k.ID)
	}
	switch pol.Decide(a.account, arn, c, action, ec) {
	case EffectDeny:
		return false, "a Deny statement in the key policy applies"
	case EffectAllow:
		return true, ""
	}
	op := strings.TrimPrefix(action, "kms:")
	if grants != nil {
		for _, g := range grants() {
			if g.Allows(op, ec) {
				return true, ""
			}
		}
	}
	return false, "no statement in the key policy and no grant allows it"
}

// DecideKey is the key check for a request that reaches key k: the node's
// own work passes; an unauthenticated caller is refused; a server without
// identities lets everything through; an action the role alone decides
// (ByRole) passes; one decided by policy goes to Allows; a role the action
// does not admit is refused.
func (a *Authorizer) DecideKey(r KeyRequest, k Key, grants func() []Grant) Decision {
	c := r.Caller
	d := Decision{Action: r.Action}
	switch {
	case c.Internal:
		return d
	case c.Principal == "" && !c.Open:
		d.Verdict, d.Reason = DenyUnauthenticated, "unauthenticated"
		return d
	case c.Open:
		return d
	}
	mode, _ := AccessFor(r.Action, c.Role)
	switch mode {
	case ByRole:
		return d
	case ByPolicy:
	default:
		d.Verdict, d.Reason = DenyRole, "role "+c.Role.Name()
		return d
	}
	action, ec := r.keyAction()
	d.Action = action
	if ok, why := a.Allows(k, c, action, ec, grants); !ok {
		d.Verdict, d.Reason = DenyKey, why
	}
	return d
}
