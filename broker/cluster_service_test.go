package broker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestSingleNodeClusterStatus(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	hs := health.NewServer()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go broker.NewDaemon(e.svc, broker.DaemonConfig{Health: hs, HealthInterval: 20 * time.Millisecond}).WatchHealth(wctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.CryptoService_ServiceDesc.ServiceName})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never SERVING: %v %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := e.cluster.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLeaderId() != "node1" || st.GetNodeId() != "node1" || len(st.GetNodes()) != 1 {
		t.Fatalf("status %v", st)
	}
	n := st.GetNodes()[0]
	if n.GetRole() != pb.NodeRole_NODE_ROLE_LEADER || !n.GetHealthy() || n.GetAppliedIndex() == 0 ||
		n.GetPartition().GetTokenLabel() != e.tok.Label || !n.GetPartition().GetDomainKeyPresent() ||
		len(n.GetPartition().GetMechanisms()) == 0 || n.GetGrpcAddress() == "" {
		t.Fatalf("node status %v", n)
	}
}

func TestBackupIsChecksummedAndHoldsNoPlaintext(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	dk, err := e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: k.GetKeyId(), KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := e.cluster.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	b, err := client.ReceiveBackup(stream, &snap)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(snap.Bytes())
	if hex.EncodeToString(sum[:]) != b.SHA256 || b.Index == 0 || b.Bytes != int64(snap.Len()) {
		t.Fatalf("backup checksum %s index %d size %d", b.SHA256, b.Index, b.Bytes)
	}
	if bytes.Contains(snap.Bytes(), dk.GetPlaintext()) {
		t.Fatal("backup contains a data key in plaintext")
	}
}

// Deleting a key destroys its loaded copy in the HSM on every node.
func TestDeletionEvictsLoadedCopies(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	if _, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("load")}); err != nil {
		t.Fatal(err)
	}
	loaded, _, _ := e.part.CacheStats()
	if loaded == 0 {
		t.Fatal("nothing loaded")
	}
	del, err := e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.GetKeyId(), PendingWindowDays: 7})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(del.GetDeletionDate().AsTime().Add(time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _, _ := e.part.CacheStats(); n < loaded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("loaded copy of the deleted key was not evicted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A readiness check made by anyone (here, as /readyz makes it) is the
// node's verdict at once: the gate of crypto calls and gRPC health follow
// it, not only WatchHealth's periodic checks.
// TestLostTokenStorage: a token whose storage is taken away under a running
// node (SoftHSM's token directory moved, as a lost disk or a replaced
// partition would) still opens sessions and draws random bytes, but its
// domain key is gone. Calls that need the key answer Unavailable, which a
// client retries elsewhere, never InvalidCiphertext for a good ciphertext
// or Internal; and the node stops calling itself ready, saying why.
func TestLostTokenStorage(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	ct, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason := e.svc.Ready(ctx); !ok {
		t.Fatalf("not ready before: %s", reason)
	}
	e.part.EvictAll(ctx) // the next use unwraps the key under the domain key
	dir := e.tok.StorageDir(t)
	if err := os.Rename(dir, dir+".lost"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(dir+".lost", dir) })

	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: ct.GetCiphertextBlob()})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout)
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x")})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout)
	_, err = e.keys.CreateKey(ctx, &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, AliasName: "alias/lost"})
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout)
	if ok, reason := e.svc.Ready(ctx); ok || !strings.Contains(reason, "no longer shows the domain key") {
		t.Fatalf("ready %v (%q) with the token's storage gone; want not ready, saying the domain key is gone", ok, reason)
	}
}

func TestEveryReadinessCheckIsTheNodesVerdict(t *testing.T) {
	faults := &hsm.Faults{}
	e := &env{t: t, dataDir: t.TempDir(), clock: &clock{}}
	e.tok = hsmtest.NewToken(t)
	p := hsmtest.Open(t, e.tok, hsmtest.WithFaults(faults))
	if err := p.CreateDomainKey(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.start(p)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)

	faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceError})
	hs := health.NewServer()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go broker.NewDaemon(e.svc, broker.DaemonConfig{Health: hs, HealthInterval: time.Hour}).WatchHealth(wctx) // one check now, the next in an hour
	// Wait for the watcher's check itself: before any check the verdict is
	// "not ready" with no reason, and a check still running when the
	// faults are cleared below would overwrite the later verdict.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ok, reason := e.svc.Healthy(); !ok && reason != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node never found its HSM failing")
		}
	}
	_, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x")})
	wantErr(t, err, codes.Unavailable, "", "not ready", "retry later")
	if strings.Contains(err.Error(), "another node") {
		t.Errorf("a one-node cluster sends its callers to another node: %v", err)
	}
	// The status says the partition could not be asked, so that "no domain
	// key" reads as unknown, not missing.
	st, err := e.cluster.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if pi := st.GetNodes()[0].GetPartition(); !strings.HasPrefix(pi.GetHealth(), "unavailable: ") || pi.GetDomainKeyPresent() {
		t.Errorf("partition of a failing HSM: health %q, domain key present %v", pi.GetHealth(), pi.GetDomainKeyPresent())
	}

	faults.Clear()
	if ok, reason := e.svc.Ready(ctx); !ok {
		t.Fatalf("Ready after the HSM recovered: %s", reason)
	}
	if _, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt right after a check found the node ready: %v", err)
	}
	r, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.CryptoService_ServiceDesc.ServiceName})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health after a check found the node ready: %v, %v", r, err)
	}

	// A check whose caller gave up decides nothing.
	faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceError})
	gone, stop := context.WithCancel(ctx)
	stop()
	e.svc.Ready(gone)
	if ok, reason := e.svc.Healthy(); !ok {
		t.Fatalf("a cancelled check changed the verdict: %s", reason)
	}
	faults.Clear()
}
