package cluster

import (
	"slices"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
)

// Principal records the role the cluster gives a principal. A client
// certificate names a default role; a record here overrides it on every
// node, which is how an administrator changes a role, or withdraws all
// access (authz.RoleNone) from a certificate that is still valid, without
// reissuing or revoking certificates. Principals of the AWS endpoint (access
// keys) have no certificate, so their records are their only source of a
// role beyond the default.
type Principal struct {
	Name string `json:"name"`
	// Role is one that authz.Role.Valid accepts: admin, user, auditor or
	// none.
	Role      authz.Role `json:"role"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// maxPrincipals bounds the principal records a cluster holds.
const maxPrincipals = 10000

// SetPrincipalRole records (or replaces) a principal's role.
type SetPrincipalRole struct {
	Name string     `json:"name"`
	Role authz.Role `json:"role"`
	At   time.Time  `json:"at"`
}

// DeletePrincipal forgets a principal's record; a certificate's own role
// applies again.
type DeletePrincipal struct {
	Name string `json:"name"`
}

func (*SetPrincipalRole) Type() CommandType { return TypeSetPrincipalRole }
func (*DeletePrincipal) Type() CommandType  { return TypeDeletePrincipal }

func (c *SetPrincipalRole) validate() error {
	if err := checkID("principal", c.Name); err != nil {
		return err
	}
	if !c.Role.Valid() {
		return invalidCommand("role %q is not one of admin, user, auditor, none", c.Role)
	}
	return checkTime("at", c.At, true)
}

func (c *DeletePrincipal) validate() error { return checkID("principal", c.Name) }

func (c *SetPrincipalRole) apply(d *Data) (any, Event, error) {
	if _, ok := d.Principals[c.Name]; !ok && len(d.Principals) >= maxPrincipals {
		return nil, Event{}, invalidState("the cluster already records %d principals, the most it may", len(d.Principals))
	}
	p := &Principal{Name: c.Name, Role: c.Role, UpdatedAt: utc(c.At)}
	d.Principals[c.Name] = p
	return *p, Event{Type: TypeSetPrincipalRole}, nil
}

func (c *DeletePrincipal) apply(d *Data) (any, Event, error) {
	if _, ok := d.Principals[c.Name]; !ok {
		return nil, Event{}, notFound("principal %q", c.Name)
	}
	delete(d.Principals, c.Name)
	return nil, Event{Type: TypeDeletePrincipal}, nil
}

// Principal returns a principal's record.
func (s *State) Principal(name string) (Principal, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.data.Principals[name]
	if !ok {
		return Principal{}, false
	}
	return *p, true
}

// Principals returns every principal record, sorted by name.
func (s *State) Principals() []Principal {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ps := make([]Principal, 0, len(s.data.Principals))
	for _, p := range s.data.Principals {
		ps = append(ps, *p)
	}
	slices.SortFunc(ps, func(a, b Principal) int { return strings.Compare(a.Name, b.Name) })
	return ps
}
