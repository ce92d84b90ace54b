package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
)

const (
	devTokenLabel = "hsmbroker-dev"
	devNodeID     = "dev"
	devCAName     = "hsmbroker dev CA"
	devAdmin      = "admin"
	// devRenewBefore: a dev leaf certificate this close to expiry is
	// reissued at start-up (the CA is kept).
	devRenewBefore = 30 * 24 * time.Hour
)

// softHSMModules are where distributions install the SoftHSMv2 library.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",                   // Debian, Ubuntu
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",  // Debian multiarch
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", // Debian multiarch
	"/usr/lib64/pkcs11/libsofthsm2.so",                  // Fedora, RHEL
	"/usr/local/lib/softhsm/libsofthsm2.so",             // built from source
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",          // Homebrew
}

type devFlags struct {
	dataDir     string
	grpcAddr    string
	raftAddr    string
	metricsAddr string
	kmsAddr     string
	vaultAddr   string
	vaultTLS    bool
	kmipAddr    string
	module      string
}

func newDevCommand(g *globalFlags, stderr io.Writer) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev --data-dir DIR",
		Short: "Run a single-node broker on a SoftHSM token it manages (development)",
		Long: `dev runs the embedded default: a single-node cluster on a SoftHSMv2 token,
with everything it needs kept under --data-dir.

On first run it creates, under DIR (mode 0700):
  softhsm/softhsm2.conf, softhsm/tokens/   a private SoftHSM configuration
  softhsm/user.pin, softhsm/so.pin         random PINs (0600)
  the token "hsmbroker-dev" and its domain key
  tls/ca.pem, tls/ca-key.pem               a dev CA
  tls/node.pem, tls/node-key.pem           gRPC and Raft certificate (localhost, 127.0.0.1)
  tls/admin.pem, tls/admin-key.pem         a client certificate: principal admin, role admin
  kms-credentials.json                     an AWS access key of principal admin, role admin (0600)
  vault-token                              a TDE key endpoint token of principal admin (0600)
  pkcs11.pin                               the PIN that C_Login of libhsmbroker-pkcs11.so takes (0600)
  tls/admin-key.pkcs11.pem                 the admin key sealed under that PIN, for the PKCS#11
                                           library (0600; sealed again at each start)
  raft/                                    the Raft log and snapshots
  audit.log                                the audit log, a JSON line per request (0600)

Later runs reopen all of it; the token, PINs and CA are never recreated.
dev always uses DIR's own SoftHSM configuration, even when SOFTHSM2_CONF is
set. Besides gRPC it serves the AWS KMS JSON endpoint on --kms-addr, in
plain HTTP (loopback only, unless told otherwise), for the AWS CLI and SDKs.
Once serving, it writes DIR/dev.env (0600) with the exports a client needs:
HSMBROKER_ADDR, HSMBROKER_CA, HSMBROKER_CERT, HSMBROKER_KEY and
HSMBROKER_METRICS_ADDR for hsmctl and the Go SDK, HSMBROKER_AUDIT_LOG (the
audit log, for hsmctl audit verify), HSMBROKER_CA_KEY (the dev CA's key, for
hsmctl certs issue), HSMBROKER_PKCS11_KEY and HSMBROKER_PKCS11_PIN for
libhsmbroker-pkcs11.so (docs/PKCS11.md), and AWS_ENDPOINT_URL_KMS,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION for AWS
tools. The AWS CLI 2.9 of Debian 12 ignores AWS_ENDPOINT_URL_KMS: give it
--endpoint-url "$AWS_ENDPOINT_URL_KMS".

It also serves the TDE key endpoint (Vault KV version 2 reads, for MariaDB's
hashicorp_key_management plugin; see docs/TDE.md) on --vault-addr, plain
HTTP on loopback (HTTPS with --vault-tls), makes the KMS key alias/tde that wraps the "tde" mount's
keys if it is missing, and adds VAULT_ADDR and VAULT_TOKEN to dev.env.

Stop it with Ctrl-C or SIGTERM. Remove DIR to start over.`,
		Example: `  hsmbrokerd dev --data-dir ./.hsmbroker-dev
  source ./.hsmbroker-dev/dev.env
  hsmctl keys create --spec SYMMETRIC_DEFAULT --alias alias/demo
  aws kms --endpoint-url "$AWS_ENDPOINT_URL_KMS" list-keys

  # Other ports, debug logs, no AWS endpoint:
  hsmbrokerd dev --data-dir /tmp/hb --grpc-addr 127.0.0.1:8400 --raft-addr 127.0.0.1:8401 \
    --metrics-addr 127.0.0.1:8490 --kms-addr "" --log-level debug`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, g.logLevel, firstSet(g.logFormat, "text"))
			if err != nil {
				return err
			}
			slog.SetDefault(log)
			d, err := prepareDev(log, f, stderr)
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), log, d)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the token, PINs, certificates and Raft state (created 0700; required)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:7400", "gRPC listen address")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7401", "Raft listen address")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:7490", "HTTP address for /metrics, /healthz and /readyz")
	fl.StringVar(&f.kmsAddr, "kms-addr", "127.0.0.1:7480", "AWS KMS-compatible endpoint, plain HTTP (\"\": not served)")
	fl.StringVar(&f.vaultAddr, "vault-addr", "127.0.0.1:7482", "TDE key endpoint (Vault KV v2 reads), plain HTTP on loopback (\"\": not served)")
	fl.BoolVar(&f.vaultTLS, "vault-tls", false, "serve the TDE key endpoint over HTTPS with the dev node certificate (trust tls/ca.pem)")
	fl.StringVar(&f.kmipAddr, "kmip-addr", "127.0.0.1:5696", "KMIP server, mutual TLS with the client certificates (\"\": not served)")
	fl.StringVar(&f.module, "module", "", "SoftHSMv2 library (default: the first of the usual install paths that exists)")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

