package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// hsmbrokerd dev serves KMIP on --kmip-addr with the dev client
// certificate, as dev.env says: PyKMIP registers, activates and reads a
// key (the MongoDB sequence) through it.
func TestDevServesKMIP(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	py := hsmtest.RequirePyKMIP(t)
	buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	var addrs []string
	p := startDev(t, module, dir, &addrs)
	defer p.stop(t)
	env := readEnvFile(t, filepath.Join(dir, "dev.env"))
	host, port, err := net.SplitHostPort(env["HSMBROKER_KMIP_ADDR"])
	if err != nil {
		t.Fatalf("HSMBROKER_KMIP_ADDR=%q: %v", env["HSMBROKER_KMIP_ADDR"], err)
	}
	out, err := exec.Command(py, filepath.Join("..", "..", "broker", "kmip", "testdata", "pykmip_client.py"),
		host, port, env["HSMBROKER_CERT"], env["HSMBROKER_KEY"], env["HSMBROKER_CA"], "mongodb", "1.2").CombinedOutput()
	if err != nil {
		t.Fatalf("PyKMIP against hsmbrokerd dev: %v\n%s\n%s", err, out, p.out.String())
	}
	for _, want := range []string{`"get": true`, `"state": ["ACTIVE"]`, `"missing": "ITEM_NOT_FOUND"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("PyKMIP printed %s; want %s", out, want)
		}
	}
}

// hsmbrokerd serve with a kmip: section serves KMIP with the node
// certificate; a client certificate from the cluster CA gets in.
func TestServeKMIP(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	py := hsmtest.RequirePyKMIP(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	kmipAddr := freeAddrs(t, 1)[0]
	n := c.node(t, "node-1", "bootstrap: true\nkmip: {addr: \""+kmipAddr+"\"}\n")
	p := c.start(t, n)
	defer p.stop(t)
	host, port, _ := net.SplitHostPort(kmipAddr)
	out, err := exec.Command(py, filepath.Join("..", "..", "broker", "kmip", "testdata", "pykmip_client.py"),
		host, port, c.clientCert, c.clientKey, c.caFile, "pgtde", "1.4").CombinedOutput()
	if err != nil {
		t.Fatalf("PyKMIP against hsmbrokerd serve: %v\n%s\n%s", err, out, p.out.String())
	}
	if !strings.Contains(string(out), `"get": true`) || !strings.Contains(string(out), `"locate": true`) {
		t.Errorf("PyKMIP printed %s", out)
	}
}
