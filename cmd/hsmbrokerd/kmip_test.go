package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
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

// Three hsmbrokerd serve processes with KMIP: a key registered through one
// node is located and read through another, and again after the leader
// is killed with SIGKILL.
func TestServeKMIPClusterSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("three daemons; skipped under -short")
	}
	t.Parallel()
	module := requireSoftHSM(t)
	py := hsmtest.RequirePyKMIP(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	kmipAddrs := freeAddrs(t, 3)
	kmipSection := func(i int) string { return "kmip: {addr: \"" + kmipAddrs[i] + "\"}\n" }
	n1 := c.node(t, "node-1", "bootstrap: true\n"+kmipSection(0))
	procs := []*proc{c.start(t, n1)}
	conn := dial(t, n1.grpcAddr, c.caFile, c.clientCert, c.clientKey)
	waitServing(t, procs[0], conn)
	cs := pb.NewClusterServiceClient(conn)
	nodes := []*serveNode{n1}
	for i := 1; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		id := fmt.Sprintf("node-%d", i+1)
		tok, err := cs.CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{NodeId: id})
		cancel()
		if err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
		tokenFile := filepath.Join(c.dir, fmt.Sprintf("join-%d.token", i))
		if err := os.WriteFile(tokenFile, []byte(tok.GetToken()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n := c.node(t, id, fmt.Sprintf("join: [%s]\njoin_token_file: %s\n%s", n1.grpcAddr, tokenFile, kmipSection(i)))
		p := c.start(t, n)
		c.checkServing(t, p, n)
		nodes, procs = append(nodes, n), append(procs, p)
	}
	defer func() {
		for _, p := range procs {
			if !p.exited() {
				p.stop(t)
			}
		}
	}()
	// The joined nodes are non-voters until the leader promotes them; a
	// leader killed before that would leave no quorum.
	waitFor(t, procs[0], "three voters", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cs.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
		if err != nil {
			return err
		}
		for _, n := range st.GetNodes() {
			if n.GetRole() == pb.NodeRole_NODE_ROLE_NON_VOTER {
				return fmt.Errorf("%s is a non-voter", n.GetId())
			}
		}
		if len(st.GetNodes()) != 3 {
			return fmt.Errorf("%d members", len(st.GetNodes()))
		}
		return nil
	})
	script := filepath.Join("..", "..", "broker", "kmip", "testdata", "pykmip_client.py")
	pykmip := func(i int, scenario string) (map[string]any, error) {
		host, port, _ := net.SplitHostPort(kmipAddrs[i])
		out, err := exec.Command(py, script, host, port, c.clientCert, c.clientKey, c.caFile, scenario, "1.4").Output()
		if err != nil {
			return nil, fmt.Errorf("%s through node %d: %v: %s", scenario, i+1, err, out)
		}
		var m map[string]any
		return m, json.Unmarshal(out, &m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := cs.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leader := -1
	for i, n := range nodes {
		if n.id == st.GetLeaderId() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("leader %q is none of the nodes", st.GetLeaderId())
	}
	writer, reader := (leader+1)%3, (leader+2)%3
	stored, err := pykmip(writer, "store")
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var got map[string]any
		waitFor(t, nil, "KMIP read through node "+nodes[reader].id+" "+when, func() error {
			got, err = pykmip(reader, "fetch")
			return err
		})
		if ids, _ := got["ids"].([]any); len(ids) != 1 || ids[0] != stored["id"] || got["material"] != stored["material"] {
			t.Fatalf("%s: read %v, stored %v", when, got, stored)
		}
	}
	check("before the kill")
	if err := procs[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-procs[leader].done
	check("after the leader's SIGKILL")

	// A node that cannot serve objects still answers KMIP: the killed
	// node, started again while the other two are down (no quorum, so it
	// never becomes ready), completes a client's handshake and answers
	// its Discover Versions, instead of leaving it in the listen queue.
	// Once a second node is back, objects are served through it again.
	for _, i := range []int{writer, reader} {
		if err := procs[i].cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-procs[i].done
	}
	procs[leader] = startProc(t, environ("SOFTHSM2_CONF="+c.softhsm), "serve", "--config", nodes[leader].config)
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", kmipAddrs[leader], time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node's KMIP port: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := kmipDiscoverVersions(kmipAddrs[leader], c.caFile, c.clientCert, c.clientKey, 5*time.Second); err != nil {
		t.Fatalf("KMIP on a node without quorum: %v", err)
	}
	procs[writer] = c.start(t, nodes[writer])
	reader = leader
	check("through the restarted node, with quorum again")
}

// kmipDiscoverVersions connects to a KMIP server, sends Discover Versions
// and reads a successful answer, all within timeout.
func kmipDiscoverVersions(addr, caFile, certFile, keyFile string, timeout time.Duration) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr,
		&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: host, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	// Tags and values of KMIP 1.4: Request Message, Request Header,
	// Protocol Version 1.4, Batch Count 1, Batch Item, Operation Discover
	// Versions, an empty Request Payload.
	req := ttlv.Struct(0x420078,
		ttlv.Struct(0x420077, ttlv.Struct(0x420069, ttlv.Int(0x42006A, 1), ttlv.Int(0x42006B, 4)), ttlv.Int(0x42000D, 1)),
		ttlv.Struct(0x42000F, ttlv.Enum(0x42005C, 0x1E), ttlv.Struct(0x420079)))
	b, err := req.Encode()
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	msg, err := ttlv.ReadMessage(conn, 0)
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	resp, err := ttlv.Decode(msg)
	if err != nil {
		return err
	}
	item, _ := resp.Child(0x42000F)
	if status, ok := item.Child(0x42007F); !ok || status.Int != 0 {
		text, _ := item.Child(0x42007D)
		return fmt.Errorf("Discover Versions failed: %s", text.Text())
	}
	return nil
}
