package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration.
const minimal = `
node_id: node-1
raft_advertise: 10.0.0.1:7401
tls: {ca: /etc/hsmbroker/ca.pem, cert: /etc/hsmbroker/node.pem, key: /etc/hsmbroker/node-key.pem}
hsm: {module: /usr/lib/softhsm/libsofthsm2.so, token_label: hsmbroker, pin_file: /etc/hsmbroker/user.pin}
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "/base")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		NodeID:        "node-1",
		DataDir:       DefaultDataDir,
		GRPCAddr:      DefaultGRPCAddr,
		RaftAddr:      DefaultRaftAddr,
		RaftAdvertise: "10.0.0.1:7401",
		MetricsAddr:   DefaultMetricsAddr,
		Region:        DefaultRegion,
		Account:       DefaultAccount,
		TLS:           TLS{CA: "/etc/hsmbroker/ca.pem", Cert: "/etc/hsmbroker/node.pem", Key: "/etc/hsmbroker/node-key.pem"},
		HSM: HSM{
			Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "hsmbroker",
			PINFile: "/etc/hsmbroker/user.pin", OAEPSHA256: "auto",
		},
		Log: Log{Level: "info", Format: "json"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", c, want)
	}
	if got := c.RaftDir(); got != filepath.Join(DefaultDataDir, "raft") {
		t.Errorf("RaftDir = %q", got)
	}
	if got := c.AuditFile(); got != filepath.Join(DefaultDataDir, "audit.log") {
		t.Errorf("AuditFile = %q", got)
	}
}

func TestParseFull(t *testing.T) {
	doc := `
node_id: node-2
data_dir: data
grpc_addr: 10.0.0.2:7400
raft_addr: 10.0.0.2:7401
metrics_addr: 10.0.0.2:7490
kms:
  addr: 10.0.0.2:7480
  credentials_file: kms-credentials.json
  xks: {path_prefix: /keystores/prod, credentials_file: /etc/hsmbroker/xks-credentials.json}
region: eu-west-1
account: "123456789012"
bootstrap: false
join: [10.0.0.1:7400, 10.0.0.3:7400]
join_token_file: join.token
tls: {ca: tls/ca.pem, cert: tls/node.pem, key: tls/node-key.pem}
hsm:
  module: /opt/luna/libCryptoki2_64.so
  token_serial: "1234"
  pin_env: HSMBROKER_PIN
  pool_size: 16
  session_wait: 500ms
  call_timeout: 5s
  cache_size: 100
  oaep_sha256: native
  env: {ChrystokiConfigurationPath: /etc/luna}
raft:
  heartbeat_timeout: 1s
  election_timeout: 1s
  leader_lease_timeout: 500ms
  commit_timeout: 50ms
  snapshot_interval: 1m
  snapshot_threshold: 1000
  trailing_logs: 2000
  promote_settle: 30s
