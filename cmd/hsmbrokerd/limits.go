package main

import (
	"fmt"
	"net"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// Connection bounds of the node's servers (internal/netlimit). Each
// connection holds a file descriptor until it is closed; without a bound,
// a client that opens connections faster than the server closes them
// (silent ones at the end of their handshake or header timeout, idle
// keep-alives at the end of their idle timeout) takes the process to its
// descriptor limit, after which the node refuses every connection on
// every port, Raft's included. The sum of the bounds below, with the KMIP
// server's 256, stays well under the 65536 descriptors of
// deploy/hsmbrokerd.service. Clients beyond a bound wait in the kernel's
// accept queue.
var (
	// grpcLimits: every client and peer node keeps its connections open,
	// so the bound is generous. Only MaxConns applies: the gRPC server has
	// its own timeouts (broker.NewGRPCServer).
	grpcLimits = netlimit.Limits{MaxConns: 4096}
	// metricsLimits: scrapers and health probes, a few at a time, each
	// asking one short GET.
	metricsLimits = netlimit.Limits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxConns: 128, MaxHeaderBytes: 16 << 10}
)

// listenLimited binds addr for the named server, serving at most
// l.MaxConns connections at once.
func listenLimited(name, addr string, l netlimit.Limits) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	return netlimit.Listener(lis, l), nil
}
