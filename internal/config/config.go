// Package config reads the configuration file of `hsmbrokerd serve`: a
// YAML document, documented field by field in deploy/hsmbrokerd.example.yaml.
//
// Load applies defaults, resolves relative paths against the directory of
// the file, and validates. Unknown fields are errors, so a misspelt option
// fails loudly instead of silently keeping its default. Every validation
// error names the field it is about, as in "hsm.module: required".
//
// The file holds no secrets: the HSM PIN comes from a 0600 file
// (hsm.pin_file) or an environment variable (hsm.pin_env).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults applied by Load to fields left empty.
const (
	DefaultDataDir     = "/var/lib/hsmbroker"
	DefaultGRPCAddr    = ":7400"
	DefaultRaftAddr    = ":7401"
	DefaultMetricsAddr = "127.0.0.1:7490"
	DefaultRegion      = "us-east-1"
	DefaultAccount     = "000000000000"
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "json"
	DefaultOAEPSHA256  = "auto"
)

// Config is the `serve` configuration.
type Config struct {
	// NodeID is this node's Raft server ID: unique in the cluster and
	// stable for the life of the node. Required.
	NodeID string `yaml:"node_id"`

	// DataDir holds the node's state (the Raft log and snapshots under
	// DataDir/raft). Default DefaultDataDir.
	DataDir string `yaml:"data_dir"`

	// GRPCAddr is where the gRPC API listens (mutual TLS). Default
	// DefaultGRPCAddr.
	GRPCAddr string `yaml:"grpc_addr"`

	// GRPCAdvertise is the host:port other nodes dial to reach this node's
	// gRPC API (followers forward writes to the leader through it). Default:
	// grpc_addr when it names a host, else the host of raft_advertise (or
	// raft_addr) with grpc_addr's port.
	GRPCAdvertise string `yaml:"grpc_advertise"`

	// RaftAddr is where the Raft transport listens (mutual TLS). Default
	// DefaultRaftAddr.
	RaftAddr string `yaml:"raft_addr"`

	// RaftAdvertise is the host:port peers dial to reach this node's Raft
	// transport. Required when RaftAddr binds a wildcard address; the node
	// certificate must be valid for its host.
	RaftAdvertise string `yaml:"raft_advertise"`

	// MetricsAddr serves plain HTTP: /metrics, /healthz and /readyz.
	// Default DefaultMetricsAddr (loopback only).
	MetricsAddr string `yaml:"metrics_addr"`

	// KMS is the AWS KMS-compatible HTTP endpoint (and the XKS proxy API).
	// Not served unless KMS.Addr is set.
	KMS KMS `yaml:"kms"`

	// Vault is the TDE key endpoint (Vault KV version 2 reads for
	// databases), served over HTTPS with the node certificate. Not served
	// unless Vault.Addr is set.
	Vault Vault `yaml:"vault"`
	// KMIP is the KMIP server; not served unless KMIP.Addr is set.
	KMIP KMIP `yaml:"kmip"`

	// Region and Account make key ARNs
	// (arn:aws:kms:REGION:ACCOUNT:key/ID). Defaults DefaultRegion and
	// DefaultAccount. Every node of a cluster must use the same values.
	Region  string `yaml:"region"`
	Account string `yaml:"account"`

	// Bootstrap makes this node start a new cluster, with itself as the
	// only voter, when its Raft directory is empty. Set it on exactly one
	// node of a new cluster; it is ignored once Raft state exists.
	Bootstrap bool `yaml:"bootstrap"`

	// Join lists gRPC addresses of existing members. A node with no Raft
	// state and a Join list joins that cluster on start, with the one-time
	// token from JoinTokenFile or JoinTokenEnv, and receives the domain key
	// HSM to HSM. Once it is a member, Join is used only to ask, while the
	// node hears from no leader, whether it is still one (a node removed
	// while it was down learns it so). Must be empty when Bootstrap is set.
	Join []string `yaml:"join"`

	// JoinTokenFile is a file (mode 0600 or stricter) holding the join
	// token; JoinTokenEnv names an environment variable holding it
	// instead. Exactly one is required with Join.
	JoinTokenFile string `yaml:"join_token_file"`
	JoinTokenEnv  string `yaml:"join_token_env"`

	// TLS is the node's identity. The same certificate serves gRPC and
	// authenticates the node to its Raft peers.
	TLS TLS `yaml:"tls"`

	// HSM is the node's PKCS#11 partition.
	HSM HSM `yaml:"hsm"`

	// Raft tunes the consensus timeouts; zero values keep the defaults,
	// which suit a LAN.
	Raft Raft `yaml:"raft"`

	// Audit is the node's audit log.
	Audit Audit `yaml:"audit"`

	// Log configures the daemon's logs.
	Log Log `yaml:"log"`
}

