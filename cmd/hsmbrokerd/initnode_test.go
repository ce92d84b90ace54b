package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/internal/config"
)

// TestInitNode prepares two nodes of a cluster the way
// deploy/local-cluster.sh does, twice: the second run makes nothing anew.
func TestInitNode(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	initNode := func(id string, extra ...string) string {
		t.Helper()
		args := append([]string{"init-node", "--dir", filepath.Join(dir, id), "--ca-dir", ca, "--node-id", id, "--module", module,
			"--grpc-addr", "127.0.0.1:7410", "--raft-addr", "127.0.0.1:7411", "--metrics-addr", "127.0.0.1:7412",
			"--kms-addr", "127.0.0.1:7413", "--env-file", filepath.Join(dir, id+".env")}, extra...)
		out, err := exec.Command(binPath, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("init-node %s: %v\n%s", id, err, out)
		}
		return string(out)
	}

	first := initNode("node1", "--bootstrap")
	second := initNode("node2", "--join", "127.0.0.1:7410")
	for _, want := range []string{"token initialized", "cluster CA created", "AWS access key created", "configuration written"} {
		if !strings.Contains(first, want) {
			t.Errorf("first init-node output lacks %q:\n%s", want, first)
		}
	}
	if strings.Contains(second, "cluster CA created") || strings.Contains(second, "AWS access key created") {
		t.Errorf("the second node made its own CA or access key:\n%s", second)
	}
	again := initNode("node1", "--bootstrap")
	for _, unwanted := range []string{"initialized", "created", "issued", "configuration written"} {
		if strings.Contains(again, unwanted) {
			t.Errorf("init-node run again logged %q:\n%s", unwanted, again)
		}
	}

	modes := map[string]uint32{
		"ca": 0o700, "ca/ca-key.pem": 0o600, "ca/admin-key.pem": 0o600, "ca/kms-credentials.json": 0o600,
		"node1": 0o700, "node1/softhsm/user.pin": 0o600, "node1/softhsm/so.pin": 0o600, "node1/tls/node-key.pem": 0o600,
		"node1/hsmbrokerd.yaml": 0o600, "node1.env": 0o600, "node2/tls/ca.pem": 0o644,
	}
	for f, want := range modes {
		if got := fileMode(t, filepath.Join(dir, f)); uint32(got) != want {
			t.Errorf("%s: mode %04o, want %04o", f, got, want)
		}
	}
	for _, id := range []string{"node1", "node2"} {
		c, err := config.Load(filepath.Join(dir, id, "hsmbrokerd.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if c.NodeID != id || c.HSM.TokenLabel != id || c.HSM.Env["SOFTHSM2_CONF"] != filepath.Join(dir, id, "softhsm", "softhsm2.conf") ||
			c.KMS.CredentialsFile != filepath.Join(ca, "kms-credentials.json") || c.DataDir != filepath.Join(dir, id, "data") {
			t.Errorf("%s config: %+v", id, c)
		}
		if (id == "node1") != c.Bootstrap || (id == "node2") != (c.JoinTokenFile == filepath.Join(dir, id, "join.token")) {
			t.Errorf("%s: bootstrap %v, join %v %q", id, c.Bootstrap, c.Join, c.JoinTokenFile)
		}
		env := readEnvFile(t, filepath.Join(dir, id+".env"))
		if env["HSMBROKER_ADDR"] != "127.0.0.1:7410" || env["AWS_ENDPOINT_URL_KMS"] != "https://127.0.0.1:7413" ||
			env["AWS_CA_BUNDLE"] != filepath.Join(ca, "ca.pem") || env["AWS_ACCESS_KEY_ID"] == "" || env["HSMBROKER_CERT"] != filepath.Join(ca, "admin.pem") {
			t.Errorf("%s.env: %v", id, env)
		}
		checkNoPINs(t, filepath.Join(dir, id), first+second+again)
		checkNoSecret(t, env["AWS_SECRET_ACCESS_KEY"], first+second+again)
	}

	for _, bad := range [][]string{
		{"--bootstrap", "--join", "127.0.0.1:1"},
		{},
	} {
		args := append([]string{"init-node", "--dir", filepath.Join(dir, "x"), "--ca-dir", ca, "--node-id", "x",
			"--grpc-addr", "127.0.0.1:1", "--raft-addr", "127.0.0.1:2", "--metrics-addr", "127.0.0.1:3"}, bad...)
		if out, err := exec.Command(binPath, args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "bootstrap") {
			t.Errorf("init-node %v: %v\n%s", bad, err, out)
		}
	}
}
