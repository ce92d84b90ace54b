package broker

import (
	"time"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// InflightCalls is the number of gRPC calls the tap admitted that have
// not ended, for tests.
func (s *Service) InflightCalls() int64 { return s.inflight.Load() }

// KeyServer is the gRPC adapter of KeyService over s, for tests that call
// it in process.
func KeyServer(s *Service) pb.KeyServiceServer { return keyServiceServer{s} }

// SetFirstMessageTimeout replaces, for calls admitted from now on, how long
// the tap waits for a call's first message.
func (s *Service) SetFirstMessageTimeout(d time.Duration) { s.firstMessageWait.Store(int64(d)) }

// MaxInflightCalls and MaxInflightPerPrincipal are the tap's bounds.
const (
	MaxInflightCalls        = maxInflightCalls
	MaxInflightPerPrincipal = maxInflightPerPrincipal
	AdminReserve            = adminReserve
)