// Vault configures the TDE key endpoint.
type Vault struct {
	// Addr is where it listens (host:port), HTTPS with tls.cert.
	Addr string `yaml:"addr"`
}

// Audit configures the audit log: one hash-chained JSON line per request
// the node answers, allowed or denied. A request whose line cannot be
// written fails, so the file must stay writable.
type Audit struct {
	// File is the log (created with mode 0600; an existing one is
	// continued). Default <data_dir>/audit.log.
	File string `yaml:"file"`
}

// TLS names the PEM files of the node's identity.
type TLS struct {
	// CA is the cluster CA certificate (bundle): client certificates and
	// Raft peers must chain to it. Required.
	CA string `yaml:"ca"`
	// Cert is the node certificate, valid for server and client
	// authentication. Required.
	Cert string `yaml:"cert"`
	// Key is the node certificate's private key. Required.
	Key string `yaml:"key"`
}

// KMS configures the AWS KMS JSON endpoint: the AWS CLI and SDKs reach
// the cluster's keys through it with an endpoint override, authenticated
// with SigV4 access keys.
type KMS struct {
	// Addr is where the endpoint listens. Empty: not served.
	Addr string `yaml:"addr"`
	// Plaintext serves plain HTTP instead of HTTPS. Only for a loopback
	// address or behind a TLS-terminating proxy on the same host: SigV4
	// protects requests from tampering, not from being read.
	Plaintext bool `yaml:"plaintext"`
	// Cert and Key are the HTTPS certificate and its key (PEM). Default
	// the node certificate, tls.cert and tls.key. Set both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CredentialsFile holds the access keys (JSON, mode 0600; see
	// docs/AWS_KMS_ENDPOINT.md), each standing for a principal. Required
	// with Addr. SIGHUP rereads it.
	CredentialsFile string `yaml:"credentials_file"`
	// Hosts, when set, are the names (host names or IP addresses, without
	// a port) clients reach this endpoint by. A request signed for any
	// other Host is refused, so that a request captured on its way to
	// another service that shares the access key cannot be replayed here.
	// Empty: any Host is accepted.
	Hosts []string `yaml:"hosts"`
	// XKS also serves the AWS KMS external key store proxy API on the same
	// listener, when XKS.CredentialsFile is set.
	XKS XKS `yaml:"xks"`
}

// XKS configures the external key store proxy API.
type XKS struct {
	// PathPrefix precedes /kms/xks/v1 in every XKS URI (AWS KMS's
	// XksProxyUriPath is PathPrefix + "/kms/xks/v1"). Optional.
	PathPrefix string `yaml:"path_prefix"`
	// CredentialsFile holds the proxy authentication credentials AWS KMS
	// signs with (same JSON form and mode as kms.credentials_file,
	// distinct keys). Setting it enables XKS. SIGHUP rereads it.
	CredentialsFile string `yaml:"credentials_file"`
	// Region is the AWS region whose KMS calls the proxy, as its
	// signatures name it. Default the broker's region.
	Region string `yaml:"region"`
}

