package main

import (
	"fmt"
	"net"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/vault"
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
	// vaultLimits: databases reading their TDE keys.
	vaultLimits = withSourceShare(getLimits(netlimit.DefaultMaxConns))
	// kmsLimits: the AWS KMS endpoint, netlimit's defaults. A request
	// whose headers name a known access key has its body read for up to
	// ReadTimeout (30 s) before its signature can be checked, and knowing
	// an access key id is enough for that: one address could hold every
	// slot with slow bodies.
	kmsLimits = withSourceShare(netlimit.Limits{})
	// metricsLimits: scrapers and health probes, a few at a time.
	metricsLimits = getLimits(128)
)

// withSourceShare is l with one source address allowed a quarter of its
// connections: clients at four addresses at least are needed to hold them
// all. Behind a proxy that hides the clients' addresses, all of them share
// the proxy's quarter.
func withSourceShare(l netlimit.Limits) netlimit.Limits {
	l.MaxConnsPerSource = max(1, l.WithDefaults().MaxConns/4)
	return l
}

// getLimits are the bounds of a server whose every request is one small
// GET (the TDE key endpoint, metrics and health): its headers are the
// whole request, and vault.MaxHeaderBytes is room enough for them.
func getLimits(maxConns int) netlimit.Limits {
	return netlimit.Limits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxConns: maxConns, MaxHeaderBytes: vault.MaxHeaderBytes}
}

// listenLimited binds addr for the named server, serving at most
// l.MaxConns connections at once.
func listenLimited(name, addr string, l netlimit.Limits) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	return netlimit.Listener(lis, l), nil
}
