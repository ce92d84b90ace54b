package authz

import (
	"crypto/x509"
	"fmt"
)

// Role is what a caller may do, as a client certificate's organizational
// unit, an AWS access key or a principal record names it. The zero value
// is no role, which admits nothing.
type Role string

// Roles of callers. Admin, user and auditor are given to principals (by a
// client certificate, an access key or a principal record; modelled on
// CloudHSM's crypto officer, crypto user and auditor); none is a record
// that withdraws all access; node and internal are never given to a
// principal: they are the broker's own identities.
const (
	RoleAdmin   Role = "admin"   // keys, policies and cluster membership
	RoleUser    Role = "user"    // use of keys
	RoleAuditor Role = "auditor" // read-only access
	// RoleNone denies everything.
	RoleNone Role = "none"
	// RoleNode is a cluster member's certificate: it may make the calls
	// nodes make to each other and nothing else.
	RoleNode Role = "node"
	// RoleOutsideNode is a node certificate whose node is not in the
	// cluster's configuration: one about to join, or one removed (its
	// certificate stays valid until it expires). It may ask to join and
	// read the cluster's status, nothing a member may do.
	RoleOutsideNode Role = "node-outside-cluster"
	// RoleInternal is the node's own work (rotation, heartbeat, join,
	// restore), which no caller asked for.
	RoleInternal Role = "internal"
)

// Issuable reports whether r is a role a client certificate or an access
// key may carry: admin, user or auditor.
func (r Role) Issuable() bool {
	switch r {
	case RoleAdmin, RoleUser, RoleAuditor:
		return true
	}
	return false
}

// Valid reports whether r is a role a principal record can hold: one
// Issuable, or none.
func (r Role) Valid() bool { return r.Issuable() || r == RoleNone }

// Name is r as messages print it: "none" for the zero value.
func (r Role) Name() string {
	if r == "" {
		return string(RoleNone)
	}
	return string(r)
}

// ParseRole reads a role a certificate or access key may carry (admin,
// user or auditor), as a flag or a file names it.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Issuable() {
		return r, nil
	}
	return "", fmt.Errorf("authz: role %q is not one of %s, %s, %s", s, RoleAdmin, RoleUser, RoleAuditor)
}

// RoleOf returns the role a client certificate names in its subject's
// first organizational unit, where internal/pki writes it ("" if none). It
// is what the certificate says, not yet a role to accept: see Issuable.
func RoleOf(cert *x509.Certificate) Role {
	if len(cert.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	return Role(cert.Subject.OrganizationalUnit[0])
}