// HSM configures the PKCS#11 partition. Zero numeric and duration values
// keep the partition's defaults.
type HSM struct {
	// Module is the path of the vendor's PKCS#11 library. Required.
	Module string `yaml:"module"`
	// TokenLabel and TokenSerial select the token; at least one is
	// required, and with both, both must match.
	TokenLabel  string `yaml:"token_label"`
	TokenSerial string `yaml:"token_serial"`
	// PINFile is a file (mode 0600 or stricter) holding the crypto-user
	// PIN. PINEnv names an environment variable holding it instead.
	// Exactly one of the two is required.
	PINFile string `yaml:"pin_file"`
	PINEnv  string `yaml:"pin_env"`
	// PoolSize bounds the sessions open for operations (default 8).
	PoolSize int `yaml:"pool_size"`
	// SessionWait bounds the wait for a free session (default 2s).
	SessionWait time.Duration `yaml:"session_wait"`
	// CallTimeout is the deadline of every PKCS#11 call (default 10s).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// CacheSize bounds the loaded key objects (default 4096).
	CacheSize int `yaml:"cache_size"`
	// Preload loads enabled keys into the HSM ahead of their first use on
	// this node (at start, after a restore, and as keys are created), up
	// to CacheSize. Worth it when CacheSize covers every key.
	Preload bool `yaml:"preload"`
	// OAEPSHA256 says how RSAES_OAEP_SHA_256 decryption is served: auto
	// (native when the token accepts it, else software unpadding), native
	// or software. Default auto.
	OAEPSHA256 string `yaml:"oaep_sha256"`
	// Env sets environment variables for the PKCS#11 library before it is
	// loaded: vendor libraries find their own configuration this way
	// (SOFTHSM2_CONF, ChrystokiConfigurationPath). Not for secrets: the
	// configuration file holds none.
	Env map[string]string `yaml:"env"`
}

