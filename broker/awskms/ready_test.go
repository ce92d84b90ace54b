package awskms_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/hsmbroker/hsmbroker/broker"
)

// TestNotReadyNodeRefuses: once the node watches its health, a node that
// is not ready (here: its Raft node stopped, so no leader) answers no
// TrentService or XKS request from its state, which may miss a disable or
// a deletion; it says why, as a retryable DependencyTimeoutException. XKS
// GetHealthStatus still reports the node's health (that it cannot serve).
func TestNotReadyNodeRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	out, err := e.kms.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.KeyMetadata.KeyId)
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		broker.NewDaemon(e.svc, broker.DaemonConfig{GRPCAddr: "127.0.0.1:1", HealthInterval: 20 * time.Millisecond}).WatchHealth(wctx)
	}()
	t.Cleanup(func() { stop(); <-done })
	waitHealthy := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for ok, _ := e.svc.Healthy(); ok != want; ok, _ = e.svc.Healthy() {
			if time.Now().After(deadline) {
				t.Fatalf("the node's readiness never became %v", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitHealthy(true)
	if _, err := e.kms.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("ListKeys on a ready node: %v", err)
	}

	if err := e.node.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitHealthy(false)
	_, err = e.kms.ListKeys(ctx, &kms.ListKeysInput{})
	wantAWSError(t, err, "DependencyTimeoutException", "not ready")
	_, err = e.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)})
	wantAWSError(t, err, "DependencyTimeoutException", "not ready")
	_, err = e.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")})
	wantAWSError(t, err, "DependencyTimeoutException", "not ready")

	r := e.xksCall(t, "/keys/"+id+"/metadata", map[string]any{"requestMetadata": reqMeta("DescribeKey")})
	wantXKS(t, r, http.StatusServiceUnavailable, "DependencyTimeoutException")
	r = e.xksCall(t, "/health", map[string]any{"requestMetadata": reqMeta("GetHealthStatus")})
	wantXKS(t, r, http.StatusInternalServerError, "InternalException")
	if !strings.Contains(string(r.body), "cannot serve") {
		t.Fatalf("GetHealthStatus on a node that is not ready does not say why: %s", r.body)
	}
}
