package client_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/client/clienttest"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cluster starts n fake brokers sharing one state and one CA.
func cluster(t *testing.T, n int) ([]*clienttest.Server, *clienttest.PKI) {
	t.Helper()
	pki, fake := clienttest.NewPKI(t), clienttest.NewFake()
	var servers []*clienttest.Server
	for range n {
		servers = append(servers, clienttest.Start(t, pki, fake))
	}
	return servers, pki
}

func dial(t *testing.T, pki *clienttest.PKI, cfg client.Config, addrs ...string) *client.Client {
	t.Helper()
	cfg.Endpoints = addrs
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = pki.CAFile, pki.CertFile, pki.KeyFile
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func createKey(t *testing.T, c *client.Client, alias string) *pb.KeyMetadata {
	t.Helper()
	resp, err := c.Keys.CreateKey(context.Background(), &pb.CreateKeyRequest{AliasName: alias})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetKeyMetadata()
}

func methodCalls(s *clienttest.Server, method string) []clienttest.Call {
	var out []clienttest.Call
	for _, c := range s.Calls() {
		if strings.HasSuffix(c.Method, "/"+method) {
			out = append(out, c)
		}
	}
	return out
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(client.EnvAddr, " a:1, b:2 ,,c:3")
	t.Setenv(client.EnvCA, "/ca.pem")
	t.Setenv(client.EnvCert, "/cert.pem")
	t.Setenv(client.EnvKey, "/key.pem")
	cfg := client.ConfigFromEnv()
	if got := strings.Join(cfg.Endpoints, " "); got != "a:1 b:2 c:3" {
		t.Errorf("Endpoints %q", got)
	}
	if cfg.CAFile != "/ca.pem" || cfg.CertFile != "/cert.pem" || cfg.KeyFile != "/key.pem" {
		t.Errorf("files %+v", cfg)
	}
}

func TestDialErrors(t *testing.T) {
	pki := clienttest.NewPKI(t)
	tests := []struct {
		name string
		cfg  client.Config
		want string
	}{
		{"no endpoints", client.Config{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile}, "no endpoints"},
		{"no files", client.Config{Endpoints: []string{"x:1"}}, "no CA file (HSMBROKER_CA), client certificate (HSMBROKER_CERT), client key (HSMBROKER_KEY) given"},
		{"missing CA", client.Config{Endpoints: []string{"x:1"}, CAFile: "/nonexistent/ca.pem", CertFile: pki.CertFile, KeyFile: pki.KeyFile}, "read CA file"},
		{"CA not PEM", client.Config{Endpoints: []string{"x:1"}, CAFile: pki.KeyFile + "x", CertFile: pki.CertFile, KeyFile: pki.KeyFile}, "read CA file"},
		{"key is not the certificate's", client.Config{Endpoints: []string{"x:1"}, CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.CAFile}, "load client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Dial(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCallAndRequestID(t *testing.T) {
	servers, pki := cluster(t, 1)
	c := dial(t, pki, client.Config{}, servers[0].Addr)
	md := createKey(t, c, "alias/one")
	if _, err := c.Keys.DescribeKey(context.Background(), &pb.DescribeKeyRequest{KeyId: "alias/one"}); err != nil {
		t.Fatal(err)
	}
	ctx := client.WithRequestID(context.Background(), "trace-42")
	if _, err := c.Keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: md.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	calls := servers[0].Calls()
	if len(calls) != 3 {
		t.Fatalf("%d calls", len(calls))
	}
	hex := regexp.MustCompile(`^[0-9a-f]{32}$`)
	if !hex.MatchString(calls[0].RequestID) || !hex.MatchString(calls[1].RequestID) || calls[0].RequestID == calls[1].RequestID {
		t.Errorf("request ids %q, %q: want distinct random ids", calls[0].RequestID, calls[1].RequestID)
	}
	if calls[2].RequestID != "trace-42" {
		t.Errorf("request id %q, want the caller's", calls[2].RequestID)
	}
}

func TestTLSOverride(t *testing.T) {
	servers, pki := cluster(t, 1)
	c, err := client.Dial(context.Background(), client.Config{Endpoints: []string{servers[0].Addr}, TLS: pki.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Crypto.GenerateRandom(context.Background(), &pb.GenerateRandomRequest{NumberOfBytes: 8}); err != nil {
		t.Fatal(err)
	}
	// Without a client certificate the broker refuses the handshake.
	noCert := pki.ClientTLS()
	noCert.Certificates = nil
	c2, err := client.Dial(context.Background(), client.Config{Endpoints: []string{servers[0].Addr}, TLS: noCert, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Crypto.GenerateRandom(context.Background(), &pb.GenerateRandomRequest{NumberOfBytes: 8}); client.Code(err) != codes.Unavailable {
		t.Fatalf("without a client certificate: %v, want Unavailable", err)
	}
}

func TestErrorHelpers(t *testing.T) {
	servers, pki := cluster(t, 1)
	c := dial(t, pki, client.Config{}, servers[0].Addr)
	_, err := c.Keys.DescribeKey(context.Background(), &pb.DescribeKeyRequest{KeyId: "alias/nope"})
	if got := client.Code(err); got != codes.NotFound {
		t.Errorf("Code %v", got)
	}
	if got := client.AWSException(err); got != "NotFoundException" {
		t.Errorf("AWSException %q", got)
	}
	if got := client.Message(err); got != "alias alias/nope does not exist" {
		t.Errorf("Message %q", got)
	}
	wrapped := errors.Join(errors.New("context"), err)
	if client.AWSException(wrapped) != "NotFoundException" || client.Code(wrapped) != codes.NotFound {
		t.Errorf("wrapped: %v %v", client.AWSException(wrapped), client.Code(wrapped))
	}
	if client.RequestID(err) == "" || client.Endpoint(err) != servers[0].Addr {
		t.Errorf("RequestID %q Endpoint %q", client.RequestID(err), client.Endpoint(err))
	}
	if st, ok := status.FromError(err); !ok || st.Code() != codes.NotFound {
		t.Errorf("status.FromError: %v %v", st, ok)
	}
	for _, tt := range []struct {
		err  error
		code codes.Code
	}{
		{nil, codes.OK},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("local"), codes.Unknown},
	} {
		if got := client.Code(tt.err); got != tt.code {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.code)
		}
		if client.AWSException(tt.err) != "" {
			t.Errorf("AWSException(%v) not empty", tt.err)
		}
	}
}

// TestFailover covers the retry rule: which failures move a call to the
// next endpoint, for idempotent and non-idempotent calls.
func TestFailover(t *testing.T) {
	unavailable := clienttest.Error(codes.Unavailable, "DependencyTimeoutException", "no leader")
	throttled := clienttest.Error(codes.ResourceExhausted, "ThrottlingException", "HSM saturated")
	limit := clienttest.Error(codes.ResourceExhausted, "LimitExceededException", "too many keys")
	noLeader := clienttest.NotCarriedOutError(codes.Unavailable, "DependencyTimeoutException", "no leader")
	removed := clienttest.NotCarriedOutError(codes.FailedPrecondition, "KMSInvalidStateException", "node n1 was removed from the cluster")
	keyState := clienttest.Error(codes.FailedPrecondition, "KMSInvalidStateException", "key is disabled")
	tests := []struct {
		name string
		// fail is the error the first server gives every call.
		fail error
		// deadFirst puts an unreachable endpoint first instead.
		deadFirst bool
		// slowFirst makes the first server answer only after the deadline.
		slowFirst bool
		call      string // "describe" (idempotent) or "create" (not)
		wantCode  codes.Code
		wantCalls [2]int // calls of the method on each server
	}{
		{"unreachable, idempotent", nil, true, false, "describe", codes.OK, [2]int{0, 1}},
		{"unreachable, non-idempotent", nil, true, false, "create", codes.OK, [2]int{0, 1}},
		{"server unavailable, idempotent", unavailable, false, false, "describe", codes.OK, [2]int{1, 1}},
		{"server unavailable, non-idempotent", unavailable, false, false, "create", codes.Unavailable, [2]int{1, 0}},
		{"timeout, idempotent", nil, false, true, "describe", codes.OK, [2]int{1, 1}},
		{"timeout, non-idempotent", nil, false, true, "create", codes.DeadlineExceeded, [2]int{1, 0}},
		{"throttled, idempotent", throttled, false, false, "describe", codes.OK, [2]int{1, 1}},
		{"throttled, non-idempotent", throttled, false, false, "create", codes.ResourceExhausted, [2]int{1, 0}},
		{"limit exceeded", limit, false, false, "describe", codes.ResourceExhausted, [2]int{1, 0}},
		// A node that refused before passing a write to a leader did nothing:
		// even a write goes on to the next endpoint.
		{"no leader, not carried out, non-idempotent", noLeader, false, false, "create", codes.OK, [2]int{1, 1}},
		{"removed node, idempotent", removed, false, false, "describe", codes.OK, [2]int{1, 1}},
		{"removed node, non-idempotent", removed, false, false, "create", codes.OK, [2]int{1, 1}},
		{"key state", keyState, false, false, "create", codes.FailedPrecondition, [2]int{1, 0}},
		{"not found", clienttest.Error(codes.NotFound, "NotFoundException", "no"), false, false, "describe", codes.NotFound, [2]int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servers, pki := cluster(t, 2)
			seed := dial(t, pki, client.Config{}, servers[1].Addr)
			createKey(t, seed, "alias/seed")
			first := servers[0].Addr
			switch {
			case tt.deadFirst:
				first = hsmtest.ClosedAddr(t)
			case tt.slowFirst:
				servers[0].SetHook(func(ctx context.Context, _ string) error {
					<-ctx.Done()
					return ctx.Err()
				})
			case tt.fail != nil:
				servers[0].SetHook(func(context.Context, string) error { return tt.fail })
			}
			c := dial(t, pki, client.Config{Timeout: 300 * time.Millisecond}, first, servers[1].Addr)
			var err error
			method := "DescribeKey"
			if tt.call == "create" {
				method = "CreateKey"
				_, err = c.Keys.CreateKey(context.Background(), &pb.CreateKeyRequest{AliasName: "alias/new"})
			} else {
				_, err = c.Keys.DescribeKey(context.Background(), &pb.DescribeKeyRequest{KeyId: "alias/seed"})
			}
			if got := client.Code(err); got != tt.wantCode {
				t.Fatalf("call: %v, want %v", err, tt.wantCode)
			}
			got := [2]int{len(methodCalls(servers[0], method)), len(methodCalls(servers[1], method))}
			if tt.call == "create" {
				got[1]-- // the seed key
			}
			if got != tt.wantCalls {
				t.Fatalf("calls per server %v, want %v", got, tt.wantCalls)
			}
			if tt.wantCode == codes.OK {
				if c.PreferredEndpoint() != servers[1].Addr {
					t.Errorf("preferred endpoint %s, want the one that answered", c.PreferredEndpoint())
				}
				if tt.wantCalls[0] == 1 {
					retried := methodCalls(servers[1], method)
					a, b := methodCalls(servers[0], method)[0], retried[len(retried)-1] // after the seed key, for CreateKey
					if a.RequestID != b.RequestID {
						t.Errorf("retry changed the request id: %q then %q", a.RequestID, b.RequestID)
					}
				}
			}
		})
	}
}

func TestPreferLastGood(t *testing.T) {
	servers, pki := cluster(t, 3)
	c := dial(t, pki, client.Config{}, servers[0].Addr, servers[1].Addr, servers[2].Addr)
	createKey(t, c, "alias/k")
	servers[0].Stop()
	for range 5 {
		if _, err := c.Keys.DescribeKey(context.Background(), &pb.DescribeKeyRequest{KeyId: "alias/k"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(methodCalls(servers[1], "DescribeKey")); n != 5 {
		t.Fatalf("second server got %d calls, want all 5 once the first was down", n)
	}
	if len(methodCalls(servers[2], "DescribeKey")) != 0 {
		t.Fatal("third server used while the second works")
	}
}

func TestRetryLimit(t *testing.T) {
	for _, tt := range []struct {
		retries int
		want    int
	}{{0, 1 + client.DefaultRetries}, {1, 2}, {-1, 1}} {
		servers, pki := cluster(t, 2)
		for _, s := range servers {
			s.SetHook(func(context.Context, string) error {
				return clienttest.Error(codes.Unavailable, "DependencyTimeoutException", "down")
			})
		}
		c := dial(t, pki, client.Config{Retries: tt.retries}, servers[0].Addr, servers[1].Addr)
		_, err := c.Crypto.GenerateRandom(context.Background(), &pb.GenerateRandomRequest{NumberOfBytes: 1})
		if client.Code(err) != codes.Unavailable || client.AWSException(err) != "DependencyTimeoutException" {
			t.Fatalf("Retries %d: %v", tt.retries, err)
		}
		if got := len(servers[0].Calls()) + len(servers[1].Calls()); got != tt.want {
			t.Errorf("Retries %d: %d attempts, want %d", tt.retries, got, tt.want)
		}
	}
}

func TestCallerCancel(t *testing.T) {
	servers, pki := cluster(t, 2)
	var once sync.Once
	started := make(chan struct{})
	for _, s := range servers {
		s.SetHook(func(ctx context.Context, _ string) error {
			once.Do(func() { close(started) })
			<-ctx.Done()
			return ctx.Err()
		})
	}
	c := dial(t, pki, client.Config{Timeout: time.Minute}, servers[0].Addr, servers[1].Addr)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, err := c.Crypto.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: 1})
	if client.Code(err) != codes.Canceled {
		t.Fatalf("%v, want Canceled", err)
	}
	if n := len(servers[0].Calls()) + len(servers[1].Calls()); n != 1 {
		t.Fatalf("%d attempts after cancel, want 1", n)
	}
}

func TestIdempotent(t *testing.T) {
	for m, want := range map[string]bool{
		pb.KeyService_DescribeKey_FullMethodName:                        true,
		pb.CryptoService_Decrypt_FullMethodName:                         true,
		pb.KeyService_CreateKey_FullMethodName:                          false,
		pb.KeyService_RotateKey_FullMethodName:                          false,
		pb.KeyService_CreateAlias_FullMethodName:                        false,
		pb.CryptoService_GenerateDataKey_FullMethodName:                 false,
		pb.CryptoService_GenerateDataKeyPair_FullMethodName:             false,
		pb.ClusterService_TransferLeadership_FullMethodName:             false,
		"/hsmbroker.v1.KeyService/SomethingAddedLater":                  false,
		pb.KeyService_ScheduleKeyDeletion_FullMethodName:                false,
		pb.ClusterService_GetClusterStatus_FullMethodName:               true,
		pb.ClusterService_Backup_FullMethodName:                         true,
		pb.ClusterService_ListJoinTokens_FullMethodName:                 true,
		pb.ClusterService_RevokeJoinToken_FullMethodName:                false,
		pb.CryptoService_GenerateRandom_FullMethodName:                  true,
		pb.CryptoService_GenerateDataKeyWithoutPlaintext_FullMethodName: false,
	} {
		if got := client.Idempotent(m); got != want {
			t.Errorf("Idempotent(%s) = %v", m, got)
		}
	}
}

func TestEnvelopeOverGRPC(t *testing.T) {
	servers, pki := cluster(t, 1)
	c := dial(t, pki, client.Config{}, servers[0].Addr)
	md := createKey(t, c, "alias/files")
	plaintext := bytes.Repeat([]byte("0123456789"), 20_000) // 200 kB, 4 chunks
	encCtx := map[string]string{"file": "report.pdf"}
	var file, out bytes.Buffer
	var last int64
	if err := client.EncryptStream(context.Background(), c, "alias/files", encCtx, bytes.NewReader(plaintext), &file, func(n int64) { last = n }); err != nil {
		t.Fatal(err)
	}
	if last != int64(len(plaintext)) {
		t.Errorf("last progress %d, want %d", last, len(plaintext))
	}
	if err := client.DecryptStream(context.Background(), c, bytes.NewReader(file.Bytes()), &out, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), plaintext) {
		t.Fatal("round trip changed the data")
	}

	// The broker refuses the data key once the key is disabled.
	if _, err := c.Keys.DisableKey(context.Background(), &pb.DisableKeyRequest{KeyId: md.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	err := client.DecryptStream(context.Background(), c, bytes.NewReader(file.Bytes()), &out, nil)
	if client.AWSException(err) != "DisabledException" {
		t.Fatalf("decrypt under a disabled key: %v", err)
	}
	if !strings.HasPrefix(client.Message(err), "client: decrypt data key: key ") {
		t.Errorf("Message %q", client.Message(err))
	}
}

// An endpoint without a port would be dialed on gRPC's default port 443
// without a word: Dial refuses it, and every other address that is not
// host:port.
func TestDialRefusesEndpointWithoutPort(t *testing.T) {
	pki := clienttest.NewPKI(t)
	tests := []struct {
		addr string
		want string // "" for accepted
	}{
		{"127.0.0.1", `client: invalid endpoint "127.0.0.1": no port; want host:port, such as 127.0.0.1:7400`},
		{"broker.example", `invalid endpoint "broker.example": no port`},
		{"127.0.0.1:", `invalid endpoint "127.0.0.1:": no port`},
		{":7400", `invalid endpoint ":7400": no host`},
		{"::1", "an IPv6 address needs brackets and a port"},
		{"[::1]", "want host:port"},
		{"127.0.0.1:7400", ""},
		{"[::1]:7400", ""},
		{"dns:///broker.example:7400", ""},
		{"unix:///run/hsmbroker.sock", ""},
		{"http://127.0.0.1:37410", `invalid endpoint "http://127.0.0.1:37410": http:// is not a gRPC target scheme; give host:port without a scheme, such as 127.0.0.1:37410`},
		{"https://[::1]:7400/", "https:// is not a gRPC target scheme; give host:port without a scheme, such as [::1]:7400"},
		{"grpc://broker.example", "give host:port without a scheme, such as 127.0.0.1:7400"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c, err := client.Dial(context.Background(), client.Config{Endpoints: []string{"127.0.0.1:1", tt.addr},
				CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("Dial accepted it")
			}
			if !errors.Is(err, client.ErrInvalidEndpoint) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial: %v, want ErrInvalidEndpoint and %q", err, tt.want)
			}
		})
	}
}

// When no endpoint can be reached, the call's error says why each one
// failed, not only the last, and still reads and classifies as before.
func TestAttemptErrorsNameEveryEndpoint(t *testing.T) {
	pki := clienttest.NewPKI(t)
	dead1, dead2 := hsmtest.ClosedAddr(t), hsmtest.ClosedAddr(t)
	c := dial(t, pki, client.Config{Timeout: time.Second}, dead1, dead2)
	_, err := c.Keys.DescribeKey(context.Background(), &pb.DescribeKeyRequest{KeyId: "alias/x"})
	if client.Code(err) != codes.Unavailable {
		t.Fatalf("call: %v, want Unavailable", err)
	}
	attempts := client.AttemptErrors(err)
	if len(attempts) != 2 {
		t.Fatalf("AttemptErrors: %v, want one per endpoint", attempts)
	}
	seen := map[string]bool{}
	for _, a := range attempts {
		seen[a.Endpoint] = true
		if client.Code(a.Err) != codes.Unavailable || !strings.Contains(a.Err.Error(), "connection refused") {
			t.Errorf("%s: %v, want Unavailable, connection refused", a.Endpoint, a.Err)
		}
	}
	if !seen[dead1] || !seen[dead2] {
		t.Errorf("AttemptErrors names %v, want %s and %s", seen, dead1, dead2)
	}
	if got := client.Message(err); strings.Contains(got, "rpc error") || !strings.Contains(got, "connection refused") {
		t.Errorf("Message: %q", got)
	}
	if st, ok := status.FromError(err); !ok || st.Code() != codes.Unavailable || strings.Contains(st.Message(), "rpc error") {
		t.Errorf("status.FromError: %v %v", st, ok)
	}
	if client.Endpoint(err) == "" || client.RequestID(err) == "" {
		t.Errorf("Endpoint %q, RequestID %q", client.Endpoint(err), client.RequestID(err))
	}

	if client.AttemptErrors(errors.New("local")) != nil {
		t.Error("AttemptErrors of a local error")
	}
}
