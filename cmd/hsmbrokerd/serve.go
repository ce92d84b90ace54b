package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
)

func newServeCommand(g *globalFlags, stderr io.Writer) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run a broker node from a configuration file (production)",
		Long: `serve runs one node of an hsmbroker cluster as its configuration file
says (see deploy/hsmbrokerd.example.yaml, where every field is documented).

Nothing is created for it: the HSM token must be initialized, the PIN file
(0600) or variable set, and the CA and node certificate issued beforehand;
a missing file is an error that names it. With an empty Raft directory, a
node with bootstrap: true starts a new cluster (creating the domain key in
its HSM if there is none), and a node with a join list joins that cluster
with a one-time join token, its HSM receiving the domain key from the
leader's. On later starts the node reopens its Raft state.

Logs are JSON unless log.format or --log-format says text. SIGINT or SIGTERM
stops it cleanly: health goes NOT_SERVING, calls in flight get a deadline to
finish, then Raft and the HSM sessions are closed.`,
		Example: `  hsmbrokerd serve --config /etc/hsmbroker/hsmbrokerd.yaml

  # Check a node:
  curl -fsS http://127.0.0.1:7490/readyz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(configFile)
			if err != nil {
				return err
			}
			log, err := newLogger(stderr, firstSet(g.logLevel, c.Log.Level), firstSet(g.logFormat, c.Log.Format))
			if err != nil {
				return err
			}
			slog.SetDefault(log)
			if err := refuseUnfinishedRestore(c, configFile); err != nil {
				return err
			}
			d, err := prepareServe(log, c)
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), log, d)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "configuration file (YAML; required)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// prepareServe turns the configuration into the daemon's, reading the PIN
// and the TLS files so that a missing one fails before anything starts.
func prepareServe(log *slog.Logger, c config.Config) (daemon, error) {
	serverTLS, err := pki.ServerTLSConfig(c.TLS.Cert, c.TLS.Key, c.TLS.CA)
	if err != nil {
		return daemon{}, fmt.Errorf("tls: %w", err)
	}
	peerTLS, err := pki.PeerTLSConfig(c.TLS.Cert, c.TLS.Key, c.TLS.CA)
	if err != nil {
		return daemon{}, fmt.Errorf("tls: %w", err)
	}
	checkAdvertisedNames(log, c)
	kms, err := serveKMS(c)
	if err != nil {
		return daemon{}, err
	}
	var vaultEP *vaultEndpoint
	if c.Vault.Addr != "" {
		if vaultEP, err = newVaultEndpoint(c.Vault.Addr, c.TLS.Cert, c.TLS.Key); err != nil {
			return daemon{}, err
		}
	}
	kmipEP, err := serveKMIPConfig(c)
	if err != nil {
		return daemon{}, err
	}
	pin, err := hsm.LoadPIN(c.HSM.PINFile, c.HSM.PINEnv)
	if err != nil {
		return daemon{}, fmt.Errorf("hsm: %w", err)
	}
	oaep := hsm.OAEPMode(c.HSM.OAEPSHA256)
	if oaep == "auto" {
		oaep = hsm.OAEPAuto
	}
	if err := setHSMEnv(log, c.HSM.Env); err != nil {
		return daemon{}, err
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return daemon{}, fmt.Errorf("data_dir: %w", err)
	}
	// State, not a file: a first join that failed leaves an empty raft.db,
	// and the node must still join on its next start.
	hasState, err := cluster.HasState(c.RaftDir())
	if err != nil {
		return daemon{}, fmt.Errorf("data_dir: %w", err)
	}
	var join *broker.JoinConfig
	switch {
	case hasState && len(c.Join) > 0:
		// A member already. It joins again only if its HSM lacks the domain
		// key (a join that stopped after the leader added it), which the
		// daemon finds out once the HSM is open; that takes a new token.
		token, err := config.LoadJoinToken(c.JoinTokenFile, c.JoinTokenEnv)
		if err != nil {
			log.Info("Raft state exists; this node is a member already, join is ignored", "join_token", err)
			break
		}
		join = &broker.JoinConfig{Seeds: c.Join, Token: token, Complete: true}
	case len(c.Join) > 0:
		token, err := config.LoadJoinToken(c.JoinTokenFile, c.JoinTokenEnv)
		if err != nil {
			return daemon{}, fmt.Errorf("join token: %w", err)
		}
		join = &broker.JoinConfig{Seeds: c.Join, Token: token}
	case !hasState && !c.Bootstrap:
		log.Warn("no Raft state, bootstrap is false and join is empty: this node waits until a member adds it")
	}
	return daemon{
		grpcAddr:      c.GRPCAddr,
		grpcAdvertise: c.GRPCAdvertiseAddr(),
		metricsAddr:   c.MetricsAddr,
		kms:           kms,
		vault:         vaultEP,
		kmip:          kmipEP,
		auditFile:     c.AuditFile(),
		region:        c.Region,
		account:       c.Account,
		peers:         c.Join,
		hsm: hsm.Config{
			Module:      c.HSM.Module,
			TokenLabel:  c.HSM.TokenLabel,
			TokenSerial: c.HSM.TokenSerial,
			PIN:         pin,
			PoolSize:    c.HSM.PoolSize,
			SessionWait: c.HSM.SessionWait,
			CallTimeout: c.HSM.CallTimeout,
			CacheSize:   c.HSM.CacheSize,
			OAEPSHA256:  oaep,
			Logger:      log,
		},
		preload: c.HSM.Preload,
		cluster: cluster.Config{
			NodeID:             c.NodeID,
			RaftAddr:           c.RaftAddr,
			AdvertiseAddr:      c.RaftAdvertise,
			DataDir:            c.RaftDir(),
			Bootstrap:          c.Bootstrap,
			TLS:                peerTLS,
			Logger:             log,
			HeartbeatTimeout:   c.Raft.HeartbeatTimeout,
			ElectionTimeout:    c.Raft.ElectionTimeout,
			LeaderLeaseTimeout: c.Raft.LeaderLeaseTimeout,
			CommitTimeout:      c.Raft.CommitTimeout,
			SnapshotInterval:   c.Raft.SnapshotInterval,
			SnapshotThreshold:  c.Raft.SnapshotThreshold,
			TrailingLogs:       c.Raft.TrailingLogs,
		},
		promoteSettle: c.Raft.PromoteSettle,
		serverTLS:     serverTLS,
		peerTLS:       peerTLS,
		join:          join,
		// Only the node that founds a cluster makes a domain key; every
		// other member receives the cluster's own when it joins.
		createDomainKey: c.Bootstrap && !hasState,
	}, nil
}

// checkAdvertisedNames warns when the node certificate is not valid for
// the addresses peers dial, or names another node id: a single node works
// regardless, but peers would refuse its Raft connections and its
// forwarded writes.
func checkAdvertisedNames(log *slog.Logger, c config.Config) {
	cert, err := pki.ReadCertFile(c.TLS.Cert)
	if err != nil {
		return
	}
	if cert.Subject.CommonName != c.NodeID {
		// Peers know a node by its certificate's common name: they would
		// take this one for another node, and refuse its member calls.
		log.Warn("the node certificate's common name is not this node's node_id; peers will refuse this node as a cluster member",
			"cert", c.TLS.Cert, "common_name", cert.Subject.CommonName, "node_id", c.NodeID)
	}
	for _, a := range []struct{ what, addr string }{
		{"raft", firstSet(c.RaftAdvertise, c.RaftAddr)},
		{"grpc", c.GRPCAdvertiseAddr()},
	} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil || host == "" {
			continue
		}
		if err := cert.VerifyHostname(host); err != nil {
			log.Warn("the node certificate is not valid for an address peers dial; they will refuse this node",
				"cert", c.TLS.Cert, "which", a.what, "address", a.addr, "err", err)
		}
	}
}

// serveKMS loads the AWS KMS endpoint's files; nil when it is not served.
func serveKMS(c config.Config) (*kmsEndpoint, error) {
	k := c.KMS
	if k.Addr == "" {
		return nil, nil
	}
	k.Cert, k.Key = firstSet(k.Cert, c.TLS.Cert), firstSet(k.Key, c.TLS.Key)
	if k.Plaintext {
		k.Cert, k.Key = "", ""
	}
	ep, err := loadKMSEndpoint(k)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return ep, nil
}

// setHSMEnv sets hsm.env for the PKCS#11 library, which reads its
// variables when it is loaded. Only the names are logged.
func setHSMEnv(log *slog.Logger, env map[string]string) error {
	for name, v := range env {
		if err := os.Setenv(name, v); err != nil {
			return fmt.Errorf("hsm.env: %s: %w", name, err)
		}
		log.Debug("environment variable set for the PKCS#11 library", "name", name)
	}
	return nil
}