audit: {file: audit/hsmbroker.log}
log: {level: debug, format: text}
`
	c, err := Parse([]byte(doc), "/etc/hsmbroker")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.DataDir != "/etc/hsmbroker/data" || c.TLS.Key != "/etc/hsmbroker/tls/node-key.pem" || c.JoinTokenFile != "/etc/hsmbroker/join.token" {
		t.Errorf("relative paths not resolved: data_dir=%q tls.key=%q join_token_file=%q", c.DataDir, c.TLS.Key, c.JoinTokenFile)
	}
	if c.HSM.SessionWait != 500*time.Millisecond || c.HSM.CallTimeout != 5*time.Second {
		t.Errorf("durations: session_wait=%v call_timeout=%v", c.HSM.SessionWait, c.HSM.CallTimeout)
	}
	if c.Raft.SnapshotInterval != time.Minute || c.Raft.TrailingLogs != 2000 || c.Raft.PromoteSettle != 30*time.Second {
		t.Errorf("raft: %+v", c.Raft)
	}
	if len(c.Join) != 2 || c.Account != "123456789012" || c.HSM.OAEPSHA256 != "native" {
		t.Errorf("join=%v account=%q oaep=%q", c.Join, c.Account, c.HSM.OAEPSHA256)
	}
	wantKMS := KMS{Addr: "10.0.0.2:7480", CredentialsFile: "/etc/hsmbroker/kms-credentials.json",
		XKS: XKS{PathPrefix: "/keystores/prod", CredentialsFile: "/etc/hsmbroker/xks-credentials.json"}}
	if !reflect.DeepEqual(c.KMS, wantKMS) {
		t.Errorf("kms:\n got %+v\nwant %+v", c.KMS, wantKMS)
	}
	if c.AuditFile() != "/etc/hsmbroker/audit/hsmbroker.log" {
		t.Errorf("audit file %q", c.AuditFile())
	}
	if c.HSM.Env["ChrystokiConfigurationPath"] != "/etc/luna" {
		t.Errorf("hsm.env = %v", c.HSM.Env)
	}
}

func TestParseErrors(t *testing.T) {
	// edit replaces one line of minimal, or appends when old is "".
	edit := func(old, repl string) string {
		if old == "" {
			return minimal + repl + "\n"
		}
		if !strings.Contains(minimal, old) {
			panic("test edit does not apply: " + old)
		}
		return strings.Replace(minimal, old, repl, 1)
	}
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"empty document", "", []string{"node_id: required", "tls.ca: required", "hsm.module: required", "hsm.pin_file: required"}},
		{"unknown field", edit("", "colour: blue"), []string{`unknown setting "colour"`, "hsmbrokerd.example.yaml"}},
		{"unknown nested field", edit("", "log: {level: info, colour: blue}"), []string{`unknown setting "colour" under log`}},
		{"unknown field two levels down", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, xks: {colour: blue}}"), []string{`unknown setting "colour" under kms.xks`}},
		{"a list for a string", edit("", "region: [a, b]"), []string{"region: a list is not a string"}},
		{"missing module", edit("module: /usr/lib/softhsm/libsofthsm2.so, ", ""), []string{"hsm.module: required"}},
		{"no token", edit("token_label: hsmbroker, ", ""), []string{"hsm.token_label: required"}},
		{"two PIN sources", edit("pin_file:", "pin_env: PIN, pin_file:"), []string{"hsm.pin_file: set either"}},
		{"bad oaep mode", edit("user.pin}", "user.pin, oaep_sha256: sha1}"), []string{"hsm.oaep_sha256"}},
		{"negative pool", edit("user.pin}", "user.pin, pool_size: -1}"), []string{"hsm.pool_size: must not be negative"}},
		{"duration without unit", edit("user.pin}", "user.pin, call_timeout: 5}"), []string{"line 5", `call_timeout: "5" is not a duration with a unit, such as 5s`}},
		{"bad duration", edit("", "raft: {heartbeat_timeout: soon}"), []string{"soon"}},
		{"negative settle time", edit("", "raft: {promote_settle: -1s}"), []string{"raft.promote_settle: must not be negative"}},
		{"lease over heartbeat", edit("", "raft: {heartbeat_timeout: 1s, leader_lease_timeout: 2s}"), []string{"raft.leader_lease_timeout"}},
		{"wildcard raft without advertise", edit("raft_advertise: 10.0.0.1:7401", ""), []string{"raft_advertise: required when raft_addr"}},
		{"wildcard advertise", edit("raft_advertise: 10.0.0.1:7401", "raft_advertise: 0.0.0.0:7401"), []string{"raft_advertise: 0.0.0.0:7401 is not an address"}},
		{"grpc address without port", edit("", "grpc_addr: localhost"), []string{"grpc_addr: want host:port"}},
		{"grpc port zero", edit("", "grpc_addr: 127.0.0.1:0"), []string{"grpc_addr: port 0"}},
		{"raft port out of range", edit("", "raft_addr: 127.0.0.1:70000"), []string{"raft_addr: port"}},
		{"bootstrap and join", edit("", "bootstrap: true\njoin: [10.0.0.3:7400]"), []string{"join: must be empty"}},
		{"bad join address", edit("", "join: [nowhere]\njoin_token_env: T"), []string{"join[0]: want host:port"}},
		{"join without token", edit("", "join: [10.0.0.3:7400]"), []string{"join_token_file: required with join"}},
		{"join with two token sources", edit("", "join: [10.0.0.3:7400]\njoin_token_file: t\njoin_token_env: T"), []string{"join_token_file: set either"}},
		{"token without join", edit("", "join_token_env: T"), []string{"join: required when a join token"}},
		{"wildcard grpc advertise", edit("", "grpc_advertise: 0.0.0.0:7400"), []string{"grpc_advertise: 0.0.0.0:7400 is not an address"}},
		{"kms without credentials", edit("", "kms: {addr: 127.0.0.1:7480}"), []string{"kms.credentials_file: required"}},
		{"kms bad address", edit("", "kms: {addr: 7480, credentials_file: c.json}"), []string{"kms.addr: want host:port"}},
		{"kms fields without address", edit("", "kms: {credentials_file: c.json}"), []string{"kms.addr: required when"}},
		{"kms cert without key", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, cert: kms.pem}"), []string{"kms.cert: set both"}},
		{"kms plaintext with cert", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, plaintext: true, cert: a, key: b}"), []string{"kms.cert: not used"}},
		{"xks prefix without credentials", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, xks: {path_prefix: /x}}"), []string{"kms.xks.credentials_file: required"}},
		{"xks sharing user credentials", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, xks: {credentials_file: c.json}}"), []string{"kms.xks.credentials_file: must not"}},
		{"kms host with port", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, hosts: [kms.example.internal, 'kms.example.internal:443']}"), []string{`kms.hosts: "kms.example.internal:443": want a host name`}},
		{"kms host with scheme", edit("", "kms: {addr: 127.0.0.1:7480, credentials_file: c.json, hosts: ['https://kms.example.internal']}"), []string{`kms.hosts: "https://kms.example.internal"`}},
		{"kms hosts without address", edit("", "kms: {hosts: [kms.example.internal]}"), []string{"kms.addr: required when"}},
		{"old kms_addr", edit("", "kms_addr: 127.0.0.1:7480"), []string{`unknown setting "kms_addr"`}},
		{"bad hsm env name", edit("user.pin}", "user.pin, env: {\"A=B\": x}}"), []string{"hsm.env"}},
		{"bad log level", edit("", "log: {level: loud}"), []string{"log.level"}},
		{"bad log format", edit("", "log: {format: xml}"), []string{"log.format"}},
		{"node id with space", edit("node_id: node-1", "node_id: node 1"), []string{"node_id: must not contain"}},
		{"duplicate key", edit("", "node_id: node-2"), []string{"already defined"}},
		{"two documents", minimal + "---\nnode_id: x\n", []string{"more than one YAML document"}},
		{"not a mapping", "- a\n- b\n", []string{"must be a mapping of settings"}},
		{"a string document", "hsmbrokerd\n", []string{"not a string"}},
		{"a string for a list", edit("", "join: 127.0.0.1:7400"), []string{`join: "127.0.0.1:7400" is not a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "/base")
			if err == nil {
				t.Fatalf("Parse succeeded, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "config.") || strings.Contains(err.Error(), "!!") {
				t.Errorf("error %q shows the decoder's Go terms", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hsmbrokerd.yaml")
	doc := strings.Replace(minimal, "pin_file: /etc/hsmbroker/user.pin", "pin_file: user.pin", 1)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := filepath.Join(dir, "user.pin"); c.HSM.PINFile != want {
		t.Errorf("pin_file = %q, want %q", c.HSM.PINFile, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) err = %v, want one naming the file", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("node_id: n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), "hsm.module: required") {
		t.Errorf("Load(bad) err = %v, want one naming the file and the field", err)
	}
}

// TestExampleConfig keeps the documented example in deploy/ loadable.
func TestExampleConfig(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "deploy", "hsmbrokerd.example.yaml"))
	if err != nil {
		t.Fatalf("deploy/hsmbrokerd.example.yaml: %v", err)
	}
	if c.NodeID == "" || c.HSM.Module == "" {
		t.Fatalf("example config lost its content: %+v", c)
	}
}

