package main

import (
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// serve warns when the node certificate names another node id than the
// configuration's: peers know a node by its certificate's common name and
// would refuse it as a member.
func TestServeWarnsOfACertificateOfAnotherNode(t *testing.T) {
	ca, err := pki.NewCA("cert check CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	iss, err := ca.IssueServer("node2", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	if err := iss.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nodeID string
		warn   bool
	}{{"node1", true}, {"node2", false}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		checkAdvertisedNames(log, config.Config{NodeID: tc.nodeID, RaftAddr: "127.0.0.1:7001", GRPCAddr: "127.0.0.1:7000",
			TLS: config.TLS{Cert: cert, Key: key}})
		got := strings.Contains(buf.String(), "common_name=node2") && strings.Contains(buf.String(), "node_id="+tc.nodeID)
		if got != tc.warn {
			t.Errorf("node_id %s with a certificate of node2: warned %v, want %v; log:\n%s", tc.nodeID, got, tc.warn, buf.String())
		}
	}
}
