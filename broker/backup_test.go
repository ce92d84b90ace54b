package broker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// backup streams a backup from c into w and checks it.
func backup(ctx context.Context, c clients, w io.Writer) error {
	stream, err := c.clus.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		return err
	}
	_, err = client.ReceiveBackup(stream, w)
	return err
}

// TestBackupStreamsInChunks: with 1 KiB chunks a backup spans many
// messages; put together they are exactly the node's snapshot, the last
// message's totals match them, and they restore into a new cluster whose
// HSM holds the domain key: every old ciphertext decrypts there.
func TestBackupStreamsInChunks(t *testing.T) {
	const chunk = 1024
	e := newEnvWith(t, func(c *broker.Config) { c.BackupChunkSize = chunk })
	ctx := ctxT(t)
	type sealed struct{ blob, plaintext []byte }
	var blobs []sealed
	for i := range 8 {
		k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
		pt := []byte(fmt.Sprint("secret ", i))
		enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: pt})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, sealed{enc.GetCiphertextBlob(), pt})
	}
	// What the daemon does at start: a restore checks the backup's blob
	// against its HSM.
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}

	stream, err := e.cluster.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var msgs []*pb.BackupResponse
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		got = append(got, m.GetChunk()...)
	}
	rc, index, term, err := e.node.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the streamed backup (%d bytes) is not the node's snapshot (%d bytes)", len(got), len(want))
	}
	if wantMsgs := (len(want)+chunk-1)/chunk + 1; len(msgs) != wantMsgs || len(msgs) < 5 {
		t.Fatalf("%d messages for %d bytes in %d-byte chunks, want %d", len(msgs), len(want), chunk, wantMsgs)
	}
	for i, m := range msgs[:len(msgs)-1] {
		if m.GetSha256() != "" || m.GetSize() != 0 || m.GetIndex() != 0 || m.GetTerm() != 0 {
			t.Fatalf("message %d carries totals: %v", i, m)
		}
		if n := len(m.GetChunk()); n != chunk && i != len(msgs)-2 || n == 0 || n > chunk {
			t.Fatalf("message %d: a chunk of %d bytes", i, n)
		}
	}
	last := msgs[len(msgs)-1]
	sum := sha256.Sum256(want)
	if len(last.GetChunk()) != 0 || last.GetSha256() != hex.EncodeToString(sum[:]) || last.GetSize() != uint64(len(want)) ||
		last.GetIndex() != index || last.GetTerm() != term || index == 0 {
		t.Fatalf("last message %v; want sha256 %x, size %d, index %d, term %d", last, sum, len(want), index, term)
	}

	auth := last.GetAuthenticator()
	if len(auth) != hsm.BackupAuthenticatorSize {
		t.Fatalf("last message carries an authenticator of %d bytes, want %d", len(auth), hsm.BackupAuthenticatorSize)
	}
	if err := e.part.VerifyBackupAuthenticator(ctx, sum[:], auth); err != nil {
		t.Fatalf("the backup's authenticator does not verify: %v", err)
	}

	// A new single-node cluster on an HSM holding the domain key (the same
	// token) refuses, before it restores anything:
	node, svc := newRestoreTarget(t, e.part)
	dm := broker.NewDaemon(svc, broker.DaemonConfig{})
	restoreFails := func(what string, raw []byte, ra broker.RestoreAuth, want string) {
		t.Helper()
		b, err := cluster.ReadBackup(raw)
		if err != nil {
			t.Fatalf("%s: the backup should still decode: %v", what, err)
		}
		if err := dm.RestoreBackup(ctx, b, ra); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("restore of %s: %v, want an error saying %q", what, err, want)
		}
		if n := len(node.State().Keys()); n != 0 {
			t.Fatalf("the refused restore of %s left %d keys", what, n)
		}
	}
	// a backup edited consistently (one blob changed, or two keys' blobs
	// swapped: the file still decodes and its checksum could be
	// recomputed), which no longer matches its authenticator;
	edited, editedKey := editBlob(t, got)
	notAuthentic := "the backup does not match its authenticator"
	restoreFails("an edited blob", edited, broker.RestoreAuth{Authenticator: auth}, notAuthentic)
	restoreFails("swapped blobs", swapBlobs(t, got), broker.RestoreAuth{Authenticator: auth}, notAuthentic)
	// the intact backup with a changed authenticator, or another backup's;
	changed := bytes.Clone(auth)
	changed[0] ^= 1
	restoreFails("a changed authenticator", got, broker.RestoreAuth{Authenticator: changed}, notAuthentic)
	otherSum := sha256.Sum256(edited)
	otherAuth, err := e.part.BackupAuthenticator(ctx, otherSum[:])
	if err != nil {
		t.Fatal(err)
	}
	restoreFails("another backup's authenticator", got, broker.RestoreAuth{Authenticator: otherAuth}, notAuthentic)
	// a backup without an authenticator, unless that is asked for, and
	// never both;
	restoreFails("no authenticator", got, broker.RestoreAuth{}, "the backup has no authenticator")
	restoreFails("both", got, broker.RestoreAuth{Authenticator: auth, Unauthenticated: true}, "not both")
	// and, unauthenticated, a backup whose changed blob does not unwrap.
	restoreFails("an edited blob, unauthenticated", edited, broker.RestoreAuth{Unauthenticated: true},
		"1 of the backup's 8 key versions do not unwrap under this HSM's domain key ("+editedKey+" version 1)")
	// Then it restores the intact backup and decrypts every old ciphertext.
	b, err := cluster.ReadBackup(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.RestoreBackup(ctx, b, broker.RestoreAuth{Authenticator: auth}); err != nil {
		t.Fatal(err)
	}
	if n := len(node.State().Keys()); n != len(blobs) {
		t.Fatalf("restored %d keys, want %d", n, len(blobs))
	}
	for i, b := range blobs {
		dec, err := svc.Decrypt(broker.Internal(ctx, "restore check"), &pb.DecryptRequest{CiphertextBlob: b.blob})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), b.plaintext) {
			t.Fatalf("ciphertext %d after the restore: %v", i, err)
		}
	}
}