// devLayout names the files of a dev data directory.
type devLayout struct {
	dir                    string
	softhsmConf, tokensDir string
	userPIN, soPIN         string
	tlsDir                 string
	caCert, caKey          string
	nodeCert, nodeKey      string
	adminCert, adminKey    string
	kmsCredentials         string
	raftDir                string
	audit                  string
	env                    string
	vaultToken             string
}

func newDevLayout(dir string) devLayout {
	j := filepath.Join
	return devLayout{
		dir:            dir,
		softhsmConf:    j(dir, "softhsm", "softhsm2.conf"),
		tokensDir:      j(dir, "softhsm", "tokens"),
		userPIN:        j(dir, "softhsm", "user.pin"),
		soPIN:          j(dir, "softhsm", "so.pin"),
		tlsDir:         j(dir, "tls"),
		caCert:         j(dir, "tls", "ca.pem"),
		caKey:          j(dir, "tls", "ca-key.pem"),
		nodeCert:       j(dir, "tls", "node.pem"),
		nodeKey:        j(dir, "tls", "node-key.pem"),
		adminCert:      j(dir, "tls", "admin.pem"),
		adminKey:       j(dir, "tls", "admin-key.pem"),
		kmsCredentials: j(dir, "kms-credentials.json"),
		raftDir:        j(dir, "raft"),
		audit:          j(dir, "audit.log"),
		env:            j(dir, "dev.env"),
		vaultToken:     j(dir, "vault-token"),
	}
}

