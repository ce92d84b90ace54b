package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip"
	"github.com/hsmbroker/hsmbroker/internal/config"
)

// kmipEndpoint is the KMIP server's configuration, resolved from flags or
// the config file; nil when KMIP is not served.
type kmipEndpoint struct {
	addr        string
	tls         *tls.Config
	wrappingKey string
}

// loadKMIPEndpoint reads the server certificate and the client CA.
func loadKMIPEndpoint(addr, certFile, keyFile, caFile, wrappingKey string) (*kmipEndpoint, error) {
	if addr == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("kmip: server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("kmip: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kmip: no certificate in %s", caFile)
	}
	if wrappingKey == "" {
		wrappingKey = config.DefaultKMIPWrappingKey
	}
	return &kmipEndpoint{addr: addr, tls: kmip.ServerTLS(cert, pool), wrappingKey: wrappingKey}, nil
}

// serveKMIPConfig is the kmip section of a serve config.
func serveKMIPConfig(c config.Config) (*kmipEndpoint, error) {
	k := c.KMIP
	cert, key := k.Cert, k.Key
	if cert == "" {
		cert, key = c.TLS.Cert, c.TLS.Key
	}
	return loadKMIPEndpoint(k.Addr, cert, key, c.TLS.CA, k.WrappingKey)
}

// listen binds the KMIP port (nil listener when KMIP is not served).
func (k *kmipEndpoint) listen() (net.Listener, error) {
	if k == nil {
		return nil, nil
	}
	l, err := net.Listen("tcp", k.addr)
	if err != nil {
		return nil, fmt.Errorf("KMIP listener: %w", err)
	}
	return l, nil
}

// run makes sure the wrapping key exists once the node serves, then serves
// KMIP on l until ctx ends.
func (k *kmipEndpoint) run(ctx context.Context, log *slog.Logger, svc *broker.Service, l net.Listener, fatal chan<- error) {
	if k == nil {
		return
	}
	srv, err := kmip.New(kmip.Config{Service: svc, WrappingKey: k.wrappingKey, TLS: k.tls, Log: log})
	if err != nil {
		fatal <- err
		return
	}
	// Serve from the start, held until the node is ready and the wrapping
	// key exists: a client that connects while the node starts completes
	// its handshake and has its requests served once the node can (or,
	// after kmip.HoldWait, General Failure, retry), instead of waiting in
	// the listen queue.
	srv.Hold("starting: waiting to be ready and for its wrapping key " + k.wrappingKey)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
			fatal <- fmt.Errorf("KMIP server: %w", err)
		}
	}()
	defer func() {
		_ = srv.Close()
		<-done
	}()
	for {
		if waitReady(ctx, svc) == nil {
			_, err = svc.KMIP().EnsureWrappingKey(ctx, k.wrappingKey)
			if err == nil {
				break
			}
			log.Warn("cannot make the KMIP wrapping key yet; retrying", "key", k.wrappingKey, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	srv.Release()
	log.Info("serving KMIP", "kmip", l.Addr().String(), "wrapping_key", k.wrappingKey)
	<-ctx.Done()
}

// kmipAddr is the address KMIP clients dial, "" when not served.
func kmipAddr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return dialable(l.Addr())
}
