package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
)

const localCAName = "hsmbroker local cluster CA"

// localNodeID is a node id that also makes a SoftHSM token label (at most
// 32 characters).
var localNodeID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,31}$`)

type initNodeFlags struct {
	dir, caDir, nodeID                       string
	grpcAddr, raftAddr, metricsAddr, kmsAddr string
	vaultAddr                                string
	bootstrap                                bool
	join                                     []string
	module                                   string
	envFile                                  string
}

// newInitNodeCommand prepares one node of a cluster on SoftHSM tokens, as
// deploy/local-cluster.sh needs: everything `serve` expects an operator to
// have made. It is hidden because production nodes get their tokens, PINs
// and certificates from their operators, not from here.
func newInitNodeCommand(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &initNodeFlags{}
	cmd := &cobra.Command{
		Use:    "init-node --dir DIR --ca-dir CADIR --node-id ID --grpc-addr A --raft-addr A --metrics-addr A (--bootstrap | --join ADDRS)",
		Short:  "Prepare a cluster node on a SoftHSM token of its own (local clusters and tests)",
		Hidden: true,
		Long: `init-node makes what 'hsmbrokerd serve' needs for one node of a cluster that
runs on SoftHSMv2 tokens, such as the 3-node loopback cluster of
deploy/local-cluster.sh. Nothing it makes is ever made again: run it again
and it reuses what exists (reissuing only a node certificate that is stale).

In CADIR, shared by the nodes of the cluster (mode 0700):
  ca.pem, ca-key.pem             the cluster CA
  admin.pem, admin-key.pem       a client certificate: principal admin, role admin
  kms-credentials.json           an AWS access key of principal admin, role admin (0600)

In DIR (mode 0700):
  softhsm/softhsm2.conf, softhsm/tokens/   the node's own SoftHSM configuration and token
  softhsm/user.pin, softhsm/so.pin         random PINs (0600)
  tls/ca.pem, tls/node.pem, tls/node-key.pem
  hsmbrokerd.yaml                          the serve configuration (written once)
  data/                                    Raft state, once the node runs

