package deploy_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/hsmtest/gate"
	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
)

// TestLocalClusterPKCS11 loads libhsmbroker-pkcs11.so in a C program (the
// Oracle TDE sequence of pkcs11lib/e2e/testdata/tde.c) against a 3-node
// cluster of processes: the master key made through node3 alone is used
// through node1 alone, then a program with all three endpoints (node1
// first, the one it uses) keeps wrapping and unwrapping table keys while
// node1, the leader, is SIGKILLed; every call must succeed. Afterwards the
// key is used through node2 alone.
func TestLocalClusterPKCS11(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes; skipped with -short")
	}
	requireSoftHSM(t)
	cc := gate.Tool(t, "cc", "apt-get install gcc")
	if _, err := os.Stat("/usr/include/p11-kit-1/p11-kit/pkcs11.h"); err != nil {
		gate.Missing(t, "pkcs11.h is missing (apt-get install libp11-kit-dev): %v", err)
	}
	c := startLocalCluster(t)
	st := c.waitStatus("3 healthy nodes and a leader", func(st clusterStatus) error { return st.allHealthy(3) })
	if st.Leader != "node1" {
		t.Fatalf("leader %s, want node1 (the one the library uses first)", st.Leader)
	}

	lib := filepath.Join(c.bins, "libhsmbroker-pkcs11.so")
	if out, err := exec.Command("go", "build", "-buildmode=c-shared", "-o", lib, "../pkcs11lib").CombinedOutput(); err != nil {
		t.Fatalf("build the library: %v\n%s", err, out)
	}
	prog := filepath.Join(c.bins, "tde")
	if out, err := exec.Command(cc, "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", prog,
		"../pkcs11lib/e2e/testdata/tde.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc tde.c: %v\n%s", err, out)
	}

	// The admin client key of the cluster, sealed under a PIN, as an
	// Oracle host would keep it.
	cluster := c.envFile("cluster")
	keyPEM, err := os.ReadFile(cluster["HSMBROKER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	pin := hsmtest.RandomPIN()
	sealed, err := p11.SealKey(keyPEM, pin)
	if err != nil {
		t.Fatal(err)
	}
	sealedFile := filepath.Join(c.dir, "pkcs11-key.sealed.pem")
	if err := os.WriteFile(sealedFile, sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	libEnv := func(node string) []string {
		e := c.envFile(node)
		return append(os.Environ(), "HSMBROKER_PKCS11_CONFIG=", "HSMBROKER_KEY=",
			"HSMBROKER_ADDR="+e["HSMBROKER_ADDR"], "HSMBROKER_CA="+e["HSMBROKER_CA"], "HSMBROKER_CERT="+e["HSMBROKER_CERT"],
			p11.EnvSealedKey+"="+sealedFile, p11.EnvPIN+"="+pin)
	}
	run := func(node, mode, file string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, prog, lib, mode, file)
		cmd.Env = libEnv(node)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "ok\n") {
			c.logNodeLogs()
			t.Fatalf("tde %s through %s: %v\n%s", mode, node, err, out)
		}
		return string(out)
	}

	// Made through node3 alone; used through node1 alone once node1 has
	// applied it.
	wrapped := filepath.Join(c.dir, "wrapped.bin")
	run("node3", "set", wrapped)
	alias, _ := p11.AliasForLabel([]byte("ORACLE.TDE.HSM.MK.0123456789ABCDEF0123456789ABCDEF"))
	c.hsmctl("node3", "keys", "describe", alias)
	waitDescribe(c, "node1", alias)
	run("node1", "open", wrapped)

	// All three endpoints, node1 first: the program uses node1 until it
	// dies.
	stop := filepath.Join(c.dir, "killed")
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	loop := exec.CommandContext(ctx, prog, lib, "loop", stop)
	loop.Env = libEnv("cluster")
	var out bytes.Buffer
	loop.Stdout, loop.Stderr = &out, &out
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	killed := time.Now()
	c.script("kill", c.dir, "1")
	if pid := c.pids()["node1"]; running(pid) {
		t.Fatalf("node1 (pid %d) still runs after kill", pid)
	}
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loop.Wait(); err != nil || !strings.Contains(out.String(), "round trips") {
		c.logNodeLogs()
		t.Fatalf("the library failed across node1's SIGKILL: %v\n%s", err, out.String())
	}
	t.Logf("%s; the last 20 after node1's SIGKILL, done %v after it", strings.TrimSpace(out.String()), time.Since(killed).Round(time.Millisecond))

	// The key made through node3 is used through node2 alone, node1 dead.
	run("node2", "open", wrapped)
}

// waitDescribe waits until node describes the key by alias.
func waitDescribe(c *localCluster, node, alias string) {
	c.t.Helper()
	env := os.Environ()
	for k, v := range c.envFile(node) {
		env = append(env, k+"="+v)
	}
	deadline := time.Now().Add(pollTimeout)
	for {
		cmd := exec.Command(filepath.Join(c.bins, "hsmctl"), "keys", "describe", alias)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s does not describe %s after %v: %v\n%s", node, alias, pollTimeout, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
