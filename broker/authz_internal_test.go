package broker_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// TestUnmarkedContextDenied: a core call whose context carries neither a
// front's request nor the internal marker (a request path that forgot to
// attach its request) is refused, changes nothing and is audited as
// denied; the same calls marked as the node's own work pass, and are
// audited as internal.
func TestUnmarkedContextDenied(t *testing.T) {
	var buf bytes.Buffer
	_, svc := newBareNode(t, "node1", hsmtest.NewPartition(t), broker.Config{AuditLog: audit.New(&lockedBuffer{b: &buf}, audit.Options{})})
	ctx := ctxT(t)
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	internal := broker.Internal(ctx, "test")
	created, err := svc.CreateKey(internal, broker.CreateKeyRequest{Alias: "alias/internal"})
	if err != nil {
		t.Fatalf("internal CreateKey: %v", err)
	}
	id := created.ID
	if _, err := svc.DescribeKey(internal, &pb.DescribeKeyRequest{KeyId: id}); err != nil {
		t.Fatalf("internal DescribeKey: %v", err)
	}
	enc, err := svc.Encrypt(internal, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	if err != nil {
		t.Fatalf("internal Encrypt: %v", err)
	}

	bg := context.Background()
	_, err = svc.DescribeKey(bg, &pb.DescribeKeyRequest{KeyId: id})
	wantUnmarked(t, err)
	_, err = svc.Encrypt(bg, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantUnmarked(t, err)
	_, err = svc.Decrypt(bg, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantUnmarked(t, err)
	_, err = svc.DisableKey(bg, &pb.DisableKeyRequest{KeyId: id})
	wantUnmarked(t, err)
	_, err = svc.CreateKey(bg, broker.CreateKeyRequest{Alias: "alias/unmarked"})
	wantUnmarked(t, err)
	_, err = svc.SetPrincipalRole(bg, &pb.SetPrincipalRoleRequest{Principal: "mallory", Role: pb.PrincipalRole_PRINCIPAL_ROLE_ADMIN})
	wantUnmarked(t, err)

	// Nothing the unmarked calls asked for happened.
	keys, err := svc.ListKeys(internal, &pb.ListKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 1 {
		t.Fatalf("keys after the unmarked calls: %v, %v", keys, err)
	}
	d, err := svc.DescribeKey(internal, &pb.DescribeKeyRequest{KeyId: id})
	if err != nil || d.GetKeyMetadata().GetKeyState() != pb.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("key after an unmarked DisableKey: %v, %v", d, err)
	}
	aliases, _ := svc.ListAliases(internal, &pb.ListAliasesRequest{})
	for _, a := range aliases.GetAliases() {
		if a.GetAliasName() == "alias/unmarked" {
			t.Fatal("an unmarked CreateKey made an alias")
		}
	}

	var internalLines, denied int
	for _, r := range auditLines(t, buf.Bytes()) {
		switch {
		case r.Front == broker.FrontInternal && r.Operation == "internal:test" && r.Role == "internal" && r.Decision == "allow":
			internalLines++
		case r.Front == "none" && r.Decision == "deny" && r.Reason == "no request and no internal marker":
			denied++
		}
	}
	if internalLines == 0 {
		t.Errorf("the internal CreateKey has no internal audit line:\n%s", buf.String())
	}
	if denied != 6 {
		t.Errorf("%d audit lines for the 6 unmarked calls:\n%s", denied, buf.String())
	}
}

// TestPlaintextServerRefusesWithoutOption: a gRPC server made without TLS
// no longer makes every caller an admin as a side effect; it refuses every
// call for want of a client certificate unless the service was configured
// with InsecureNoClientAuth.
func TestPlaintextServerRefusesWithoutOption(t *testing.T) {
	for _, open := range []bool{false, true} {
		_, svc := newBareNode(t, "node1", hsmtest.NewPartition(t), broker.Config{InsecureNoClientAuth: open})
		srv, _ := svc.NewGRPCServer(nil)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		c := newClient(conn)
		ctx := ctxT(t)
		_, lerr := c.keys.ListKeys(ctx, &pb.ListKeysRequest{})
		_, cerr := c.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/open"})
		_, ferr := c.clus.ForwardCommand(ctx, &pb.ForwardCommandRequest{})
		if !open {
			wantErr(t, lerr, codes.Unauthenticated, "", "client certificate")
			wantErr(t, cerr, codes.Unauthenticated, "", "client certificate")
			wantErr(t, ferr, codes.Unauthenticated, "", "client certificate")
			continue
		}
		if lerr != nil {
			t.Fatalf("ListKeys with InsecureNoClientAuth: %v", lerr)
		}
		if cerr != nil {
			t.Fatalf("CreateKey with InsecureNoClientAuth: %v", cerr)
		}
	}
}

// wantUnmarked asserts the core's refusal of a call without a request or
// internal marker.
func wantUnmarked(t *testing.T, err error) {
	t.Helper()
	var be *broker.Error
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want the refusal of an unmarked call", err)
	}
	if be.Code != codes.Internal || be.Exception != broker.ExcInternal || !strings.Contains(be.Message, "no request and no internal marker") {
		t.Fatalf("got %s/%s %q, want Internal/%s for an unmarked call", be.Code, be.Exception, be.Message, broker.ExcInternal)
	}
}
