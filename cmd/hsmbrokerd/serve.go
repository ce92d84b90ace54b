package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

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
a missing file is an error that names it. With bootstrap: true and an empty
Raft directory, the node starts a new cluster and creates the domain key in
its HSM if there is none; on later starts it reopens its Raft state.

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
	checkAdvertisedName(log, c)
	pin, err := hsm.LoadPIN(c.HSM.PINFile, c.HSM.PINEnv)
	if err != nil {
		return daemon{}, fmt.Errorf("hsm: %w", err)
	}
	oaep := hsm.OAEPMode(c.HSM.OAEPSHA256)
	if oaep == "auto" {
		oaep = hsm.OAEPAuto
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return daemon{}, fmt.Errorf("data_dir: %w", err)
	}
	hasState, err := raftStateExists(c.RaftDir())
	if err != nil {
		return daemon{}, err
	}
	if len(c.Join) > 0 && !hasState {
		log.Warn("joining through join addresses is not implemented yet; this node waits until an existing member adds it as a voter", "join", c.Join)
	}
	return daemon{
		grpcAddr:    c.GRPCAddr,
		metricsAddr: c.MetricsAddr,
		kmsAddr:     c.KMSAddr,
		region:      c.Region,
		account:     c.Account,
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
		serverTLS: serverTLS,
		// Only the node that founds a cluster makes a domain key; every
		// other member receives the cluster's own when it joins.
		createDomainKey: c.Bootstrap && !hasState,
	}, nil
}

// raftStateExists reports whether dir holds a Raft log from an earlier
// run.
func raftStateExists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("data_dir: %w", err)
	}
}

// checkAdvertisedName warns when the node certificate is not valid for the
// address peers dial: a single node works regardless, but peers would
// refuse its Raft connections.
func checkAdvertisedName(log *slog.Logger, c config.Config) {
	addr := firstSet(c.RaftAdvertise, c.RaftAddr)
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return
	}
	cert, err := pki.ReadCertFile(c.TLS.Cert)
	if err != nil {
		return
	}
	if err := cert.VerifyHostname(host); err != nil {
		log.Warn("the node certificate is not valid for the Raft address peers dial; they will refuse this node",
			"cert", c.TLS.Cert, "raft_address", addr, "err", err)
	}
}
