package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/vault"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// vaultEndpoint is the TDE key endpoint (Vault KV version 2 reads, see
// broker/vault): HTTPS with the node certificate under serve, plain HTTP
// on loopback under dev.
type vaultEndpoint struct {
	addr   string
	tls    *tls.Config // nil: plain HTTP (dev, loopback only)
	limits netlimit.Limits
}

// newVaultEndpoint configures the endpoint; certFile and keyFile empty
// means plain HTTP, which only a loopback address may serve.
func newVaultEndpoint(addr, certFile, keyFile string) (*vaultEndpoint, error) {
	v := &vaultEndpoint{addr: addr, limits: vaultLimits}
	if certFile == "" {
		if !isLoopback(addr) {
			return nil, fmt.Errorf("vault: %s is not a loopback address: plain HTTP would send keys across the network", addr)
		}
		return v, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("vault: load the node certificate: %w", err)
	}
	// Databases' HTTP clients (libcurl) do not present client
	// certificates; the token authenticates.
	v.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	return v, nil
}

func (v *vaultEndpoint) listen() (net.Listener, error) {
	// Bounded before TLS, so that handshakes count too.
	lis, err := listenLimited("TDE key endpoint", v.addr, v.limits)
	if err != nil {
		return nil, err
	}
	if v.tls != nil {
		lis = tls.NewListener(lis, v.tls)
	}
	return lis, nil
}

// server is the endpoint's HTTP server: every size and time bounded.
func (v *vaultEndpoint) server(svc *broker.Service, log *slog.Logger) *netlimit.Server {
	log = log.With("front", broker.FrontVault)
	h := vault.New(svc.TDE(), log)
	srv := netlimit.NewHTTPServer(h, v.limits, log)
	srv.OnShutdown(h.Close)
	return srv
}

func (v *vaultEndpoint) url(a net.Addr) string {
	if v.tls != nil {
		return "https://" + dialable(a)
	}
	return "http://" + dialable(a)
}

// serveVault starts the endpoint; it returns the server (nil when not
// configured) and its URL.
func serveVault(v *vaultEndpoint, lis net.Listener, svc *broker.Service, log *slog.Logger, fatal chan<- error) (*netlimit.Server, string) {
	if v == nil {
		return nil, ""
	}
	srv := v.server(svc, log)
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("TDE key endpoint: %w", err)
		}
	}()
	return srv, v.url(lis.Addr())
}

// devVault prepares the dev node's TDE mount once it serves: the KMS key
// alias/tde (made if missing) and a token for the dev admin, issued on
// the first start and kept in tokenFile (0600). It returns the token.
func devVault(ep endpoints, caCert, adminCert, adminKey, tokenFile string) (string, error) {
	if b, err := os.ReadFile(tokenFile); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Endpoints: []string{ep.grpc}, CAFile: caCert, CertFile: adminCert, KeyFile: adminKey})
	if err != nil {
		return "", err
	}
	defer c.Close()
	alias := "alias/" + broker.DefaultTDEMount
	if _, err := c.Keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: alias}); status.Code(err) == codes.NotFound {
		if _, err := c.Keys.CreateKey(ctx, &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			KeyUsage: pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, AliasName: alias,
			Description: "wraps the TDE keys of mount " + broker.DefaultTDEMount}); err != nil {
			return "", fmt.Errorf("create %s: %w", alias, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("look up %s: %w", alias, err)
	}
	resp, err := c.TDE.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: devAdmin})
	if err != nil {
		return "", fmt.Errorf("issue the dev TDE token: %w", err)
	}
	if err := pki.WriteFileAtomic(tokenFile, []byte(resp.GetToken()+"\n"), 0o600); err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}
