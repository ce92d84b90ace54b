package clienttest_test

import (
	"testing"

	"github.com/hsmbroker/hsmbroker/client/clienttest"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// TestBrokerFake holds the Fake, which the SDK and hsmctl unit tests run
// on, to the conformance suite.
func TestBrokerFake(t *testing.T) {
	srv := clienttest.NewServer(t)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(srv.PKI.ClientTLS())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	clienttest.TestBroker(t, conn)
}

// TestBrokerReal runs the same suite against a real broker: a one-node
// cluster with its own SoftHSM token, Raft node and gRPC server with
// mutual TLS, reached as an admin.
func TestBrokerReal(t *testing.T) {
	c := hsmtest.NewCluster(t, 1)
	conn := c.Dial(0, "conformance")
	clienttest.TestBroker(t, conn)
	t.Run("ClusterService", func(t *testing.T) { clienttest.TestClusterService(t, conn) })
}