// TestUnauthenticatedRestore: a backup without its authenticator restores
// only when that is asked for, and the restore's audit lines then say so
// (internal:restore-unauthenticated), intent and outcome.
func TestUnauthenticatedRestore(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	if err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := backup(ctx, clients{clus: e.cluster}, &snap); err != nil {
		t.Fatal(err)
	}
	b, err := cluster.ReadBackup(snap.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	lb := &lockedBuffer{b: &bytes.Buffer{}}
	node, svc := newBareNode(t, "restored", e.part, broker.Config{AuditLog: audit.New(lb, audit.Options{})})
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).RestoreBackup(ctx, b, broker.RestoreAuth{Unauthenticated: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(node.State().Keys()); n != 1 {
		t.Fatalf("restored %d keys, want 1", n)
	}
	var intent, outcome bool
	for _, r := range auditLines(t, []byte(lb.String())) {
		if r.Operation == "internal:restore" {
			t.Fatalf("an unauthenticated restore audited as %+v", r)
		}
		if r.Operation == "internal:restore-unauthenticated" {
			intent = intent || r.Result == audit.ResultIntent
			outcome = outcome || r.Result == "OK"
		}
	}
	if !intent || !outcome {
		t.Fatalf("audit log without the unauthenticated restore's intent (%v) and outcome (%v):\n%s", intent, outcome, lb.String())
	}
}

// TestBackupRefusedBeforeItsFirstMessage: a node whose HSM is down cannot
// make a backup's authenticator, so it refuses the backup Unavailable
// before its first message, when a client may still take it to another
// node; once the HSM is back, the backup is whole.
func TestBackupRefusedBeforeItsFirstMessage(t *testing.T) {
	c := hsmtest.NewCluster(t, 1)
	ctx := ctxT(t)
	cl := pb.NewClusterServiceClient(c.Dial(0, "ops"))
	c.Nodes[0].Faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
	stream, err := cl.Backup(ctx, &pb.BackupRequest{})
	if err == nil {
		var m *pb.BackupResponse
		m, err = stream.Recv()
		if err == nil {
			t.Fatalf("a node whose HSM is down sent a backup message of %d bytes", len(m.GetChunk()))
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("backup from a node whose HSM is down: %v, want Unavailable", err)
	}
	c.Nodes[0].Faults.Clear()
	var snap bytes.Buffer
	deadline := time.Now().Add(20 * time.Second)
	for {
		stream, err := cl.Backup(ctx, &pb.BackupRequest{})
		if err == nil {
			snap.Reset()
			_, err = client.ReceiveBackup(stream, &snap)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup after the HSM came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// editBlob returns backup with one byte of one key's wrapped blob changed,
// re-encoded so that it still decodes, and that key's id.
func editBlob(t *testing.T, backup []byte) ([]byte, string) {
	t.Helper()
	var id string
	out := editFirstVersions(t, backup, func(ids []string, first []map[string]any) {
		blob, err := base64.StdEncoding.DecodeString(first[0]["wrapped"].(string))
		if err != nil {
			t.Fatal(err)
		}
		blob[len(blob)/2] ^= 1
		first[0]["wrapped"], id = base64.StdEncoding.EncodeToString(blob), ids[0]
	})
	return out, id
}

// swapBlobs returns backup with the wrapped blobs of its first two keys
// (by id) exchanged, re-encoded so that it still decodes: every blob still
// unwraps, under the wrong key's name.
func swapBlobs(t *testing.T, backup []byte) []byte {
	t.Helper()
	return editFirstVersions(t, backup, func(_ []string, first []map[string]any) {
		first[0]["wrapped"], first[1]["wrapped"] = first[1]["wrapped"], first[0]["wrapped"]
	})
}

// editFirstVersions decodes backup, lets edit change the first version of
// each key (keys in id order), and encodes the result.
func editFirstVersions(t *testing.T, backup []byte, edit func(ids []string, first []map[string]any)) []byte {
	t.Helper()
	var file map[string]any
	if err := json.Unmarshal(backup, &file); err != nil {
		t.Fatal(err)
	}
	ks := file["data"].(map[string]any)["keys"].(map[string]any)
	ids := slices.Sorted(maps.Keys(ks))
	first := make([]map[string]any, len(ids))
	for i, id := range ids {
		first[i] = ks[id].(map[string]any)["versions"].([]any)[0].(map[string]any)
	}
	edit(ids, first)
	out, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newRestoreTarget is a new single-node cluster, leading, with a service
// over partition p.
func newRestoreTarget(t *testing.T, p *hsm.Partition) (*cluster.Node, *broker.Service) {
	t.Helper()
	return newBareNode(t, "restored", p, broker.Config{})
}

// TestRestoreNeedsDomainKeyCheck: a backup whose state records no domain
// key check is refused with an error, since nothing ties its keys to the
// HSM's domain key.
func TestRestoreNeedsDomainKeyCheck(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	stream, err := e.cluster.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	info, err := client.ReceiveBackup(stream, &snap)
	if err != nil {
		t.Fatal(err)
	}
	_, svc := newRestoreTarget(t, e.part)
	b, err := cluster.ReadBackup(snap.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).RestoreBackup(ctx, b, broker.RestoreAuth{Authenticator: info.Authenticator}); err == nil || !strings.Contains(err.Error(), "no domain key check") {
		t.Fatalf("restore of a backup without a domain key check: %v", err)
	}
}

// requestsTotal reads hsmbroker_requests_total for one method and code.
func requestsTotal(t *testing.T, method, code string) float64 {
	t.Helper()
	return hsmtest.Gathered(t, "hsmbroker_requests_total", map[string]string{"method": method, "code": code})
}

// TestBackupStreamAuthorization: the streaming Backup goes through the same
// authentication, role gate, audit and metrics as the unary calls: only
// admins get it; every other principal, a node certificate included, is
// refused before a byte is sent, and each request, allowed or refused, has
// its audit line with its request id; while the audit log cannot be
// written, nothing is sent.
func TestBackupStreamAuthorization(t *testing.T) {
	var buf bytes.Buffer
	w := &lockedBuffer{b: &buf}
	e := newSecureEnv(t, audit.New(w, audit.Options{}))
	ctx := ctxT(t)
	admin := e.as("root", authz.RoleAdmin)
	e.createKey(admin, "alias/backed-up", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT)
	setup := len(auditLines(t, []byte(w.String())))
	deniedBefore, okBefore := requestsTotal(t, "Backup", "PermissionDenied"), requestsTotal(t, "Backup", "OK")

	iss, err := e.ca.IssueServer("node1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeCert := newClient(hsmtest.DialTLS(t, e.addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: iss.Key}}}))
	refused := []struct {
		principal string
		role      authz.Role
		c         clients
	}{
		{"ursula", authz.RoleUser, e.as("ursula", authz.RoleUser)},
		{"audra", authz.RoleAuditor, e.as("audra", authz.RoleAuditor)},
		{"drifter", "", e.as("drifter", "contractor")},
		{"node1", "node", nodeCert},
	}
	for i, r := range refused {
		var got bytes.Buffer
		err := backup(withRequestID(ctx, fmt.Sprintf("denied-%d", i)), r.c, &got)
		wantErr(t, err, codes.PermissionDenied, broker.ExcAccessDenied, r.principal, "hsmbroker:Backup")
		if got.Len() != 0 {
			t.Fatalf("%s received %d bytes of a refused backup", r.principal, got.Len())
		}
	}

	stream, err := admin.clus.Backup(withRequestID(ctx, "allowed"), &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := client.ReceiveBackup(stream, &snap); err != nil {
		t.Fatalf("admin backup: %v", err)
	}
	if md, err := stream.Header(); err != nil || len(md.Get("x-request-id")) != 1 || md.Get("x-request-id")[0] != "allowed" {
		t.Errorf("x-request-id header %v (%v), want allowed", md, err)
	}

	// A refused backup has one line; the allowed one an intent, written
	// before its first message, and its outcome.
	recs := auditLines(t, []byte(w.String()))[setup:]
	if len(recs) != len(refused)+2 {
		t.Fatalf("%d audit lines for %d backups:\n%s", len(recs), len(refused)+1, w.String())
	}
	for i, r := range refused {
		rec := recs[i]
		if rec.Operation != "hsmbroker:Backup" || rec.Principal != r.principal || rec.Role != string(r.role) || rec.Decision != "deny" ||
			rec.Result != broker.ExcAccessDenied || rec.Code != "PermissionDenied" || rec.RequestID != fmt.Sprintf("denied-%d", i) || rec.Peer == "" {
			t.Errorf("audit line of %s's backup: %+v", r.principal, rec)
		}
	}
	intent, outcome := recs[len(refused)], recs[len(refused)+1]
	if intent.Operation != "hsmbroker:Backup" || intent.Principal != "root" || intent.Decision != "allow" ||
		intent.Result != audit.ResultIntent || intent.RequestID != "allowed" || intent.Intent != 0 {
		t.Errorf("intent line of the admin's backup: %+v", intent)
	}
	if outcome.Operation != "hsmbroker:Backup" || outcome.Result != "OK" || outcome.RequestID != "allowed" || outcome.Intent != intent.Seq {
		t.Errorf("outcome line of the admin's backup: %+v", outcome)
	}
	if d := requestsTotal(t, "Backup", "PermissionDenied") - deniedBefore; d != float64(len(refused)) {
		t.Errorf("hsmbroker_requests_total counted %v refused backups, want %d", d, len(refused))
	}
	if d := requestsTotal(t, "Backup", "OK") - okBefore; d != 1 {
		t.Errorf("hsmbroker_requests_total counted %v backups, want 1", d)
	}

	// A client without a certificate does not get through the handshake.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got bytes.Buffer
	err = backup(cctx, newClient(hsmtest.DialTLS(t, e.addr, hsmtest.NoCertTLS(e.ca))), &got)
	if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated || got.Len() != 0 {
		t.Fatalf("backup without a certificate: %v (%s), %d bytes", err, code, got.Len())
	}
	if n := len(auditLines(t, []byte(w.String()))); n != setup+len(refused)+2 {
		t.Fatalf("a refused handshake left an audit line")
	}

	// While the audit log cannot be written, not one byte leaves.
	w.fail.Store(true)
	got.Reset()
	err = backup(ctx, admin, &got)
	wantErr(t, err, codes.Unavailable, broker.ExcDependencyTimeout, "audit log")
	if got.Len() != 0 {
		t.Fatalf("%d bytes of an unaudited backup were sent", got.Len())
	}
	w.fail.Store(false)
	if err := backup(ctx, admin, io.Discard); err != nil {
		t.Fatalf("backup once the audit log is back: %v", err)
	}
}

// TestStreamsWithoutCertificate: on a server that lets a client without a
// certificate finish the handshake, the streaming Backup is refused as
// unary calls are, and so are gRPC health (Check and the Watch stream) and
// reflection, which a caller with a certificate gets.
func TestStreamsWithoutCertificate(t *testing.T) {
	var buf bytes.Buffer
	e := newSecureEnvAuth(t, audit.New(&lockedBuffer{b: &buf}, audit.Options{}), tls.VerifyClientCertIfGiven)
	ctx := ctxT(t)
	conn := hsmtest.DialTLS(t, e.addr, hsmtest.NoCertTLS(e.ca))
	anon := newClient(conn)
	_, err := anon.keys.ListKeys(ctx, &pb.ListKeysRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListKeys without a certificate: %v", err)
	}
	var got bytes.Buffer
	err = backup(ctx, anon, &got)
	if status.Code(err) != codes.Unauthenticated || got.Len() != 0 {
		t.Fatalf("Backup without a certificate: %v, %d bytes", err, got.Len())
	}
	if buf.Len() != 0 {
		t.Fatalf("unauthenticated requests left audit lines:\n%s", buf.String())
	}

	// Health and reflection without a certificate are refused too: health
	// is open to any certificate of the cluster CA, reflection to a caller
	// with a role, and neither to anyone at all.
	hc := healthpb.NewHealthClient(conn)
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health Check without a certificate: %v %v", r, err)
	}
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = watch.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health Watch without a certificate: %v", err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err == nil {
		_ = refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a certificate: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("refused anonymous health and reflection left audit lines:\n%s", buf.String())
	}
	// With a certificate, health and reflection are served, unaudited.
	user := e.conn("app", authz.RoleUser)
	if r, err := healthpb.NewHealthClient(user).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check: %v %v", r, err)
	}
	refl, err = reflectionpb.NewServerReflectionClient(user).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := refl.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	found := false
	for _, s := range r.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "hsmbroker.v1.ClusterService"
	}
	if !found {
		t.Fatalf("reflection lists %v", r.GetListServicesResponse().GetService())
	}
	_ = refl.CloseSend()
	if buf.Len() != 0 {
		t.Fatalf("health and reflection left audit lines:\n%s", buf.String())
	}

	// The same client with a certificate gets its backup.
	if err := backup(metadata.AppendToOutgoingContext(ctx, "x-request-id", "with-cert"), e.as("root", authz.RoleAdmin), io.Discard); err != nil {
		t.Fatalf("admin backup: %v", err)
	}
}
