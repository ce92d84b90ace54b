package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// runRestore runs `hsmbrokerd restore` to completion and returns its exit
// error and output.
func runRestore(t *testing.T, c *serveCluster, args ...string) (string, error) {
	t.Helper()
	p := startProc(t, environ("SOFTHSM2_CONF="+c.softhsm), append([]string{"restore"}, args...)...)
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("hsmbrokerd restore did not finish")
	}
	return p.out.String(), p.err
}

// A cluster whose Raft state is destroyed comes back from a backup on the
// HSM that holds its domain key: old ciphertexts decrypt again.
func TestServeRestoreFromBackup(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	n1 := c.node(t, "node-1", "bootstrap: true\n")
	p1 := c.start(t, n1)
	conn := dial(t, n1.grpcAddr, c.caFile, c.clientCert, c.clientKey)
	waitServing(t, p1, conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, crypto, clus := pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn), pb.NewClusterServiceClient(conn)
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/precious"}); err != nil {
		t.Fatal(err)
	}
	enc, err := crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/precious", Plaintext: []byte("keep me")})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := clus.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(c.dir, "cluster.snap")
	f, err := os.OpenFile(backup, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.ReceiveBackup(stream, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(written); hex.EncodeToString(sum[:]) != b.SHA256 || int64(len(written)) != b.Bytes {
		t.Fatal("backup checksum mismatch")
	}
	// What 'hsmctl cluster backup' writes beside it.
	authFile := client.FormatBackupAuth(b.Authenticator, "cluster.snap")
	if err := os.WriteFile(backup+".auth", authFile, 0o600); err != nil {
		t.Fatal(err)
	}
	p1.stop(t)

	// Restore refuses while the Raft state exists, and a wrong checksum.
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", backup); err == nil || !strings.Contains(out, "empty Raft directory") {
		t.Fatalf("restore over existing state: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(n1.dir, "data")); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", backup, "--sha256", strings.Repeat("0", 64)); err == nil || !strings.Contains(out, "refusing") {
		t.Fatalf("restore with a wrong checksum: %v\n%s", err, out)
	}
	// Without --sha256, the FILE.sha256 that hsmctl writes beside a backup
	// is checked; a truncated file with no checksum is refused before
	// anything is made from it. Neither leaves Raft state behind.
	edited := filepath.Join(c.dir, "edited.snap")
	if err := os.WriteFile(edited, append([]byte(nil), written...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(edited+".sha256", []byte(strings.Repeat("ab", 32)+"  edited.snap\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", edited); err == nil || !strings.Contains(out, "edited.snap.sha256") {
		t.Fatalf("restore against a .sha256 beside it that does not match: %v\n%s", err, out)
	}
	truncated := filepath.Join(c.dir, "truncated.snap")
	if err := os.WriteFile(truncated, written[:len(written)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", truncated); err == nil || !strings.Contains(out, "has no authenticator beside it") {
		t.Fatalf("restore of a backup without an authenticator: %v\n%s", err, out)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", truncated, "--unauthenticated", "--auth", backup+".auth"); err == nil || !strings.Contains(out, "exclude each other") {
		t.Fatalf("restore with --auth and --unauthenticated: %v\n%s", err, out)
	}
	// A .sha256 or .auth beside the backup that is not a regular file (a
	// link to /dev/zero, a FIFO with no writer) is refused at once, not
	// read or waited for without end.
	odd := filepath.Join(c.dir, "odd.snap")
	if err := os.WriteFile(odd, written, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", odd+".sha256"); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", odd); err == nil || !strings.Contains(out, "odd.snap.sha256 is not a regular file") {
		t.Fatalf("restore with /dev/zero as its .sha256: %v\n%s", err, out)
	}
	if err := os.Remove(odd + ".sha256"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(odd+".auth", 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", odd); err == nil || !strings.Contains(out, "odd.snap.auth is not a regular file") {
		t.Fatalf("restore with a FIFO as its .auth: %v\n%s", err, out)
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", truncated, "--unauthenticated"); err == nil || !strings.Contains(out, "cannot be restored") ||
		!strings.Contains(out, "not checked") || !strings.Contains(out, "without checking its authenticator") {
		t.Fatalf("restore of a truncated backup: %v\n%s", err, out)
	}
	// A backup edited where it was kept, consistently (an alias renamed:
	// it still decodes; its .sha256 recomputed, its .auth copied), is
	// refused by its authenticator once the HSM recomputes it; the refusal
	// is audited and takes the founded state away again.
	forged := filepath.Join(c.dir, "forged.snap")
	forgedBytes := bytes.ReplaceAll(written, []byte("alias/precious"), []byte("alias/precioux"))
	if bytes.Equal(forgedBytes, written) {
		t.Fatal("the backup names no alias/precious")
	}
	forgedSum := sha256.Sum256(forgedBytes)
	for name, data := range map[string][]byte{forged: forgedBytes, forged + ".sha256": []byte(hex.EncodeToString(forgedSum[:]) + "  forged.snap\n"), forged + ".auth": authFile} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := runRestore(t, c, "--config", n1.config, "--backup", forged); err == nil || !strings.Contains(out, "does not match its authenticator") {
		t.Fatalf("restore of an edited backup with its checksum recomputed: %v\n%s", err, out)
	}
	if res := checkRestoreAudited(t, filepath.Join(n1.dir, "data", "audit.log"), ""); res == "OK" {
		t.Fatal("the refused restore's outcome line says OK")
	}
	if data, err := os.ReadFile(filepath.Join(n1.dir, "data", "audit.log")); err != nil ||
		!strings.Contains(string(data), `"decision":"deny","reason":"the backup does not match its authenticator"`) {
		t.Fatalf("the refused restore is not audited as denied for its authenticator (%v):\n%s", err, data)
	}
	if has, err := cluster.HasState(filepath.Join(n1.dir, "data", "raft")); err != nil || has {
		t.Fatalf("Raft state after refused restores: %v %v", has, err)
	}
	// A node whose HSM holds no domain key cannot restore.
	n2 := c.node(t, "node-2", "bootstrap: true\n")
	if out, err := runRestore(t, c, "--config", n2.config, "--backup", backup); err == nil || !strings.Contains(out, "no domain key") {
		t.Fatalf("restore on an HSM without the domain key: %v\n%s", err, out)
	}
	// Nor one whose HSM holds another cluster's: that is found once a
	// cluster has been founded to restore into, and the failed restore
	// takes the founded state away again, so serve finds no empty cluster.
	p2 := c.start(t, n2)
	p2.stop(t)
	if err := os.RemoveAll(filepath.Join(n2.dir, "data")); err != nil {
		t.Fatal(err)
	}
	if out, err := runRestore(t, c, "--config", n2.config, "--backup", backup); err == nil || !strings.Contains(out, "domain key") {
		t.Fatalf("restore on an HSM with another domain key: %v\n%s", err, out)
	}
	if has, err := cluster.HasState(filepath.Join(n2.dir, "data", "raft")); err != nil || has {
		t.Fatalf("Raft state after a restore refused for its domain key: %v %v", has, err)
	}
	// A restore that failed is audited too, with its failure as outcome.
	if res := checkRestoreAudited(t, filepath.Join(n2.dir, "data", "audit.log"), ""); res == "OK" {
		t.Fatal("the refused restore's outcome line says OK")
	}

	// A restore stopped part-way (kill -9, power loss) leaves a founded
	// cluster holding none or part of the backup, and its marker. serve
	// refuses to start on it, saying what to do, and restore removes that
	// state and starts over.
	p1 = c.start(t, n1) // founds an empty cluster, as a restore does first
	p1.stop(t)
	marker := filepath.Join(n1.dir, "data", restoreMarkerName)
	if err := os.WriteFile(marker, []byte("restore of "+backup+" started\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p1 = c.startToExit(t, n1, "serve on the state of an unfinished restore")
	if out := p1.out.String(); p1.err == nil || !strings.Contains(out, "did not finish") || !strings.Contains(out, "hsmbrokerd restore --config "+n1.config) {
		t.Fatalf("serve on the state of an unfinished restore: %v\n%s", p1.err, out)
	}

	// --auth names an authenticator file kept elsewhere.
	keptAuth := filepath.Join(c.dir, "kept.auth")
	if err := os.WriteFile(keptAuth, authFile, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runRestore(t, c, "--config", n1.config, "--backup", backup, "--sha256", b.SHA256, "--auth", keptAuth)
	if err != nil || !strings.Contains(out, "restored 1 key from") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the restore marker is still there after the restore finished: %v", err)
	}
	// The restore is in the node's audit log: an intent and its outcome.
	checkRestoreAudited(t, filepath.Join(n1.dir, "data", "audit.log"), "OK")
	p1 = c.start(t, n1)
	conn = dial(t, n1.grpcAddr, c.caFile, c.clientCert, c.clientKey)
	waitServing(t, p1, conn)
	dec, err := pb.NewCryptoServiceClient(conn).Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	if err != nil || string(dec.GetPlaintext()) != "keep me" {
		t.Fatalf("old ciphertext after restore: %v", err)
	}
	p1.stop(t)
}

// checkRestoreAudited requires the audit log at path to be intact and to
// hold a restore's intent line and, last, the outcome that names it; with
// want, the outcome's result must be that. It returns the result.
func checkRestoreAudited(t *testing.T, path, want string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(data)); err != nil {
		t.Fatalf("audit log %s: %v", path, err)
	}
	// The restore's outcome is its last line; the intent it names comes
	// before any line of the restore's own changes.
	intents := map[uint64]bool{}
	var outcome *audit.Record
	for line := range strings.Lines(string(data)) {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Operation != "internal:restore" || r.Front != "internal" {
			continue
		}
		if r.Result == audit.ResultIntent {
			intents[r.Seq] = true
			continue
		}
		outcome = &r
	}
	if outcome == nil || !intents[outcome.Intent] {
		t.Fatalf("audit log %s: no internal:restore outcome naming its intent:\n%s", path, data)
	}
	if want != "" && outcome.Result != want {
		t.Fatalf("the restore's outcome is %q, want %q", outcome.Result, want)
	}
	return outcome.Result
}
