package awskms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

const (
	testRegion  = "us-east-1"
	testAccount = "000000000000"
	xksPrefix   = "/keystores/test-1"
)

// clock is a settable clock shared by the service and the cluster.
type clock = hsmtest.Clock

// env is one broker: a real SoftHSM token, a real single-node Raft cluster,
// the core service, and the AWS handler served on 127.0.0.1.
type env struct {
	tb     testing.TB
	clock  *clock
	node   *cluster.Node
	svc    *broker.Service
	h      *awskms.Handler
	srv    *httptest.Server
	admin  awskms.AccessKey // TrentService credential of principal "admin"
	xksKey awskms.AccessKey // XKS proxy credential of AWS KMS
	kms    *kms.Client
}

type envOption func(*awskms.Config)

func newEnv(tb testing.TB, opts ...envOption) *env {
	tb.Helper()
	e := &env{tb: tb, clock: &clock{}}
	p := hsmtest.NewPartition(tb)
	node, err := cluster.Open(cluster.Config{NodeID: "node1", RaftAddr: "127.0.0.1:0", DataDir: tb.TempDir(),
		Bootstrap: true, Now: e.clock.Now, ReapInterval: time.Hour, Logger: hsmtest.QuietLogger(),
		Observer: broker.Observer(p)})
	if err != nil {
		tb.Fatalf("open cluster node: %v", err)
	}
	tb.Cleanup(func() { _ = node.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := node.WaitForLeader(ctx); err != nil {
		tb.Fatalf("no leader: %v", err)
	}
	e.node = node
	// InsecureNoClientAuth: grpcClient serves the same service over
	// plaintext gRPC without identities, to compare the two fronts.
	e.svc, err = broker.New(broker.Config{Node: node, Partition: p, Now: e.clock.Now, Logger: hsmtest.QuietLogger(),
		Region: testRegion, Account: testAccount, InsecureNoClientAuth: true})
	if err != nil {
		tb.Fatal(err)
	}
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{GRPCAddr: "127.0.0.1:1"}).RegisterNode(ctx); err != nil {
		tb.Fatal(err)
	}
	if e.admin, err = awskms.GenerateAccessKey("admin"); err != nil {
		tb.Fatal(err)
	}
	e.admin.Role = "admin"
	if e.xksKey, err = awskms.GenerateXKSAccessKey("aws-kms"); err != nil {
		tb.Fatal(err)
	}
	cfg := awskms.Config{
		Service:     e.svc,
		Credentials: awskms.NewStaticCredentials(map[string]awskms.AccessKey{e.admin.ID: e.admin}),
		XKS: &awskms.XKSConfig{PathPrefix: xksPrefix, Credentials: awskms.NewStaticCredentials(map[string]awskms.AccessKey{e.xksKey.ID: e.xksKey}),
			Vendor: "hsmbroker tests"},
		Logger: hsmtest.QuietLogger(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if e.h, err = awskms.New(cfg); err != nil {
		tb.Fatal(err)
	}
	e.srv = httptest.NewServer(e.h)
	tb.Cleanup(e.srv.Close)
	e.kms = e.client(e.admin.ID, e.admin.Secret)
	return e
}

// client is an aws-sdk-go-v2 KMS client of the endpoint, without retries
// so that errors show at once.
func (e *env) client(id, secret string) *kms.Client {
	return kms.NewFromConfig(aws.Config{
		Region:      testRegion,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
		HTTPClient:  e.srv.Client(),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *kms.Options) { o.BaseEndpoint = aws.String(e.srv.URL) })
}

// grpcClient serves the same service over gRPC on loopback.
func (e *env) grpcClient() pb.CryptoServiceClient {
	e.tb.Helper()
	g, _ := e.svc.NewGRPCServer(nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.tb.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	e.tb.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(func() { _ = conn.Close() })
	return pb.NewCryptoServiceClient(conn)
}

func ctxT(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// wantAWSError asserts an SDK error's AWS error code and that its message
// mentions every fragment.
func wantAWSError(tb testing.TB, err error, code string, mentions ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got success, want %s", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		tb.Fatalf("not an API error: %v", err)
	}
	if ae.ErrorCode() != code {
		tb.Fatalf("error code %s (%s), want %s", ae.ErrorCode(), ae.ErrorMessage(), code)
	}
	for _, m := range mentions {
		if !strings.Contains(ae.ErrorMessage(), m) {
			tb.Errorf("message %q does not mention %q", ae.ErrorMessage(), m)
		}
	}
}

// rawResponse is an answer to a hand-made request.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// errorType is the __type (TrentService) or errorName (XKS) of an error.
func (r rawResponse) errorType() string {
	var b struct {
		Type      string `json:"__type"`
		ErrorName string `json:"errorName"`
	}
	_ = json.Unmarshal(r.body, &b)
	return b.Type + b.ErrorName
}

// signedRequest makes a request to the endpoint signed with SigV4 by the
// AWS SDK's signer, as AWS clients (and AWS KMS, for XKS) sign.
type signedRequest struct {
	path      string
	target    string // X-Amz-Target, TrentService.<Op>
	body      []byte
	key       awskms.AccessKey
	service   string // default "kms"
	region    string // default testRegion
	at        time.Time
	header    map[string]string // set before signing
	tamper    func(*http.Request)
	noContent bool   // omit X-Amz-Content-Sha256
	host      string // the Host to sign and send (default the server's address)
	chunked   bool   // send the body chunked, with no Content-Length
}

func (e *env) do(sr signedRequest) rawResponse {
	e.tb.Helper()
	return e.doWith(e.tb, sr)
}

// doWith is do reporting failures to tb (a fuzz target's own T).
func (e *env) doWith(tb testing.TB, sr signedRequest) rawResponse {
	tb.Helper()
	if sr.path == "" {
		sr.path = "/"
	}
	if sr.service == "" {
		sr.service = "kms"
	}
	if sr.region == "" {
		sr.region = testRegion
	}
	if sr.at.IsZero() {
		sr.at = time.Now()
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+sr.path, bytes.NewReader(sr.body))
	if err != nil {
		tb.Fatal(err)
	}
	if sr.chunked { // a body of unknown length: signed without one
		req.Body, req.ContentLength, req.GetBody = io.NopCloser(bytes.NewReader(sr.body)), 0, nil
	}
	if sr.target != "" {
		req.Header.Set("X-Amz-Target", sr.target)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range sr.header {
		req.Header.Set(k, v)
	}
	if sr.host != "" {
		req.Host = sr.host
	}
	sum := sha256.Sum256(sr.body)
	hash := hex.EncodeToString(sum[:])
	if !sr.noContent {
		req.Header.Set("X-Amz-Content-Sha256", hash)
	}
	if sr.key.ID != "" {
		creds := aws.Credentials{AccessKeyID: sr.key.ID, SecretAccessKey: sr.key.Secret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hash, sr.service, sr.region, sr.at); err != nil {
			tb.Fatal(err)
		}
	}
	if sr.tamper != nil {
		sr.tamper(req)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// trent calls a TrentService operation with a hand-made signed request.
func (e *env) trent(op string, body any) rawResponse {
	e.tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.tb.Fatal(err)
	}
	return e.do(signedRequest{target: "TrentService." + op, body: b, key: e.admin})
}
