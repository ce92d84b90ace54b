package broker

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestTLSHint: a join that fails in the TLS handshake with the members
// (a node certificate from another CA gives anything from "unknown
// certificate authority" to a broken pipe) says what to check; other
// failures get no such hint.
func TestTLSHint(t *testing.T) {
	for msg, want := range map[string]bool{
		"seed 127.0.0.1:7400: connection error: desc = \"transport: authentication handshake failed: tls: unknown certificate authority\"": true,
		"seed 127.0.0.1:7400: write tcp 127.0.0.1:5->127.0.0.1:7400: write: broken pipe":                                                   true,
		"seed 127.0.0.1:7400: dial tcp 127.0.0.1:7400: connect: connection refused":                                                        false,
		"the join token is unknown, already used, expired or made for another node id":                                                     false,
	} {
		if got := tlsHint(errors.New(msg)) != ""; got != want {
			t.Errorf("tlsHint(%q) given: %v, want %v", msg, got, want)
		}
	}
	if h := tlsHint(errors.New("tls: bad certificate")); !strings.Contains(h, "tls.ca") {
		t.Errorf("hint %q does not name tls.ca", h)
	}
	if tlsHint(nil) != "" {
		t.Error("a hint for no error")
	}
}

// TestSettleMembership: a member's status answer settles whether this
// node is still a member only when the member follows a leader; the ids
// that go into readiness and the log must be well-formed node ids, so a
// member cannot put anything else, or anything long, there.
func TestSettleMembership(t *testing.T) {
	nodes := func(ids ...string) []*pb.NodeStatus {
		var ns []*pb.NodeStatus
		for _, id := range ids {
			ns = append(ns, &pb.NodeStatus{Id: id})
		}
		return ns
	}
	for _, tc := range []struct {
		name          string
		st            *pb.GetClusterStatusResponse
		settled, note bool
	}{
		{"listed", &pb.GetClusterStatusResponse{NodeId: "n1", LeaderId: "n2", Nodes: nodes("n1", "n2", "me")}, true, false},
		{"not listed", &pb.GetClusterStatusResponse{NodeId: "n1", LeaderId: "n2", Nodes: nodes("n1", "n2")}, true, true},
		{"no leader", &pb.GetClusterStatusResponse{NodeId: "n1", Nodes: nodes("n1")}, false, false},
		{"asked itself", &pb.GetClusterStatusResponse{NodeId: "me", LeaderId: "n2", Nodes: nodes("n2")}, false, false},
		{"long leader id", &pb.GetClusterStatusResponse{NodeId: "n1", LeaderId: strings.Repeat("x", 1000), Nodes: nodes("n1")}, false, false},
		{"member id with a newline", &pb.GetClusterStatusResponse{NodeId: "n1\nlevel=ERROR", LeaderId: "n2", Nodes: nodes("n2")}, false, false},
	} {
		note, settled := settleMembership("me", tc.st)
		if settled != tc.settled || (note != nil) != tc.note {
			t.Errorf("%s: settled %v, note %v; want %v, %v", tc.name, settled, note, tc.settled, tc.note)
		}
		if note != nil && (note.peer != tc.st.GetNodeId() || note.leader != tc.st.GetLeaderId()) {
			t.Errorf("%s: note %+v", tc.name, note)
		}
	}
}