With --join, the configuration names DIR/join.token as the join token file:
put a token from 'hsmctl cluster join-token --node-id ID --out DIR/join.token' there
before the node's first start. --env-file (default DIR/client.env, 0600)
gets the exports a client needs to reach this node, as dev.env does.`,
		Example: `  hsmbrokerd init-node --dir /tmp/c/node1 --ca-dir /tmp/c/ca --node-id node1 \
    --grpc-addr 127.0.0.1:7410 --raft-addr 127.0.0.1:7411 --metrics-addr 127.0.0.1:7412 \
    --kms-addr 127.0.0.1:7413 --bootstrap --env-file /tmp/c/node1.env
  hsmbrokerd serve --config /tmp/c/node1/hsmbrokerd.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, g.logLevel, firstSet(g.logFormat, "text"))
			if err != nil {
				return err
			}
			return initNode(log, f, stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "the node's directory (required)")
	fl.StringVar(&f.caDir, "ca-dir", "", "the cluster CA's directory, shared by the nodes (required)")
	fl.StringVar(&f.nodeID, "node-id", "", "node id, also the token label (required)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "", "gRPC address (required)")
	fl.StringVar(&f.raftAddr, "raft-addr", "", "Raft address (required)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "metrics and health address (required)")
	fl.StringVar(&f.kmsAddr, "kms-addr", "", "AWS KMS endpoint address, HTTPS with the node certificate (empty: not served)")
	fl.BoolVar(&f.bootstrap, "bootstrap", false, "this node founds the cluster")
	fl.StringSliceVar(&f.join, "join", nil, "gRPC addresses of members to join through")
	fl.StringVar(&f.module, "module", "", "SoftHSMv2 library (default: the first of the usual install paths that exists)")
	fl.StringVar(&f.vaultAddr, "vault-addr", "", "TDE key endpoint address, HTTPS with the node certificate (empty: not served)")
	fl.StringVar(&f.envFile, "env-file", "", "where to write the client exports (default DIR/client.env)")
	for _, name := range []string{"dir", "ca-dir", "node-id", "grpc-addr", "raft-addr", "metrics-addr"} {
		_ = cmd.MarkFlagRequired(name)
	}
	cmd.MarkFlagsMutuallyExclusive("bootstrap", "join")
	cmd.MarkFlagsOneRequired("bootstrap", "join")
	return cmd
}

// nodeLayout names the files of a node directory made by init-node.
type nodeLayout struct {
	dir                    string
	softhsmConf, tokensDir string
	userPIN, soPIN         string
	tlsDir, caCopy         string
	nodeCert, nodeKey      string
	config, joinToken      string
	dataDir                string

	caDir               string
	caCert, caKey       string
	adminCert, adminKey string
	kmsCredentials      string
}

func newNodeLayout(dir, caDir string) nodeLayout {
	j := filepath.Join
	return nodeLayout{
		dir: dir, softhsmConf: j(dir, "softhsm", "softhsm2.conf"), tokensDir: j(dir, "softhsm", "tokens"),
		userPIN: j(dir, "softhsm", "user.pin"), soPIN: j(dir, "softhsm", "so.pin"),
		tlsDir: j(dir, "tls"), caCopy: j(dir, "tls", "ca.pem"), nodeCert: j(dir, "tls", "node.pem"), nodeKey: j(dir, "tls", "node-key.pem"),
		config: j(dir, "hsmbrokerd.yaml"), joinToken: j(dir, "join.token"), dataDir: j(dir, "data"),
		caDir: caDir, caCert: j(caDir, "ca.pem"), caKey: j(caDir, "ca-key.pem"),
		adminCert: j(caDir, "admin.pem"), adminKey: j(caDir, "admin-key.pem"), kmsCredentials: j(caDir, "kms-credentials.json"),
	}
}

func initNode(log *slog.Logger, f *initNodeFlags, stdout io.Writer) error {
	if !localNodeID.MatchString(f.nodeID) {
		return usage(fmt.Errorf("--node-id %q: want 1 to 32 letters, digits, '.', '_' or '-' (it is also the token label)", f.nodeID))
	}
	for _, a := range []struct{ flag, addr string }{{"grpc-addr", f.grpcAddr}, {"raft-addr", f.raftAddr},
		{"metrics-addr", f.metricsAddr}, {"kms-addr", f.kmsAddr}, {"vault-addr", f.vaultAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return usage(fmt.Errorf("--%s %q: %w", a.flag, a.addr, err))
		}
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	caDir, err := filepath.Abs(f.caDir)
	if err != nil {
		return err
	}
	l := newNodeLayout(dir, caDir)
	for _, d := range []string{l.dir, filepath.Dir(l.softhsmConf), l.tokensDir, l.tlsDir, l.caDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	module := f.module
	if module == "" {
		if module = findSoftHSM(); module == "" {
			return fmt.Errorf("SoftHSMv2 library not found in %s; install softhsm2 or pass --module", strings.Join(softHSMModules, ", "))
		}
	}

	// The token first: it is what the rest of the node is useless without.
	if err := useOwnSoftHSMConf(log, l.softhsmConf, l.tokensDir, "init-node"); err != nil {
		return err
	}
	tf := tokenFiles{label: f.nodeID, tokensDir: l.tokensDir, userPIN: l.userPIN, soPIN: l.soPIN,
		raftDir: filepath.Join(l.dataDir, "raft"), dir: l.dir}
	if err := ensureToken(log, tf, module, "token"); err != nil {
		return err
	}

	ca, err := loadOrCreateCA(log, l.caCert, l.caKey, localCAName, "cluster CA", l.caDir)
	if err != nil {
		return err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, a := range []string{f.grpcAddr, f.raftAddr, f.kmsAddr, f.vaultAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && !isUnspecified(h) {
			hosts = appendNew(hosts, h)
		}
	}
	dns, ips := splitHosts(hosts)
	leaves := []leafSpec{
		{name: "node", cert: l.nodeCert, key: l.nodeKey, usage: x509.ExtKeyUsageServerAuth, hosts: hosts,
			issue: func() (*pki.Issued, error) { return ca.IssueServer(f.nodeID, dns, ips, pki.DefaultServerTTL) }},
		{name: "admin", cert: l.adminCert, key: l.adminKey, usage: x509.ExtKeyUsageClientAuth,
			issue: func() (*pki.Issued, error) { return ca.IssueClient(devAdmin, authz.RoleAdmin, pki.DefaultClientTTL) }},
	}
	for _, s := range leaves {
		if err := s.ensure(log, ca); err != nil {
			return err
		}
	}
	if err := pki.WriteFileAtomic(l.caCopy, ca.CertPEM(), 0o644); err != nil {
		return err
	}
	key, err := ensureAccessKey(log, l.kmsCredentials, devAdmin, authz.RoleAdmin)
	if err != nil {
		return err
	}

	if err := writeNodeConfig(log, l, f, module); err != nil {
		return err
	}
	c, err := config.Load(l.config)
	if err != nil {
		return fmt.Errorf("the node's configuration does not load: %w", err)
	}
	ep := endpoints{grpc: dialableAddr(c.GRPCAddr), metrics: dialableAddr(c.MetricsAddr)}
	if c.KMS.Addr != "" {
		ep.kmsURL = "https://" + dialableAddr(c.KMS.Addr)
	}
	envFile := firstSet(f.envFile, filepath.Join(l.dir, "client.env"))
	vars := clientEnv(ep, l.caCert, l.adminCert, l.adminKey, l.caCert, key, c.Region)
	if c.Vault.Addr != "" {
		// Vault's own names; tokens come from hsmctl tde token issue.
		vars = append(vars, [2]string{"VAULT_ADDR", "https://" + dialableAddr(c.Vault.Addr)}, [2]string{"VAULT_CACERT", l.caCert})
	}
	if err := writeEnvFile(envFile, "hsmbrokerd init-node", vars); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s: config %s, client exports %s\n", f.nodeID, l.config, envFile)
	return nil
}

// writeNodeConfig writes the serve configuration once. An existing one is
// kept: its addresses are in the cluster's Raft configuration already.
func writeNodeConfig(log *slog.Logger, l nodeLayout, f *initNodeFlags, module string) error {
	if _, err := os.Stat(l.config); err == nil {
		log.Info("configuration kept", "config", l.config)
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // a JSON string is a YAML scalar
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by hsmbrokerd init-node. Fields: deploy/hsmbrokerd.example.yaml.
node_id: %s
data_dir: data
grpc_addr: %s
raft_addr: %s
metrics_addr: %s
`, q(f.nodeID), q(f.grpcAddr), q(f.raftAddr), q(f.metricsAddr))
	if f.bootstrap {
		b.WriteString("bootstrap: true\n")
	} else {
		quoted := make([]string, len(f.join))
		for i, j := range f.join {
			quoted[i] = q(j)
		}
		fmt.Fprintf(&b, "join: [%s]\n# A one-time token: hsmctl cluster join-token --node-id %s --out %s\njoin_token_file: join.token\n",
			strings.Join(quoted, ", "), f.nodeID, l.joinToken)
	}
	fmt.Fprintf(&b, `tls: {ca: tls/ca.pem, cert: tls/node.pem, key: tls/node-key.pem}
hsm:
  module: %s
  token_label: %s
  pin_file: softhsm/user.pin
  env: {SOFTHSM2_CONF: %s}
`, q(module), q(f.nodeID), q(l.softhsmConf))
	if f.kmsAddr != "" {
		fmt.Fprintf(&b, "kms: {addr: %s, credentials_file: %s}\n", q(f.kmsAddr), q(l.kmsCredentials))
	}
	if f.vaultAddr != "" {
		fmt.Fprintf(&b, "vault: {addr: %s}\n", q(f.vaultAddr))
	}
	b.WriteString("log: {level: info, format: text}\n")
	if err := pki.WriteFileAtomic(l.config, []byte(b.String()), 0o600); err != nil {
		return err
	}
	log.Info("configuration written", "config", l.config)
	return nil
}

// splitHosts separates IP addresses from DNS names.
func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// dialableAddr turns a configured listen address into one a local client
// dials: a wildcard host becomes loopback.
func dialableAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && !isUnspecified(host)) {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}
