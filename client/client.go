package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Client is a connection to a cluster of brokers. Its service clients are
// safe for concurrent use; each call goes to one endpoint, chosen and
// retried as the package doc describes.
type Client struct {
	// Keys creates and manages keys and aliases.
	Keys pb.KeyServiceClient
	// Crypto uses keys: encrypt, decrypt, data keys, sign, MACs, random.
	Crypto pb.CryptoServiceClient
	// Cluster operates the cluster of brokers.
	Cluster pb.ClusterServiceClient
	// Access says who the caller is, manages principals' roles and reads
	// the audit log.
	Access pb.AccessServiceClient
	// TDE manages the keys and tokens of the TDE key endpoint.
	TDE pb.TDEServiceClient
	// Audit lists the checkpoints of the nodes' audit logs.
	Audit pb.AuditServiceClient
	// Raw is raw AES on RAW_ENCRYPT_DECRYPT keys, and DataObjects the
	// PKCS#11 data objects; libhsmbroker-pkcs11.so uses both.
	Raw         pb.RawServiceClient
	DataObjects pb.DataObjectServiceClient

	router *router
}

// Dial makes one gRPC connection per endpoint, authenticated with mutual
// TLS 1.3, and returns a Client over them. Connections are made in the
// background: an unreachable endpoint does not make Dial fail, only calls,
// once every endpoint has been tried. ctx only cancels Dial itself.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errNoEndpoints
	}
	cfg = cfg.withDefaults()
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	creds := credentials.NewTLS(tlsCfg)
	r := &router{cfg: cfg}
	for _, addr := range cfg.Endpoints {
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
		)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("client: endpoint %q: %w", addr, err)
		}
		conn.Connect()
		r.endpoints = append(r.endpoints, &endpoint{addr: addr, conn: conn})
	}
	return &Client{
		Keys:        pb.NewKeyServiceClient(r),
		Crypto:      pb.NewCryptoServiceClient(r),
		Cluster:     pb.NewClusterServiceClient(r),
		Access:      pb.NewAccessServiceClient(r),
		TDE:         pb.NewTDEServiceClient(r),
		Audit:       pb.NewAuditServiceClient(r),
		Raw:         pb.NewRawServiceClient(r),
		DataObjects: pb.NewDataObjectServiceClient(r),
		router:      r,
	}, nil
}

// Close closes every connection. Calls in flight fail with codes.Canceled.
func (c *Client) Close() error {
	return c.router.close()
}

// Endpoints returns the configured endpoints, in configuration order.
func (c *Client) Endpoints() []string {
	out := make([]string, len(c.router.endpoints))
	for i, e := range c.router.endpoints {
		out[i] = e.addr
	}
	return out
}

// PreferredEndpoint returns the endpoint the next call tries first: the last
// one that answered.
func (c *Client) PreferredEndpoint() string {
	return c.router.endpoints[c.router.preferred.Load()].addr
}

type endpoint struct {
	addr string
	conn *grpc.ClientConn
	// downUntil is when, in Unix nanoseconds, a failed endpoint becomes a
	// candidate again ahead of the others.
	downUntil atomic.Int64
	// failures counts consecutive failures, to lengthen downUntil.
	failures atomic.Int32
}

func (r *router) close() error {
	var errs []error
	for _, e := range r.endpoints {
		errs = append(errs, e.conn.Close())
	}
	return errors.Join(errs...)
}
