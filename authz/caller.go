package authz

import "fmt"

// Caller is who a request comes from, as the node that receives it sees
// it.
type Caller struct {
	// Principal is the caller's name: a client certificate's, an access
	// key's, or "node" for the node's own work. "" is nobody: the caller
	// is not authenticated.
	Principal string
	// Role is the caller's role; "" is none.
	Role Role
	// Source says where the role came from: record, certificate,
	// credential, default (AWS access keys without a role), node, open or
	// internal. It is reported (WhoAmI), never decided on.
	Source string
	// Open is a server run without identities (tests only): nothing is
	// enforced.
	Open bool
	// Internal is the node's own work: there is no caller to check.
	Internal bool
}

// Verdict is the outcome of a check: allowed, or which check refused.
type Verdict uint8

const (
	// Allow: the request may go on.
	Allow Verdict = iota
	// DenyUnauthenticated: the caller has no principal.
	DenyUnauthenticated
	// DenyRole: the caller's role does not admit the action.
	DenyRole
	// DenyKey: the key's policy and grants do not allow the action.
	DenyKey
)

// Decision is a verdict and, for a refusal, the reason, as an audit line
// records it.
type Decision struct {
	Verdict Verdict
	// Reason says why the request was refused ("" when allowed).
	Reason string
	// Action is the action that was checked; on a key it may differ from
	// the request's (ReEncrypt is checked as kms:ReEncryptFrom and
	// kms:ReEncryptTo).
	Action string
}

// Allowed reports whether d lets the request go on.
func (d Decision) Allowed() bool { return d.Verdict == Allow }

// Gate is the role gate: whether c may ask for action at all. A server
// without identities (Open) admits everyone; a caller without a principal
// is refused as unauthenticated; otherwise the action's rule must admit
// the caller's role.
func Gate(c Caller, action string) Decision {
	d := Decision{Action: action}
	switch {
	case c.Open:
	case c.Principal == "":
		d.Verdict, d.Reason = DenyUnauthenticated, "unauthenticated"
	default:
		if _, ok := AccessFor(action, c.Role); !ok {
			d.Verdict, d.Reason = DenyRole, fmt.Sprintf("role %s may not perform %s", c.Role.Name(), action)
		}
	}
	return d
}
