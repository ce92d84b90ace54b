package broker

// InflightCalls is the number of gRPC calls the tap admitted that have
// not ended, for tests.
func (s *Service) InflightCalls() int64 { return s.inflight.Load() }
