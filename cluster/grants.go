package cluster

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/keys"
)

// Grant delegates some operations on one key to one principal, as an AWS
// KMS grant does. The cluster stores grants and keeps them consistent with
// their keys (a deleted key takes its grants with it); what the operation
// names mean, and how constraints are matched against a request, is
// authz's business (Terms).
type Grant struct {
	ID    string `json:"id"`
	KeyID string `json:"key_id"`
	// Name is the caller's optional label for the grant.
	Name string `json:"name"`
	// Grantee is the principal the grant gives the operations to.
	Grantee string `json:"grantee"`
	// RetiringPrincipal may retire the grant besides the grantee ("" for
	// none).
	RetiringPrincipal string `json:"retiring_principal"`
	// Operations are AWS KMS operation names ("Encrypt", "Decrypt", ...),
	// sorted and distinct.
	Operations []string `json:"operations"`
	// At most one of the two constraints is set. ContextEquals admits a
	// request only when its encryption context is exactly these pairs;
	// ContextSubset when its context includes them.
	ContextEquals map[string]string `json:"context_equals"`
	ContextSubset map[string]string `json:"context_subset"`
	// Issuer is the principal that created the grant.
	Issuer    string    `json:"issuer"`
	CreatedAt time.Time `json:"created_at"`
}

// Clone returns a deep copy of g.
func (g Grant) Clone() Grant {
	g.Operations = slices.Clone(g.Operations)
	g.ContextEquals = maps.Clone(g.ContextEquals)
	g.ContextSubset = maps.Clone(g.ContextSubset)
	return g
}

// Terms is what g gives its grantee, as the key check matches it against
// a request (authz.Grant.Allows).
func (g Grant) Terms() authz.Grant {
	return authz.Grant{Operations: g.Operations, ContextEquals: g.ContextEquals, ContextSubset: g.ContextSubset}
}

// Limits on grants, as in AWS KMS where they exist.
const (
	maxGrantsPerKey     = 1000
	maxGrantOperations  = 32
	maxGrantOperationLn = 64
)

// CreateGrant adds a grant. The key must exist and not be pending deletion;
// the grant id must be new.
type CreateGrant struct {
	Grant Grant `json:"grant"`
}

// RemoveGrant deletes a grant, whether revoked by an administrator or
// retired by its grantee: the authorization layer tells the two apart, the
// state does not. KeyID, when set, must be the grant's key. It works in
// every key state, so that grants on a key pending deletion can still be
// withdrawn.
type RemoveGrant struct {
	GrantID string `json:"grant_id"`
	KeyID   string `json:"key_id"`
}

func (*CreateGrant) Type() CommandType { return TypeCreateGrant }
func (*RemoveGrant) Type() CommandType { return TypeRemoveGrant }

func checkContextMap(what string, m map[string]string) error {
	if err := keys.ValidateContext(keys.EncryptionContext(m)); err != nil {
		return invalidCommand("%s: %v", what, err)
	}
	return nil
}

func (c *CreateGrant) validate() error {
	g := &c.Grant
	if err := checkID("grant id", g.ID); err != nil {
		return err
	}
	if err := checkID("key id", g.KeyID); err != nil {
		return err
	}
	if err := checkID("grantee", g.Grantee); err != nil {
		return err
	}
	for _, f := range []struct{ what, v string }{{"grant name", g.Name}, {"retiring principal", g.RetiringPrincipal}, {"issuer", g.Issuer}} {
		if err := checkText(f.what, f.v, maxIDLen); err != nil {
			return err
		}
	}
	if len(g.Operations) == 0 || len(g.Operations) > maxGrantOperations {
		return invalidCommand("a grant needs 1 to %d operations, not %d", maxGrantOperations, len(g.Operations))
	}
	for i, op := range g.Operations {
		if err := checkID("grant operation", op); err != nil {
			return err
		}
		if len(op) > maxGrantOperationLn || strings.ContainsAny(op, ":*? ") {
			return invalidCommand("grant operation %q is not an operation name", op)
		}
		if i > 0 && g.Operations[i-1] >= op {
			return invalidCommand("grant operations must be sorted and distinct")
		}
	}
	if len(g.ContextEquals) > 0 && len(g.ContextSubset) > 0 {
		return invalidCommand("a grant has at most one of the two encryption context constraints")
	}
	if err := checkContextMap("context_equals", g.ContextEquals); err != nil {
		return err
	}
	if err := checkContextMap("context_subset", g.ContextSubset); err != nil {
		return err
	}
	return checkTime("grant created_at", g.CreatedAt, true)
}

func (c *RemoveGrant) validate() error {
	if err := checkID("grant id", c.GrantID); err != nil {
		return err
	}
	if c.KeyID != "" {
		return checkID("key id", c.KeyID)
	}
	return nil
}

func normalizeGrant(g *Grant) {
	g.CreatedAt = utc(g.CreatedAt)
	if len(g.ContextEquals) == 0 {
		g.ContextEquals = nil
	}
	if len(g.ContextSubset) == 0 {
		g.ContextSubset = nil
	}
}

func (c *CreateGrant) apply(d *Data) (any, Event, error) {
	if _, ok := d.Grants[c.Grant.ID]; ok {
		return nil, Event{}, alreadyExists("grant %q", c.Grant.ID)
	}
	k, err := mutableKey(d, c.Grant.KeyID)
	if err != nil {
		return nil, Event{}, err
	}
	n := 0
	for _, g := range d.Grants {
		if g.KeyID == k.ID {
			n++
		}
	}
	if n >= maxGrantsPerKey {
		return nil, Event{}, invalidState("key %q already has %d grants, the most a key may have", k.ID, n)
	}
	g := c.Grant.Clone()
	normalizeGrant(&g)
	d.Grants[g.ID] = &g
	return g.Clone(), Event{Type: TypeCreateGrant, KeyID: k.ID}, nil
}

func (c *RemoveGrant) apply(d *Data) (any, Event, error) {
	g, ok := d.Grants[c.GrantID]
	if !ok || (c.KeyID != "" && g.KeyID != c.KeyID) {
		return nil, Event{}, notFound("grant %q", c.GrantID)
	}
	delete(d.Grants, c.GrantID)
	return nil, Event{Type: TypeRemoveGrant, KeyID: g.KeyID}, nil
}

// deleteGrantsOf drops every grant on a key; DeleteKey calls it.
func deleteGrantsOf(d *Data, keyID string) {
	for id, g := range d.Grants {
		if g.KeyID == keyID {
			delete(d.Grants, id)
		}
	}
}

// Grant returns the grant with the given id.
func (s *State) Grant(id string) (Grant, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.data.Grants[id]
	if !ok {
		return Grant{}, false
	}
	return g.Clone(), true
}

// Grants returns the grants on a key, sorted by id. With grantee set, only
// that principal's.
func (s *State) Grants(keyID, grantee string) []Grant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var gs []Grant
	for _, g := range s.data.Grants {
		if g.KeyID == keyID && (grantee == "" || g.Grantee == grantee) {
			gs = append(gs, g.Clone())
		}
	}
	slices.SortFunc(gs, func(a, b Grant) int { return strings.Compare(a.ID, b.ID) })
	return gs
}

// RetirableGrants returns the grants, on any key, that principal may retire
// as their retiring principal, sorted by id.
func (s *State) RetirableGrants(principal string) []Grant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var gs []Grant
	for _, g := range s.data.Grants {
		if principal != "" && g.RetiringPrincipal == principal {
			gs = append(gs, g.Clone())
		}
	}
	slices.SortFunc(gs, func(a, b Grant) int { return strings.Compare(a.ID, b.ID) })
	return gs
}