// prepareDev makes or reopens everything under the data directory and
// returns the daemon's configuration.
func prepareDev(log *slog.Logger, f *devFlags, stderr io.Writer) (daemon, error) {
	if f.dataDir == "" {
		return daemon{}, usage(errors.New("--data-dir is required"))
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return daemon{}, err
	}
	l := newDevLayout(dir)
	for _, d := range []string{l.dir, filepath.Dir(l.softhsmConf), l.tokensDir, l.tlsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return daemon{}, err
		}
	}
	module := f.module
	if module == "" {
		if module = findSoftHSM(); module == "" {
			return daemon{}, fmt.Errorf("SoftHSMv2 library not found in %s; install softhsm2 or pass --module", strings.Join(softHSMModules, ", "))
		}
	}

	if err := useOwnSoftHSMConf(log, l.softhsmConf, l.tokensDir, "dev mode"); err != nil {
		return daemon{}, err
	}
	if err := ensureToken(log, l.tokenFiles(), module, "dev token"); err != nil {
		return daemon{}, err
	}
	pin, err := hsm.LoadPIN(l.userPIN, "")
	if err != nil {
		return daemon{}, err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, a := range []string{f.grpcAddr, f.raftAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && !isUnspecified(h) {
			hosts = appendNew(hosts, h)
		}
	}
	if err := ensureDevPKI(log, l, hosts); err != nil {
		return daemon{}, err
	}
	serverTLS, err := pki.ServerTLSConfig(l.nodeCert, l.nodeKey, l.caCert)
	if err != nil {
		return daemon{}, err
	}
	peerTLS, err := pki.PeerTLSConfig(l.nodeCert, l.nodeKey, l.caCert)
	if err != nil {
		return daemon{}, err
	}
	var (
		kms       *kmsEndpoint
		accessKey awskms.AccessKey
	)
	if f.kmsAddr != "" {
		if accessKey, err = ensureAccessKey(log, l.kmsCredentials, devAdmin, authz.RoleAdmin); err != nil {
			return daemon{}, err
		}
		if kms, err = loadKMSEndpoint(config.KMS{Addr: f.kmsAddr, CredentialsFile: l.kmsCredentials}); err != nil {
			return daemon{}, err
		}
	}

	var vaultEP *vaultEndpoint
	if f.vaultAddr != "" {
		cert, key := "", ""
		if f.vaultTLS {
			cert, key = l.nodeCert, l.nodeKey
		}
		if vaultEP, err = newVaultEndpoint(f.vaultAddr, cert, key); err != nil {
			return daemon{}, err
		}
	}
	kmipEP, err := loadKMIPEndpoint(f.kmipAddr, l.nodeCert, l.nodeKey, l.caCert, "")
	if err != nil {
		return daemon{}, err
	}

	return daemon{
		grpcAddr:    f.grpcAddr,
		metricsAddr: f.metricsAddr,
		kms:         kms,
		vault:       vaultEP,
		kmip:        kmipEP,
		auditFile:   l.audit,
		region:      config.DefaultRegion,
		account:     config.DefaultAccount,
		hsm: hsm.Config{
			Module:     module,
			TokenLabel: devTokenLabel,
			PIN:        pin,
			Logger:     log,
		},
		cluster: cluster.Config{
			NodeID:    devNodeID,
			RaftAddr:  f.raftAddr,
			DataDir:   l.raftDir,
			Bootstrap: true,
			TLS:       peerTLS,
			Logger:    log,
		},
		serverTLS:       serverTLS,
		peerTLS:         peerTLS,
		createDomainKey: true,
		onReady: func(ep endpoints) error {
			vars := clientEnv(ep, l.caCert, l.adminCert, l.adminKey, "", accessKey, config.DefaultRegion)
			// Where to look: hsmctl audit verify "$HSMBROKER_AUDIT_LOG".
			vars = append(vars, [2]string{"HSMBROKER_AUDIT_LOG", l.audit})
			// The dev CA's key, for hsmctl certs issue (HSMBROKER_CA is its certificate).
			vars = append(vars, [2]string{"HSMBROKER_CA_KEY", l.caKey})
			if ep.vaultURL != "" {
				vars = append(vars, [2]string{"# The TDE key endpoint (Vault KV v2 reads; MariaDB hashicorp_key_management)", ""},
					[2]string{"VAULT_ADDR", ep.vaultURL})
				// Without its token dev still serves everything else.
				if token, err := devVault(ep, l.caCert, l.adminCert, l.adminKey, l.vaultToken); err != nil {
					log.Error("TDE key endpoint: no token for the dev admin; issue one with hsmctl tde token issue", "err", err)
				} else {
					vars = append(vars, [2]string{"VAULT_TOKEN", token})
				}
			}
			p11vars, err := devPKCS11Env(l.dir, l.adminKey)
			if err != nil {
				return err
			}
			vars = append(vars, p11vars...)
			if ep.kmip != "" { // KMIP clients use HSMBROKER_CERT, _KEY and _CA
				vars = append(vars, [2]string{"HSMBROKER_KMIP_ADDR", ep.kmip})
			}
			if err := writeEnvFile(l.env, "hsmbrokerd dev", vars); err != nil {
				return err
			}
			printDevBanner(stderr, l, ep)
			return nil
		},
	}, nil
}

