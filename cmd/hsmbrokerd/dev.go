package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
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
  raft/                                    the Raft log and snapshots

Later runs reopen all of it; the token, PINs and CA are never recreated.
dev always uses DIR's own SoftHSM configuration, even when SOFTHSM2_CONF is
set. Once serving, it writes DIR/dev.env with the exports a client needs
(HSMBROKER_ADDR, HSMBROKER_CA, HSMBROKER_CERT, HSMBROKER_KEY,
HSMBROKER_METRICS_ADDR).

Stop it with Ctrl-C or SIGTERM. Remove DIR to start over.`,
		Example: `  hsmbrokerd dev --data-dir ./.hsmbroker-dev
  source ./.hsmbroker-dev/dev.env
  hsmctl keys create --spec SYMMETRIC_DEFAULT --alias alias/demo

  # Other ports, debug logs:
  hsmbrokerd dev --data-dir /tmp/hb --grpc-addr 127.0.0.1:8400 --raft-addr 127.0.0.1:8401 \
    --metrics-addr 127.0.0.1:8490 --log-level debug`,
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
			if !cmd.Flags().Changed("kms-addr") {
				d.kmsAddr = "" // not served yet: only worth a log line when asked for
			}
			return runDaemon(cmd.Context(), log, d)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the token, PINs, certificates and Raft state (created 0700; required)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:7400", "gRPC listen address")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7401", "Raft listen address")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:7490", "HTTP address for /metrics, /healthz and /readyz")
	fl.StringVar(&f.kmsAddr, "kms-addr", "127.0.0.1:7480", "reserved for the AWS KMS-compatible endpoint")
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
	raftDir                string
	env                    string
}

func newDevLayout(dir string) devLayout {
	j := filepath.Join
	return devLayout{
		dir:         dir,
		softhsmConf: j(dir, "softhsm", "softhsm2.conf"),
		tokensDir:   j(dir, "softhsm", "tokens"),
		userPIN:     j(dir, "softhsm", "user.pin"),
		soPIN:       j(dir, "softhsm", "so.pin"),
		tlsDir:      j(dir, "tls"),
		caCert:      j(dir, "tls", "ca.pem"),
		caKey:       j(dir, "tls", "ca-key.pem"),
		nodeCert:    j(dir, "tls", "node.pem"),
		nodeKey:     j(dir, "tls", "node-key.pem"),
		adminCert:   j(dir, "tls", "admin.pem"),
		adminKey:    j(dir, "tls", "admin-key.pem"),
		raftDir:     j(dir, "raft"),
		env:         j(dir, "dev.env"),
	}
}

// prepareDev makes or reopens everything under the data directory and
// returns the daemon's configuration.
func prepareDev(log *slog.Logger, f *devFlags, stderr io.Writer) (daemon, error) {
	if f.dataDir == "" {
		return daemon{}, errors.New("--data-dir is required")
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

	if err := useOwnSoftHSMConf(log, l); err != nil {
		return daemon{}, err
	}
	if err := ensureDevToken(log, l, module); err != nil {
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

	return daemon{
		grpcAddr:    f.grpcAddr,
		metricsAddr: f.metricsAddr,
		kmsAddr:     f.kmsAddr,
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
		onReady: func(grpcAddr, metricsAddr string) error {
			if err := writeDevEnv(l, grpcAddr, metricsAddr); err != nil {
				return err
			}
			printDevBanner(stderr, l, grpcAddr, metricsAddr)
			return nil
		},
	}, nil
}

// useOwnSoftHSMConf writes DIR's SoftHSM configuration and points
// SOFTHSM2_CONF at it. SoftHSM reads the variable once, when the library
// is initialized, so this must run before anything loads the module.
func useOwnSoftHSMConf(log *slog.Logger, l devLayout) error {
	body := fmt.Sprintf("# Written by hsmbrokerd dev for this data directory.\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", l.tokensDir)
	// Rewritten when it differs, so a moved data directory keeps working.
	if old, err := os.ReadFile(l.softhsmConf); err != nil || string(old) != body {
		if err := pki.WriteFileAtomic(l.softhsmConf, []byte(body), 0o600); err != nil {
			return err
		}
	}
	if prev := os.Getenv("SOFTHSM2_CONF"); prev != "" && prev != l.softhsmConf {
		log.Info("SOFTHSM2_CONF is set; dev mode uses the data directory's own SoftHSM configuration instead",
			"ignored", prev, "using", l.softhsmConf)
	}
	return os.Setenv("SOFTHSM2_CONF", l.softhsmConf)
}

// ensureDevToken initializes the dev token on first run. An existing
// token is never initialized again: that would destroy its domain key and
// with it every key in the Raft state.
func ensureDevToken(log *slog.Logger, l devLayout, module string) error {
	entries, err := os.ReadDir(l.tokensDir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		if _, err := os.Stat(l.userPIN); err != nil {
			return fmt.Errorf("%s holds a token but its user PIN file is missing (%v); remove %s to start over", l.tokensDir, err, l.dir)
		}
		log.Info("dev token reopened", "label", devTokenLabel, "tokens", l.tokensDir)
		return nil
	}
	if _, err := os.Stat(filepath.Join(l.raftDir, "raft.db")); err == nil {
		return fmt.Errorf("%s holds Raft state but the SoftHSM token is gone, so its keys cannot be unwrapped; remove %s to start over", l.raftDir, l.dir)
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
	if err := pki.WriteFileAtomic(l.soPIN, []byte(soPIN+"\n"), 0o600); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(l.userPIN, []byte(userPIN+"\n"), 0o600); err != nil {
		return err
	}
	serial, err := hsm.InitToken(module, devTokenLabel, soPIN, userPIN)
	if err != nil {
		return fmt.Errorf("initialize the dev token: %w", err)
	}
	log.Info("dev token initialized", "label", devTokenLabel, "serial", serial, "module", module,
		"user_pin_file", l.userPIN, "so_pin_file", l.soPIN)
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
	ca, err := loadOrCreateDevCA(log, l)
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
		name: "node", cert: l.nodeCert, key: l.nodeKey, usage: x509.ExtKeyUsageServerAuth, hosts: hosts,
		issue: func() (*pki.Issued, error) { return ca.IssueServer(devNodeID, dns, ips, pki.DefaultServerTTL) },
	}
	admin := leafSpec{
		name: "admin", cert: l.adminCert, key: l.adminKey, usage: x509.ExtKeyUsageClientAuth,
		issue: func() (*pki.Issued, error) { return ca.IssueClient(devAdmin, pki.RoleAdmin, pki.DefaultClientTTL) },
	}
	for _, s := range []leafSpec{node, admin} {
		if err := s.ensure(log, ca); err != nil {
			return err
		}
	}
	return nil
}

func loadOrCreateDevCA(log *slog.Logger, l devLayout) (*pki.CA, error) {
	_, certErr := os.Stat(l.caCert)
	_, keyErr := os.Stat(l.caKey)
	switch {
	case certErr == nil && keyErr == nil:
		return pki.LoadCA(l.caCert, l.caKey)
	case os.IsNotExist(certErr) && os.IsNotExist(keyErr):
		ca, err := pki.NewCA(devCAName)
		if err != nil {
			return nil, err
		}
		if err := ca.Save(l.caCert, l.caKey); err != nil {
			return nil, err
		}
		log.Info("dev CA created", "cert", l.caCert)
		return ca, nil
	default:
		return nil, fmt.Errorf("dev CA incomplete: %s and %s must both exist (or neither, to make a new CA); remove %s to start over",
			l.caCert, l.caKey, l.tlsDir)
	}
}

// leafSpec is one dev leaf certificate.
type leafSpec struct {
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
		return fmt.Errorf("issue the dev %s certificate: %w", s.name, err)
	}
	if err := i.Save(s.cert, s.key); err != nil {
		return err
	}
	log.Info("dev certificate issued", "name", s.name, "cert", s.cert, "reason", why,
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
		return "not valid under the dev CA"
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

// writeDevEnv writes the exports a client needs to reach this broker.
func writeDevEnv(l devLayout, grpcAddr, metricsAddr string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by hsmbrokerd dev. Use: source %s\n", shellQuote(l.env))
	for _, kv := range [][2]string{
		{"HSMBROKER_ADDR", grpcAddr},
		{"HSMBROKER_CA", l.caCert},
		{"HSMBROKER_CERT", l.adminCert},
		{"HSMBROKER_KEY", l.adminKey},
		{"HSMBROKER_METRICS_ADDR", metricsAddr},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return pki.WriteFileAtomic(l.env, []byte(b.String()), 0o600)
}

func printDevBanner(w io.Writer, l devLayout, grpcAddr, metricsAddr string) {
	fmt.Fprintf(w, `
hsmbrokerd dev is ready: gRPC on %s (mutual TLS), metrics on http://%s/metrics
To use it from a shell:

    source %s
    hsmctl keys create --spec SYMMETRIC_DEFAULT --alias alias/demo

`, grpcAddr, metricsAddr, shellQuote(l.env))
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
