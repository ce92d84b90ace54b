package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// kmsEndpoint is the AWS KMS JSON endpoint (and optionally the XKS proxy
// API) as dev or serve configured it.
type kmsEndpoint struct {
	cfg config.KMS // its Cert and Key already resolved (empty: plain HTTP)
	// tls serves HTTPS; nil serves plain HTTP.
	tls         *tls.Config
	credentials *awskms.FileCredentials
	// xks, when set, also serves the XKS proxy API with these credentials.
	xks *awskms.FileCredentials
	// limits bound connections and times (kmsLimits).
	limits netlimit.Limits
}

// loadKMSEndpoint reads the credentials files (and the certificate, when
// c.Cert is set), so that a missing or loose file fails before anything
// starts.
func loadKMSEndpoint(c config.KMS) (*kmsEndpoint, error) {
	k := &kmsEndpoint{cfg: c, limits: kmsLimits}
	var err error
	if k.credentials, err = awskms.LoadCredentialsFile(c.CredentialsFile); err != nil {
		return nil, err
	}
	if c.XKS.CredentialsFile != "" {
		if k.xks, err = awskms.LoadCredentialsFile(c.XKS.CredentialsFile); err != nil {
			return nil, err
		}
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("HTTPS certificate %s: %w", c.Cert, err)
		}
		// TLS 1.2 as well as 1.3: AWS KMS and older AWS CLIs and SDKs
		// still negotiate 1.2.
		k.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	return k, nil
}

// handler makes the endpoint's HTTP handler over svc.
func (k *kmsEndpoint) handler(svc *broker.Service, log *slog.Logger) (*awskms.Handler, error) {
	cfg := awskms.Config{Service: svc, Credentials: k.credentials, Hosts: k.cfg.Hosts, Logger: log}
	if k.xks != nil {
		cfg.XKS = &awskms.XKSConfig{PathPrefix: k.cfg.XKS.PathPrefix, Credentials: k.xks, Region: k.cfg.XKS.Region}
	}
	h, err := awskms.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("AWS KMS endpoint: %w", err)
	}
	return h, nil
}

// server is the endpoint's HTTP server, with netlimit's default read,
// write and idle timeouts.
func (k *kmsEndpoint) server(h *awskms.Handler, log *slog.Logger) *netlimit.Server {
	srv := netlimit.NewHTTPServer(h, k.limits, log)
	srv.OnShutdown(h.Close)
	return srv
}

// listen binds the endpoint's address, with TLS when configured, serving
// at most netlimit.DefaultMaxConns connections at once.
func (k *kmsEndpoint) listen() (net.Listener, error) {
	// Bounded before TLS, so that handshakes count too.
	lis, err := listenLimited("AWS KMS", k.cfg.Addr, k.limits)
	if err != nil {
		return nil, err
	}
	if k.tls != nil {
		return tls.NewListener(lis, k.tls), nil
	}
	return lis, nil
}

// url is how a local client reaches the endpoint bound at addr.
func (k *kmsEndpoint) url(addr net.Addr) string {
	scheme := "https"
	if k.tls == nil {
		scheme = "http"
	}
	return scheme + "://" + dialable(addr)
}

// reloadOnHangup rereads the AWS credentials files on each SIGHUP until
// ctx ends, so that access keys can be added and retired without a
// restart (systemctl reload). A file that fails to load leaves the keys
// loaded before in use. Without an AWS endpoint, SIGHUP is only logged:
// it must not stop the daemon, as it would by default.
func reloadOnHangup(ctx context.Context, log *slog.Logger, k *kmsEndpoint) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if k == nil {
			log.Info("SIGHUP: nothing to reload")
			continue
		}
		err := k.credentials.Reload()
		if k.xks != nil {
			err = errors.Join(err, k.xks.Reload())
		}
		if err != nil {
			log.Error("SIGHUP: credentials not reloaded; the keys loaded before stay in use", "err", err)
			continue
		}
		log.Info("SIGHUP: credentials reloaded", "file", k.cfg.CredentialsFile, "xks_file", k.cfg.XKS.CredentialsFile)
	}
}

// isLoopback reports whether addr binds only the loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