// Raft holds optional consensus tunables; see cluster.Config for each.
type Raft struct {
	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	CommitTimeout      time.Duration `yaml:"commit_timeout"`
	SnapshotInterval   time.Duration `yaml:"snapshot_interval"`
	SnapshotThreshold  uint64        `yaml:"snapshot_threshold"`
	TrailingLogs       uint64        `yaml:"trailing_logs"`
	// PromoteSettle is how long a joined node, a non-voter until then,
	// must stay caught up with a healthy HSM before the leader makes it a
	// voter (broker.DaemonConfig.PromoteSettle). Default 10s.
	PromoteSettle time.Duration `yaml:"promote_settle"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// RaftDir is where the node keeps its Raft log and snapshots.
func (c Config) RaftDir() string { return filepath.Join(c.DataDir, "raft") }

// AuditFile is the node's audit log: Audit.File, else
// <data_dir>/audit.log.
func (c Config) AuditFile() string {
	if c.Audit.File != "" {
		return c.Audit.File
	}
	return filepath.Join(c.DataDir, "audit.log")
}

// Load reads, defaults and validates the configuration file at path.
// Relative paths in it are taken relative to the file's directory.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b, filepath.Dir(abs))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse is Load for a document already read; baseDir anchors relative
// paths.
func Parse(data []byte, baseDir string) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, readable(err, data)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("more than one YAML document")
	}
	c.setDefaults()
	c.resolvePaths(baseDir)
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.DataDir, DefaultDataDir)
	def(&c.GRPCAddr, DefaultGRPCAddr)
	def(&c.RaftAddr, DefaultRaftAddr)
	def(&c.MetricsAddr, DefaultMetricsAddr)
	def(&c.Region, DefaultRegion)
	def(&c.Account, DefaultAccount)
	def(&c.Log.Level, DefaultLogLevel)
	def(&c.Log.Format, DefaultLogFormat)
	def(&c.HSM.OAEPSHA256, DefaultOAEPSHA256)
}

func (c *Config) resolvePaths(base string) {
	for _, p := range []*string{&c.DataDir, &c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.HSM.PINFile, &c.JoinTokenFile,
		&c.KMS.Cert, &c.KMS.Key, &c.KMS.CredentialsFile, &c.KMS.XKS.CredentialsFile, &c.Audit.File, &c.KMIP.Cert, &c.KMIP.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}

// Validate reports every problem in c, one per line, each naming its
// field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	required := func(field, v string) {
		if strings.TrimSpace(v) == "" {
			bad(field, "required")
		}
	}

	required("node_id", c.NodeID)
	if strings.ContainsFunc(c.NodeID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("node_id", "must not contain spaces or control characters")
	}
	required("data_dir", c.DataDir)

	checkAddr := func(field, v string, mayBeEmpty bool) (host string) {
		if v == "" {
			if !mayBeEmpty {
				bad(field, "required")
			}
			return ""
		}
		h, port, err := net.SplitHostPort(v)
		if err != nil {
			bad(field, "want host:port: %v", err)
			return ""
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad(field, "port %q is not a number from 0 to 65535", port)
		} else if n == 0 && field != "metrics_addr" {
			bad(field, "port 0 is not allowed: peers and clients need a fixed port")
		}
		return h
	}
	checkAddr("grpc_addr", c.GRPCAddr, false)
	raftHost := checkAddr("raft_addr", c.RaftAddr, false)
	checkAddr("metrics_addr", c.MetricsAddr, false)
	checkAddr("kms.addr", c.KMS.Addr, true)
	checkAddr("vault.addr", c.Vault.Addr, true)
	advHost := checkAddr("raft_advertise", c.RaftAdvertise, true)
	if c.RaftAdvertise == "" && c.RaftAddr != "" && isWildcard(raftHost) {
		bad("raft_advertise", "required when raft_addr (%s) binds a wildcard address", c.RaftAddr)
	}
	if c.RaftAdvertise != "" && isWildcard(advHost) {
		bad("raft_advertise", "%s is not an address peers can dial", c.RaftAdvertise)
	}

	if h := checkAddr("grpc_advertise", c.GRPCAdvertise, true); c.GRPCAdvertise != "" && isWildcard(h) {
		bad("grpc_advertise", "%s is not an address other nodes can dial", c.GRPCAdvertise)
	}

	if c.Bootstrap && len(c.Join) > 0 {
		bad("join", "must be empty when bootstrap is true")
	}
	for i, j := range c.Join {
		checkAddr(fmt.Sprintf("join[%d]", i), j, false)
	}
	switch {
	case len(c.Join) > 0 && c.JoinTokenFile == "" && c.JoinTokenEnv == "":
		bad("join_token_file", "required with join (or join_token_env)")
	case c.JoinTokenFile != "" && c.JoinTokenEnv != "":
		bad("join_token_file", "set either join_token_file or join_token_env, not both")
	case len(c.Join) == 0 && (c.JoinTokenFile != "" || c.JoinTokenEnv != ""):
		bad("join", "required when a join token is configured")
	}

	required("tls.ca", c.TLS.CA)
	required("tls.cert", c.TLS.Cert)
	required("tls.key", c.TLS.Key)

	c.validateKMS(bad)
	c.validateKMIP(bad)

	required("hsm.module", c.HSM.Module)
	if c.HSM.TokenLabel == "" && c.HSM.TokenSerial == "" {
		bad("hsm.token_label", "required (or hsm.token_serial)")
	}
	if len(c.HSM.TokenLabel) > 32 {
		bad("hsm.token_label", "longer than 32 characters")
	}
	switch {
	case c.HSM.PINFile == "" && c.HSM.PINEnv == "":
		bad("hsm.pin_file", "required (or hsm.pin_env)")
	case c.HSM.PINFile != "" && c.HSM.PINEnv != "":
		bad("hsm.pin_file", "set either hsm.pin_file or hsm.pin_env, not both")
	}
	for name := range c.HSM.Env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			bad("hsm.env", "%q is not an environment variable name", name)
		}
	}
	if c.HSM.PoolSize < 0 {
		bad("hsm.pool_size", "must not be negative")
	}
	if c.HSM.CacheSize < 0 {
		bad("hsm.cache_size", "must not be negative")
	}
	if c.HSM.SessionWait < 0 {
		bad("hsm.session_wait", "must not be negative")
	}
	if c.HSM.CallTimeout < 0 {
		bad("hsm.call_timeout", "must not be negative")
	}
	switch c.HSM.OAEPSHA256 {
	case "auto", "native", "software":
	default:
		bad("hsm.oaep_sha256", "%q: want auto, native or software", c.HSM.OAEPSHA256)
	}

	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"raft.heartbeat_timeout", c.Raft.HeartbeatTimeout},
		{"raft.election_timeout", c.Raft.ElectionTimeout},
		{"raft.leader_lease_timeout", c.Raft.LeaderLeaseTimeout},
		{"raft.commit_timeout", c.Raft.CommitTimeout},
		{"raft.snapshot_interval", c.Raft.SnapshotInterval},
		{"raft.promote_settle", c.Raft.PromoteSettle},
	} {
		if d.v < 0 {
			bad(d.field, "must not be negative")
		}
	}
	if c.Raft.LeaderLeaseTimeout > 0 && c.Raft.HeartbeatTimeout > 0 && c.Raft.LeaderLeaseTimeout > c.Raft.HeartbeatTimeout {
		bad("raft.leader_lease_timeout", "must not exceed raft.heartbeat_timeout")
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "%q: want json or text", c.Log.Format)
	}
	return errors.Join(errs...)
}

// awsHost checks one of kms.hosts: a host name or an IP address, without
// a scheme, port or path.
func awsHost(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("want a host name or IP address of 1 to 253 characters")
	}
	if net.ParseIP(strings.Trim(h, "[]")) != nil {
		return nil
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return errors.New("want a host name (letters, digits, hyphens and dots) or an IP address, without a scheme or port")
		}
	}
	return nil
}

// validateKMS checks the kms section; an endpoint without a listen address
// has nothing else to check.
func (c Config) validateKMS(bad func(field, format string, args ...any)) {
	k := c.KMS
	if k.Addr == "" {
		if k.CredentialsFile != "" || k.XKS.CredentialsFile != "" || k.Cert != "" || k.Key != "" || len(k.Hosts) > 0 {
			bad("kms.addr", "required when other kms fields are set")
		}
		return
	}
	if k.CredentialsFile == "" {
		bad("kms.credentials_file", "required with kms.addr")
	}
	for _, h := range k.Hosts {
		if err := awsHost(h); err != nil {
			bad("kms.hosts", "%q: %v", h, err)
		}
	}
	if (k.Cert == "") != (k.Key == "") {
		bad("kms.cert", "set both kms.cert and kms.key, or neither to use the node certificate")
	}
	if k.Plaintext && k.Cert != "" {
		bad("kms.cert", "not used with kms.plaintext")
	}
	if k.XKS.CredentialsFile == "" && (k.XKS.PathPrefix != "" || k.XKS.Region != "") {
		bad("kms.xks.credentials_file", "required when other kms.xks fields are set")
	}
	if k.XKS.CredentialsFile != "" && k.XKS.CredentialsFile == k.CredentialsFile {
		bad("kms.xks.credentials_file", "must not be kms.credentials_file: the proxy credential is not a user's access key")
	}
}

// GRPCAdvertiseAddr is the gRPC address this node publishes to the other
// members; see GRPCAdvertise.
func (c Config) GRPCAdvertiseAddr() string {
	if c.GRPCAdvertise != "" {
		return c.GRPCAdvertise
	}
	host, port, err := net.SplitHostPort(c.GRPCAddr)
	if err != nil || !isWildcard(host) {
		return c.GRPCAddr
	}
	for _, a := range []string{c.RaftAdvertise, c.RaftAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && !isWildcard(h) {
			return net.JoinHostPort(h, port)
		}
	}
	return c.GRPCAddr
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
