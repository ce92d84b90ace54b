package authz

import "slices"

// Grant is what a grant gives its grantee on one key, as the key check
// matches it against a request: AWS KMS operation names and at most one
// encryption-context constraint. Which grants a caller holds on a key is
// the store's business (cluster.Grant, which converts to this).
type Grant struct {
	// Operations are AWS KMS operation names without the kms: prefix
	// ("Encrypt", "Decrypt", ...).
	Operations []string
	// ContextEquals admits a request only when its encryption context is
	// exactly these pairs; ContextSubset when its context includes them.
	// Empty means no constraint.
	ContextEquals map[string]string
	ContextSubset map[string]string
}

// Allows reports whether g gives op (an operation name without the kms:
// prefix) under encryption context ec.
func (g Grant) Allows(op string, ec map[string]string) bool {
	if !slices.Contains(g.Operations, op) {
		return false
	}
	if len(g.ContextEquals) > 0 {
		if len(ec) != len(g.ContextEquals) {
			return false
		}
		for k, v := range g.ContextEquals {
			if got, ok := ec[k]; !ok || got != v {
				return false
			}
		}
	}
	for k, v := range g.ContextSubset {
		if got, ok := ec[k]; !ok || got != v {
			return false
		}
	}
	return true
}
