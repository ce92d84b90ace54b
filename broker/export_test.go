package broker

import pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"

// InflightCalls is the number of gRPC calls the tap admitted that have
// not ended, for tests.
func (s *Service) InflightCalls() int64 { return s.inflight.Load() }

// KeyServer is the gRPC adapter of KeyService over s, for tests that call
// it in process.
func KeyServer(s *Service) pb.KeyServiceServer { return keyServiceServer{s} }

// AuditLogHead is this node's audit chain head, for tests (see audit.Log.Head); zeros
// without an audit log.
func (s *Service) AuditLogHead() (segment string, seq uint64, hash string) {
	if s.cfg.AuditLog == nil {
		return "", 0, ""
	}
	return s.cfg.AuditLog.Head()
}

// AuditLogErr, for tests, is why this node's audit log refuses lines, nil while it
// accepts them (or without an audit log).
func (s *Service) AuditLogErr() error {
	if s.cfg.AuditLog == nil {
		return nil
	}
	return s.cfg.AuditLog.Err()
}