// useOwnSoftHSMConf writes a SoftHSM configuration keeping tokens in
// tokensDir and points SOFTHSM2_CONF at it. SoftHSM reads the variable
// once, when the library is initialized, so this must run before anything
// loads the module. who names the user in a log line.
func useOwnSoftHSMConf(log *slog.Logger, conf, tokensDir, who string) error {
	body := fmt.Sprintf("# Written by hsmbrokerd for this data directory.\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokensDir)
	// Rewritten when it differs, so a moved data directory keeps working.
	if old, err := os.ReadFile(conf); err != nil || string(old) != body {
		if err := pki.WriteFileAtomic(conf, []byte(body), 0o600); err != nil {
			return err
		}
	}
	if prev := os.Getenv("SOFTHSM2_CONF"); prev != "" && prev != conf {
		log.Info("SOFTHSM2_CONF is set; "+who+" uses the data directory's own SoftHSM configuration instead",
			"ignored", prev, "using", conf)
	}
	return os.Setenv("SOFTHSM2_CONF", conf)
}

// tokenFiles are the files around a SoftHSM token that hsmbrokerd makes
// for itself (dev) or for a local cluster node (init-node).
type tokenFiles struct {
	label          string
	tokensDir      string
	userPIN, soPIN string
	raftDir        string // Raft state that needs this token's domain key
	dir            string // what to remove to start over
}

func (l devLayout) tokenFiles() tokenFiles {
	return tokenFiles{label: devTokenLabel, tokensDir: l.tokensDir, userPIN: l.userPIN, soPIN: l.soPIN, raftDir: l.raftDir, dir: l.dir}
}

// ensureToken initializes the token on first run. An existing token is
// never initialized again: that would destroy its domain key and with it
// every key in the Raft state. what names the token in log lines.
func ensureToken(log *slog.Logger, tf tokenFiles, module, what string) error {
	entries, err := os.ReadDir(tf.tokensDir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		if _, err := os.Stat(tf.userPIN); err != nil {
			return fmt.Errorf("%s holds a token but its user PIN file is missing (%v); remove %s to start over", tf.tokensDir, err, tf.dir)
		}
		log.Info(what+" reopened", "label", tf.label, "tokens", tf.tokensDir)
		return nil
	}
	if _, err := os.Stat(filepath.Join(tf.raftDir, "raft.db")); err == nil {
		return fmt.Errorf("%s holds Raft state but the SoftHSM token is gone, so its keys cannot be unwrapped; remove %s to start over", tf.raftDir, tf.dir)
	}
	soPIN, err := randomPIN()
	if err != nil {
		return err
	}
	userPIN, err := randomPIN()
	if err != nil {
		return err
	}
	// PINs reach disk before the token exists: a token whose PIN was lost
	// would be useless.
	if err := pki.WriteFileAtomic(tf.soPIN, []byte(soPIN+"\n"), 0o600); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(tf.userPIN, []byte(userPIN+"\n"), 0o600); err != nil {
		return err
	}
	serial, err := hsm.InitToken(module, tf.label, soPIN, userPIN)
	if err != nil {
		return fmt.Errorf("initialize the %s: %w", what, err)
	}
	log.Info(what+" initialized", "label", tf.label, "serial", serial, "module", module,
		"user_pin_file", tf.userPIN, "so_pin_file", tf.soPIN)
	return nil
}

func randomPIN() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a PIN: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// ensureDevPKI creates the dev CA on first run and (re)issues the node and
// admin certificates when they are missing, not from this CA, close to
// expiry, or (for the node) not valid for every host in hosts.
func ensureDevPKI(log *slog.Logger, l devLayout, hosts []string) error {
	ca, err := loadOrCreateCA(log, l.caCert, l.caKey, devCAName, "dev CA", l.tlsDir)
	if err != nil {
		return err
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	node := leafSpec{
		kind: "dev", name: "node", cert: l.nodeCert, key: l.nodeKey, usage: x509.ExtKeyUsageServerAuth, hosts: hosts,
		issue: func() (*pki.Issued, error) { return ca.IssueServer(devNodeID, dns, ips, pki.DefaultServerTTL) },
	}
	admin := leafSpec{
		kind: "dev", name: "admin", cert: l.adminCert, key: l.adminKey, usage: x509.ExtKeyUsageClientAuth,
		issue: func() (*pki.Issued, error) { return ca.IssueClient(devAdmin, authz.RoleAdmin, pki.DefaultClientTTL) },
	}
	for _, s := range []leafSpec{node, admin} {
		if err := s.ensure(log, ca); err != nil {
			return err
		}
	}
	return nil
}

// loadOrCreateCA loads the CA at certFile and keyFile, or makes one named
// name when neither exists. what names it in messages; removing dir
// starts over.
func loadOrCreateCA(log *slog.Logger, certFile, keyFile, name, what, dir string) (*pki.CA, error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return pki.LoadCA(certFile, keyFile)
	case os.IsNotExist(certErr) && os.IsNotExist(keyErr):
		ca, err := pki.NewCA(name)
		if err != nil {
			return nil, err
		}
		if err := ca.Save(certFile, keyFile); err != nil {
			return nil, err
		}
		log.Info(what+" created", "cert", certFile)
		return ca, nil
	default:
		return nil, fmt.Errorf("%s incomplete: %s and %s must both exist (or neither, to make a new CA); remove %s to start over",
			what, certFile, keyFile, dir)
	}
}

// leafSpec is one leaf certificate that hsmbrokerd issues for itself.
type leafSpec struct {
	kind      string // "dev", or "" for init-node's
	name      string
	cert, key string
	usage     x509.ExtKeyUsage
	hosts     []string // the certificate must be valid for each
	issue     func() (*pki.Issued, error)
}

func (s leafSpec) ensure(log *slog.Logger, ca *pki.CA) error {
	why := s.staleReason(ca)
	if why == "" {
		return nil
	}
	i, err := s.issue()
	if err != nil {
		return fmt.Errorf("issue the %s certificate: %w", s.name, err)
	}
	if err := i.Save(s.cert, s.key); err != nil {
		return err
	}
	log.Info(strings.TrimSpace(s.kind+" certificate issued"), "name", s.name, "cert", s.cert, "reason", why,
		"expires", i.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// staleReason says why the certificate on disk must be reissued, or ""
// when it is fine.
func (s leafSpec) staleReason(ca *pki.CA) string {
	cert, err := pki.ReadCertFile(s.cert)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "missing"
		}
		return "unreadable"
	}
	if _, err := tls.LoadX509KeyPair(s.cert, s.key); err != nil {
		return "key missing or not the certificate's"
	}
	if err := ca.Verify(cert, s.usage); err != nil {
		return "not valid under the CA"
	}
	if time.Until(cert.NotAfter) < devRenewBefore {
		return "expires soon"
	}
	for _, h := range s.hosts {
		if err := cert.VerifyHostname(h); err != nil {
			return "not valid for " + h
		}
	}
	return ""
}

// clientEnv is what a client needs to reach a node: hsmctl and the Go SDK
// through gRPC with the admin certificate, AWS tools through the KMS
// endpoint with the admin access key (when ep has one). caBundle, when
// set, is the CA that AWS tools must trust for an HTTPS endpoint.
func clientEnv(ep endpoints, caCert, adminCert, adminKey, caBundle string, key awskms.AccessKey, region string) [][2]string {
	vars := [][2]string{
		{"HSMBROKER_ADDR", ep.grpc},
		{"HSMBROKER_CA", caCert},
		{"HSMBROKER_CERT", adminCert},
		{"HSMBROKER_KEY", adminKey},
		{"HSMBROKER_METRICS_ADDR", ep.metrics},
	}
	if ep.kmsURL == "" {
		return vars
	}
	vars = append(vars, [2]string{"# The AWS KMS endpoint. The AWS CLI 2.9 of Debian 12 ignores AWS_ENDPOINT_URL_KMS:", ""},
		[2]string{`#   aws kms --endpoint-url "$AWS_ENDPOINT_URL_KMS" list-keys`, ""},
		[2]string{"AWS_ENDPOINT_URL_KMS", ep.kmsURL})
	if caBundle != "" {
		vars = append(vars, [2]string{"AWS_CA_BUNDLE", caBundle})
	}
	return append(vars,
		[2]string{"AWS_ACCESS_KEY_ID", key.ID},
		[2]string{"AWS_SECRET_ACCESS_KEY", key.Secret},
		[2]string{"AWS_DEFAULT_REGION", region},
	)
}

// writeEnvFile writes shell exports (mode 0600: they may hold an access
// key's secret). A name starting with "#" is written as a comment line.
func writeEnvFile(path, writer string, vars [][2]string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by %s. Use: source %s\n", writer, shellQuote(path))
	for _, kv := range vars {
		if strings.HasPrefix(kv[0], "#") {
			fmt.Fprintln(&b, kv[0])
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return pki.WriteFileAtomic(path, []byte(b.String()), 0o600)
}

func printDevBanner(w io.Writer, l devLayout, ep endpoints) {
	fmt.Fprintf(w, `
hsmbrokerd dev is ready: gRPC on %s (mutual TLS), metrics on http://%s/metrics
To use it from a shell:

    source %s
    hsmctl keys create --spec SYMMETRIC_DEFAULT --alias alias/demo
`, ep.grpc, ep.metrics, shellQuote(l.env))
	if ep.kmsURL != "" {
		fmt.Fprintf(w, "    aws kms --endpoint-url \"$AWS_ENDPOINT_URL_KMS\" list-keys    # AWS KMS API on %s\n", ep.kmsURL)
	}
	if ep.vaultURL != "" {
		fmt.Fprintf(w, "    hsmctl tde create 1    # TDE keys for MariaDB on %s (docs/TDE.md)\n", ep.vaultURL)
	}
	fmt.Fprintln(w)
}

// ensureAccessKey returns an access key of principal with role from the
// credentials file at path, generating one (and the file, 0600) when there
// is none, and giving an existing key the role when it names another (a
// key made before access keys carried roles names none). The secret goes
// to the file only, never to a log.
func ensureAccessKey(log *slog.Logger, path, principal string, role authz.Role) (awskms.AccessKey, error) {
	keys, err := readAccessKeys(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return awskms.AccessKey{}, err
	}
	for i, k := range keys {
		if k.Principal != principal {
			continue
		}
		if k.Role != role {
			keys[i].Role = role
			if err := awskms.WriteCredentialsFile(path, keys); err != nil {
				return awskms.AccessKey{}, err
			}
			log.Info("AWS access key given a role", "access_key", keys[i], "role", role, "file", path)
		}
		return keys[i], nil
	}
	k, err := awskms.GenerateAccessKey(principal)
	if err != nil {
		return awskms.AccessKey{}, err
	}
	k.Role = role
	if err := awskms.WriteCredentialsFile(path, append(keys, k)); err != nil {
		return awskms.AccessKey{}, err
	}
	log.Info("AWS access key created", "access_key", k, "role", role, "file", path)
	return k, nil
}

// readAccessKeys returns the keys of a credentials file, after awskms has
// checked its mode and form.
func readAccessKeys(path string) ([]awskms.AccessKey, error) {
	if _, err := awskms.LoadCredentialsFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		AccessKeys []awskms.AccessKey `json:"access_keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return f.AccessKeys, nil
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func findSoftHSM() string {
	for _, p := range softHSMModules {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func appendNew(list []string, s string) []string {
	for _, v := range list {
		if v == s {
			return list
		}
	}
	return append(list, s)
}
