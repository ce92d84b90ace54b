package broker

import pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"

// InflightCalls is the number of gRPC calls the tap admitted that have
// not ended, for tests.
func (s *Service) InflightCalls() int64 { return s.inflight.Load() }

// KeyServer is the gRPC adapter of KeyService over s, for tests that call
// it in process.
func KeyServer(s *Service) pb.KeyServiceServer { return keyServiceServer{s} }