// TestClusterExampleConfigs keeps the 3-node examples in deploy/cluster
// loadable and consistent: one founder, two joiners, distinct identities.
func TestClusterExampleConfigs(t *testing.T) {
	seen := map[string]bool{}
	bootstraps := 0
	for i := 1; i <= 3; i++ {
		path := filepath.Join("..", "..", "deploy", "cluster", fmt.Sprintf("node%d.yaml", i))
		c, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		id := fmt.Sprintf("node%d", i)
		if c.NodeID != id {
			t.Errorf("%s: node_id %q, want %q", path, c.NodeID, id)
		}
		for _, v := range []string{c.GRPCAdvertiseAddr(), c.RaftAdvertise, c.MetricsAddr, c.HSM.TokenLabel} {
			if seen[v] {
				t.Errorf("%s: %q is used by another node too", path, v)
			}
			seen[v] = true
		}
		if c.Bootstrap {
			bootstraps++
		} else if len(c.Join) == 0 || c.JoinTokenFile == "" {
			t.Errorf("%s: neither bootstrap nor join", path)
		}
		for _, j := range c.Join {
			if j == c.GRPCAdvertiseAddr() {
				t.Errorf("%s: joins through itself", path)
			}
		}
		if c.KMS.Addr == "" || c.KMS.CredentialsFile == "" {
			t.Errorf("%s: no AWS KMS endpoint", path)
		}
	}
	if bootstraps != 1 {
		t.Errorf("%d nodes bootstrap, want 1", bootstraps)
	}
}

