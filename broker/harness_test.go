package broker_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// clock is a settable clock shared by the service and the cluster.
type clock = hsmtest.Clock

// env is one broker: a real SoftHSM token, a real single-node Raft
// cluster, the service behind a real gRPC server on loopback, and clients.
type env struct {
	t       testing.TB
	tok     hsmtest.Token
	dataDir string
	clock   *clock
	part    *hsm.Partition
	node    *cluster.Node
	svc     *broker.Service
	srv     *grpc.Server
	conn    *grpc.ClientConn
	keys    pb.KeyServiceClient
	crypto  pb.CryptoServiceClient
	cluster pb.ClusterServiceClient
	// configure, if set, adjusts the service's configuration.
	configure func(*broker.Config)
	// preloader, if set, observes the node's state changes.
	preloader *broker.Preloader
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with configure applied to the service's
// configuration.
func newEnvWith(t testing.TB, configure func(*broker.Config)) *env {
	t.Helper()
	e := &env{t: t, dataDir: t.TempDir(), clock: &clock{}, configure: configure}
	e.tok = hsmtest.NewToken(t)
	p := hsmtest.Open(t, e.tok)
	if err := p.CreateDomainKey(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.start(p)
	return e
}

// start opens the cluster node on the env's data dir and serves.
func (e *env) start(p *hsm.Partition) {
	t := e.t
	t.Helper()
	e.part = p
	node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: e.dataDir,
		Bootstrap: true, Now: e.clock.Now, ReapInterval: 50 * time.Millisecond, Logger: hsmtest.QuietLogger(),
		Observer: broker.PreloadingObserver(p, e.preloader)})
	if err != nil {
		t.Fatalf("open cluster node: %v", err)
	}
	e.node = node
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := node.WaitForLeader(ctx); err != nil {
		t.Fatalf("no leader: %v", err)
	}
	// The env serves plaintext gRPC without identities: its tests are of
	// the operations; authz_test.go serves mutual TLS for identities.
	cfg := broker.Config{Node: node, Partition: p, Now: e.clock.Now, Logger: hsmtest.QuietLogger(), InsecureNoClientAuth: true}
	if e.configure != nil {
		e.configure(&cfg)
	}
	e.svc, err = broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv, _ = e.svc.NewGRPCServer(nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.srv.Serve(lis) }()
	e.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{GRPCAddr: lis.Addr().String()}).RegisterNode(ctx); err != nil {
		t.Fatal(err)
	}
	e.keys = pb.NewKeyServiceClient(e.conn)
	e.cluster = pb.NewClusterServiceClient(e.conn)
	e.crypto = pb.NewCryptoServiceClient(e.conn)
	t.Cleanup(e.stop)
}

// newBareNode opens a single-node cluster, leading, over partition p and a
// service on it with cfg (Node, Partition and a quiet Logger filled in),
// without a gRPC server.
func newBareNode(t *testing.T, id string, p *hsm.Partition, cfg broker.Config) (*cluster.Node, *broker.Service) {
	t.Helper()
	node, err := cluster.Open(cluster.Config{NodeID: id, RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		Bootstrap: true, Logger: hsmtest.QuietLogger(), Observer: broker.Observer(p)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	if err := node.WaitForLeader(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	cfg.Node, cfg.Partition, cfg.Logger = node, p, hsmtest.QuietLogger()
	svc, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return node, svc
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	_ = e.conn.Close()
	e.srv.Stop()
	_ = e.node.Shutdown()
	e.srv = nil
}

// restart stops everything and reopens the same token and data dir.
func (e *env) restart(cfg hsm.Config) {
	e.t.Helper()
	e.stop()
	_ = e.part.Close()
	p, err := hsm.Open(cfg)
	if err != nil {
		e.t.Fatalf("reopen partition: %v", err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	e.start(p)
}

// tokConfig is the partition configuration of the env's token.
func (e *env) tokConfig(string) hsm.Config { return e.tok.Config() }

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// createKey makes a key with a fresh alias and returns its metadata.
func (e *env) createKey(spec pb.KeySpec, usage pb.KeyUsage) *pb.KeyMetadata {
	e.t.Helper()
	aliasSeq++
	resp, err := e.keys.CreateKey(ctxT(e.t), &pb.CreateKeyRequest{KeySpec: spec, KeyUsage: usage,
		AliasName: "alias/test-" + strings.ToLower(strings.TrimPrefix(spec.String(), "KEY_SPEC_")) + "-" + itoa(aliasSeq)})
	if err != nil {
		e.t.Fatalf("create %s key: %v", spec, err)
	}
	return resp.GetKeyMetadata()
}

var aliasSeq int

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

// wantErr asserts a gRPC error's code, AWS exception name and that its
// message mentions every given fragment.
func wantErr(t *testing.T, err error, code codes.Code, exception string, mentions ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %s/%s", code, exception)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status error: %v", err)
	}
	if st.Code() != code {
		t.Errorf("code %s, want %s (%s)", st.Code(), code, st.Message())
	}
	got := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			got = info.GetReason()
			if info.GetDomain() != broker.ErrorDomain {
				t.Errorf("error domain %q", info.GetDomain())
			}
		}
	}
	if exception != "" && got != exception {
		t.Errorf("AWS exception %q, want %q (%s)", got, exception, st.Message())
	}
	for _, m := range mentions {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not mention %q", st.Message(), m)
		}
	}
}

// brokerClassify is broker.Classify, named for the fuzz target.
var brokerClassify = broker.Classify
