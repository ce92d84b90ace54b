package broker

import (
	"bytes"
	"context"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

var rolesToPB = map[authz.Role]pb.PrincipalRole{
	authz.RoleAdmin: pb.PrincipalRole_PRINCIPAL_ROLE_ADMIN, authz.RoleUser: pb.PrincipalRole_PRINCIPAL_ROLE_USER,
	authz.RoleAuditor: pb.PrincipalRole_PRINCIPAL_ROLE_AUDITOR, authz.RoleNone: pb.PrincipalRole_PRINCIPAL_ROLE_NONE,
	"": pb.PrincipalRole_PRINCIPAL_ROLE_NONE,
}

func roleFromPB(r pb.PrincipalRole) (authz.Role, bool) {
	for name, v := range rolesToPB {
		if v == r && name != "" {
			return name, true
		}
	}
	return "", false
}

// WhoAmI returns the caller's principal and role.
func (s *Service) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	resp := &pb.WhoAmIResponse{NodeId: s.node.ID(), Principal: Principal(ctx)}
	if rq := requestOf(ctx); rq != nil {
		id, _ := rq.identity()
		resp.Principal, resp.Role, resp.RoleSource = id.Principal, rolesToPB[id.Role], id.Source
	}
	return resp, nil
}

// callerIs reports whether the request comes from principal p.
func callerIs(ctx context.Context, p string) bool {
	rq := requestOf(ctx)
	if rq == nil {
		return false
	}
	id, _ := rq.identity()
	return !id.Open && id.Principal == p
}

// SetPrincipalRole records a principal's role.
func (s *Service) SetPrincipalRole(ctx context.Context, req *pb.SetPrincipalRoleRequest) (*pb.SetPrincipalRoleResponse, error) {
	if err := checkPrincipalName("Principal", req.GetPrincipal(), true); err != nil {
		return nil, err
	}
	role, ok := roleFromPB(req.GetRole())
	if !ok {
		return nil, errInvalidArg(ExcValidation, "invalid Role: must be admin, user, auditor or none")
	}
	// A role that gives something goes to a name that may be made today,
	// or to a principal that has a record already; role none, which takes
	// everything away, goes to any name, so that a principal named before
	// the rule can still be shut out.
	if problem := authz.NewPrincipalProblem(req.GetPrincipal()); problem != "" && role != authz.RoleNone {
		if _, known := s.node.State().Principal(req.GetPrincipal()); !known {
			return nil, &keys.FieldError{Field: "Principal", Problem: problem}
		}
	}
	if callerIs(ctx, req.GetPrincipal()) {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "a principal cannot change its own role; ask another admin")
	}
	res, err := s.apply(ctx, &cluster.SetPrincipalRole{Name: req.GetPrincipal(), Role: role, At: s.now()})
	if err != nil {
		return nil, err
	}
	p, _ := res.(cluster.Principal)
	return &pb.SetPrincipalRoleResponse{Record: principalPB(p)}, nil
}

// DeletePrincipalRole forgets a principal's record.
func (s *Service) DeletePrincipalRole(ctx context.Context, req *pb.DeletePrincipalRoleRequest) (*pb.DeletePrincipalRoleResponse, error) {
	if err := checkPrincipalName("Principal", req.GetPrincipal(), true); err != nil {
		return nil, err
	}
	if callerIs(ctx, req.GetPrincipal()) {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "a principal cannot change its own role; ask another admin")
	}
	if _, ok := s.node.State().Principal(req.GetPrincipal()); !ok {
		return nil, errNotFound("principal %s has no record", req.GetPrincipal())
	}
	if _, err := s.apply(ctx, &cluster.DeletePrincipal{Name: req.GetPrincipal()}); err != nil {
		return nil, err
	}
	return &pb.DeletePrincipalRoleResponse{}, nil
}

func principalPB(p cluster.Principal) *pb.PrincipalRecord {
	return &pb.PrincipalRecord{Principal: p.Name, Role: rolesToPB[p.Role], UpdateTime: ts(p.UpdatedAt)}
}

// ListPrincipals lists the principal records.
func (s *Service) ListPrincipals(ctx context.Context, _ *pb.ListPrincipalsRequest) (*pb.ListPrincipalsResponse, error) {
	resp := &pb.ListPrincipalsResponse{}
	for _, p := range s.node.State().Principals() {
		resp.Principals = append(resp.Principals, principalPB(p))
	}
	return resp, nil
}

// ReadAuditLog returns whole lines of this node's audit log.
func (s *Service) ReadAuditLog(ctx context.Context, req *pb.ReadAuditLogRequest) (*pb.ReadAuditLogResponse, error) {
	log := s.cfg.AuditLog
	if log == nil || log.Path() == "" {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "node %s keeps no audit log file", s.node.ID())
	}
	n := int(req.GetMaxBytes())
	switch {
	case n == 0:
		n = 1 << 20
	case n < 0 || n > 4<<20:
		return nil, errInvalidArg(ExcValidation, "invalid MaxBytes: must be 0 (1 MiB) to 4 MiB, got %d", n)
	}
	if req.GetOffset() < 0 {
		return nil, errInvalidArg(ExcValidation, "invalid Offset: must not be negative")
	}
	buf := make([]byte, n)
	got, size, err := log.ReadAt(buf, req.GetOffset())
	if err != nil {
		return nil, err
	}
	buf = buf[:got]
	// Whole lines only, unless one line fills the whole chunk.
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	}
	return &pb.ReadAuditLogResponse{Data: buf, NextOffset: req.GetOffset() + int64(len(buf)), Size: size, NodeId: s.node.ID()}, nil
}