func TestGRPCAdvertiseAddr(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"explicit", Config{GRPCAdvertise: "node-1.example:7400", GRPCAddr: ":7400"}, "node-1.example:7400"},
		{"specific bind", Config{GRPCAddr: "10.0.0.1:7400", RaftAdvertise: "10.9.9.9:7401"}, "10.0.0.1:7400"},
		{"from raft advertise", Config{GRPCAddr: ":7400", RaftAddr: ":7401", RaftAdvertise: "10.0.0.2:7401"}, "10.0.0.2:7400"},
		{"from raft bind", Config{GRPCAddr: "0.0.0.0:7500", RaftAddr: "10.0.0.3:7401"}, "10.0.0.3:7500"},
		{"IPv6", Config{GRPCAddr: "[::]:7400", RaftAdvertise: "[fd00::1]:7401"}, "[fd00::1]:7400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.GRPCAdvertiseAddr(); got != tt.want {
				t.Errorf("GRPCAdvertiseAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  s3cret-token\n", 0o600)
	loose := write("loose", "s3cret-token\n", 0o640)
	empty := write("empty", "\n", 0o600)
	huge := write("huge", strings.Repeat("s3cret", 20000), 0o600)
	t.Setenv("HSMBROKER_TEST_TOKEN", "env-token")
	tests := []struct {
		name, file, env string
		want            string
		wantErr         string
	}{
		{"file", good, "", "s3cret-token", ""},
		{"file wins", good, "HSMBROKER_TEST_TOKEN", "s3cret-token", ""},
		{"env", "", "HSMBROKER_TEST_TOKEN", "env-token", ""},
		{"loose file", loose, "", "", "chmod 600"},
		{"empty file", empty, "", "", "is empty"},
		{"missing file", filepath.Join(dir, "nope"), "", "", "nope"},
		{"unset env", "", "HSMBROKER_TEST_UNSET", "", "HSMBROKER_TEST_UNSET"},
		{"nothing", "", "", "", "no file"},
		{"a file past 64 KiB", huge, "", "", "more than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadSecret(tt.file, tt.env)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrSecret mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("err %q shows the secret", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("LoadSecret = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestLoadJoinToken: a join token must have the form the cluster gives
// it; anything else is refused naming its source, never its value.
func TestLoadJoinToken(t *testing.T) {
	dir := t.TempDir()
	token := "hsmbj_" + strings.Repeat("A", 42) + "Q" // 32 bytes in URL-safe base64
	for _, tt := range []struct{ name, body, wantErr string }{
		{"a token", token + "\n", ""},
		{"another secret", "s3cret-token\n", "does not hold a join token"},
		{"the prefix alone", "hsmbj_\n", "does not hold a join token"},
		{"short", token[:len(token)-2] + "\n", "does not hold a join token"},
		{"not base64", "hsmbj_" + strings.Repeat("*", 43) + "\n", "does not hold a join token"},
		{"binary", "\x00\xff\xfe s3cret", "does not hold a join token"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadJoinToken(p, "")
		if tt.wantErr == "" {
			if err != nil || got != token {
				t.Errorf("%s: %q, %v", tt.name, got, err)
			}
			continue
		}
		if !errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), p) ||
			strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "AAAA") {
			t.Errorf("%s: %v, want ErrSecret naming %s and saying %q, without the value", tt.name, err, p, tt.wantErr)
		}
	}
	t.Setenv("HSMBROKER_TEST_JOIN", "s3cret")
	if _, err := LoadJoinToken("", "HSMBROKER_TEST_JOIN"); err == nil || !strings.Contains(err.Error(), "environment variable HSMBROKER_TEST_JOIN") {
		t.Errorf("a join token from the environment: %v", err)
	}
}
