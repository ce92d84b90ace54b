package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestRawServiceAndDataObjects drives RawService and DataObjectService on a
// real node: raw AES round trips, the wall between raw keys and the
// broker's ciphertext format, rotation refused, data objects replicated
// and bounded, and every call in the audit log.
func TestRawServiceAndDataObjects(t *testing.T) {
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	conn := c.Dial(0, "admin")
	ks, cs := pb.NewKeyServiceClient(conn), pb.NewCryptoServiceClient(conn)
	rs, ds := pb.NewRawServiceClient(conn), pb.NewDataObjectServiceClient(conn)
	ctx := context.Background()
	mk := func(alias string, usage pb.KeyUsage) string {
		resp, err := ks.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: alias, KeyUsage: usage})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetKeyMetadata().GetKeyId()
	}
	raw := mk("alias/raw", pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT)
	mk("alias/normal", pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	iv := bytes.Repeat([]byte{1}, 16)
	pt := []byte("a 32-byte table key for Oracle!!")

	enc, err := rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: "alias/raw", Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD, Iv: iv, Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	if enc.GetKeyId() != raw || len(enc.GetCiphertext()) != 48 {
		t.Fatalf("key %s, %d bytes", enc.GetKeyId(), len(enc.GetCiphertext()))
	}
	dec, err := rs.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: raw, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD, Iv: iv, Ciphertext: enc.GetCiphertext()})
	if err != nil || !bytes.Equal(dec.GetPlaintext(), pt) {
		t.Fatalf("decrypt: %v", err)
	}
	want := func(err error, code codes.Code, what string) {
		t.Helper()
		if got := status.Code(err); got != code {
			t.Fatalf("%s: %v, want %s", what, err, code)
		}
	}
	_, err = rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: "alias/normal", Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, Iv: iv, Plaintext: pt})
	want(err, codes.InvalidArgument, "raw AES with an ENCRYPT_DECRYPT key")
	_, err = cs.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/raw", Plaintext: pt})
	want(err, codes.InvalidArgument, "Encrypt with a raw key")
	normalCT, err := cs.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/normal", Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.Decrypt(ctx, &pb.DecryptRequest{KeyId: "alias/raw", CiphertextBlob: normalCT.GetCiphertextBlob()})
	want(err, codes.InvalidArgument, "Decrypt naming a raw key")
	_, err = ks.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: raw})
	want(err, codes.FailedPrecondition, "rotating a raw key")
	_, err = rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: raw, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, Iv: iv[:5], Plaintext: pt})
	want(err, codes.InvalidArgument, "short IV")
	_, err = rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: raw, Iv: iv, Plaintext: pt})
	want(err, codes.InvalidArgument, "no algorithm")
	// Empty data, which PKCS#11 allows in C_Encrypt, gives what the mode
	// makes of it: nothing in CBC and CTR, a padding block in CBC_PAD, the
	// tag alone in GCM; and each decrypts back to nothing.
	for alg, n := range map[pb.RawAlgorithm]int{pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC: 0, pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR: 0,
		pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD: 16, pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM: 16} {
		e, err := rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: raw, Algorithm: alg, Iv: iv, Plaintext: nil})
		if err != nil || len(e.GetCiphertext()) != n {
			t.Fatalf("%s of no data: %d bytes, %v; want %d bytes", alg, len(e.GetCiphertext()), err, n)
		}
		d, err := rs.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: raw, Algorithm: alg, Iv: iv, Ciphertext: e.GetCiphertext()})
		if err != nil || len(d.GetPlaintext()) != 0 {
			t.Fatalf("%s decrypt of the encryption of no data: %d bytes, %v", alg, len(d.GetPlaintext()), err)
		}
	}
	gcm, err := rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: raw, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM, Iv: iv[:12], AdditionalData: []byte("aad"), Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rs.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: raw, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM, Iv: iv[:12], AdditionalData: []byte("other"), Ciphertext: gcm.GetCiphertext()})
	want(err, codes.InvalidArgument, "GCM with other additional data")

	// Data objects.
	made, err := ds.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "DATA_OBJECT_SUPPORTED_IDEN", Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := ds.ListDataObjects(ctx, &pb.ListDataObjectsRequest{})
	if err != nil || len(list.GetObjects()) != 1 || list.GetObjects()[0].GetId() != made.GetObject().GetId() || string(list.GetObjects()[0].GetValue()) != "v" {
		t.Fatalf("list: %v %v", list, err)
	}
	_, err = ds.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "big", Value: make([]byte, 64<<10+1)}})
	want(err, codes.InvalidArgument, "oversized data object")
	if _, err := ds.DeleteDataObject(ctx, &pb.DeleteDataObjectRequest{Id: made.GetObject().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = ds.DeleteDataObject(ctx, &pb.DeleteDataObjectRequest{Id: made.GetObject().GetId()})
	want(err, codes.NotFound, "deleting twice")

	// An auditor may neither use raw keys nor make data objects.
	aud := c.DialAs(0, "auditor1", authz.RoleAuditor)
	_, err = pb.NewRawServiceClient(aud).RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: raw, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, Iv: iv, Plaintext: pt})
	want(err, codes.PermissionDenied, "auditor RawEncrypt")
	_, err = pb.NewDataObjectServiceClient(aud).CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "x"}})
	want(err, codes.PermissionDenied, "auditor CreateDataObject")

	b, err := os.ReadFile(c.Nodes[0].AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, r := range auditLines(t, b) {
		ops[r.Operation]++
		if r.Operation == "kms:RawEncrypt" && r.KeyID == raw {
			ops["raw with key"]++
		}
	}
	if ops["raw with key"] == 0 {
		t.Fatal("no raw encryption is audited with its key")
	}
	for _, op := range []string{"kms:RawEncrypt", "kms:RawDecrypt", "hsmbroker:CreateDataObject", "hsmbroker:DeleteDataObject", "hsmbroker:ListDataObjects"} {
		if ops[op] == 0 {
			t.Errorf("no audit line for %s", op)
		}
	}
	if bytes.Contains(b, pt) {
		t.Fatal("the audit log holds a plaintext")
	}
}

// TestDataObjectsBounded: one principal may make at most a quarter of the
// cluster's data objects, whose values take at most a quarter of 2 MiB;
// all values together take at most 2 MiB (every caller lists them in one
// answer); labels are text a terminal shows as it is. Another principal
// can still make objects once one is at its limit.
func TestDataObjectsBounded(t *testing.T) {
	c := hsmtest.NewEmptyCluster(t)
	c.AddNode()
	ctx := context.Background()
	mallory := pb.NewDataObjectServiceClient(c.DialAs(0, "mallory", authz.RoleUser))
	alice := pb.NewDataObjectServiceClient(c.DialAs(0, "alice", authz.RoleUser))
	for _, label := range []string{"a\x00b", "safe\u009b2J", "EVIL\u202e"} {
		_, err := alice.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: label}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "Label") {
			t.Fatalf("label %q: %v", label, err)
		}
	}
	for i := range cluster.MaxDataObjectsPerCreator {
		if _, err := mallory.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: fmt.Sprint("m", i)}}); err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
	}
	_, err := mallory.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "one more"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "mallory") {
		t.Fatalf("object past the principal's limit: %v", err)
	}
	// Values: 512 KiB per principal, 2 MiB in all, in 64 KiB objects.
	big := make([]byte, 64<<10)
	perPrincipal := cluster.MaxDataObjectBytesPerCreator / len(big)
	users := make([]pb.DataObjectServiceClient, cluster.MaxDataObjectBytes/cluster.MaxDataObjectBytesPerCreator)
	for u := range users {
		users[u] = pb.NewDataObjectServiceClient(c.DialAs(0, fmt.Sprint("filler", u), authz.RoleUser))
		for i := range perPrincipal {
			if _, err := users[u].CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: fmt.Sprint("f", u, "-", i), Value: big}}); err != nil {
				t.Fatalf("filler %d value %d: %v", u, i, err)
			}
		}
		_, err := users[u].CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "over", Value: []byte("x")}})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "one principal") {
			t.Fatalf("filler %d past its share of the bytes: %v", u, err)
		}
	}
	_, err = alice.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: "over", Value: []byte("x")}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "bytes") {
		t.Fatalf("value past the cluster's room: %v", err)
	}
	list, err := alice.ListDataObjects(ctx, &pb.ListDataObjectsRequest{})
	if err != nil || len(list.GetObjects()) != cluster.MaxDataObjectsPerCreator+len(users)*perPrincipal {
		t.Fatalf("list: %d objects, %v", len(list.GetObjects()), err)
	}
}

// TestDataObjectBoundsConcurrent: the bounds on one principal's data
// objects hold for creates that arrive together, each of which finds room
// on the node before any is applied: the apply checks them again.
//
// On two nodes, through the follower: the leader's refusal keeps its
// exception (LimitExceededException) on the way back.
func TestDataObjectBoundsConcurrent(t *testing.T) {
	c := hsmtest.NewCluster(t, 2)
	ctx := context.Background()
	follower := c.Followers(t)[0].Index
	big := make([]byte, cluster.MaxDataObjectValue)
	for _, tc := range []struct {
		who        string
		value      []byte
		before     int // made one by one first
		want       int // made of the concurrent ones
		concurrent int
	}{
		{"counted", nil, cluster.MaxDataObjectsPerCreator - 6, 6, 16},
		{"weighed", big, cluster.MaxDataObjectBytesPerCreator/len(big) - 1, 1, 6},
	} {
		cl := pb.NewDataObjectServiceClient(c.DialAs(follower, tc.who, authz.RoleUser))
		for i := range tc.before {
			if _, err := cl.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: fmt.Sprint(i), Value: tc.value}}); err != nil {
				t.Fatalf("%s: object %d: %v", tc.who, i, err)
			}
		}
		var (
			wg            sync.WaitGroup
			mu            sync.Mutex
			made, refused int
			other         []error
		)
		start := make(chan struct{})
		for i := range tc.concurrent {
			wg.Go(func() {
				<-start
				_, err := cl.CreateDataObject(ctx, &pb.CreateDataObjectRequest{Object: &pb.DataObject{Label: fmt.Sprint("late", i), Value: tc.value}})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					made++
				case status.Code(err) == codes.FailedPrecondition && client.AWSException(err) == "LimitExceededException" &&
					strings.Contains(status.Convert(err).Message(), "one principal may"):
					refused++
				default:
					other = append(other, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if made != tc.want || refused != tc.concurrent-tc.want || len(other) > 0 {
			t.Fatalf("%s: %d made, %d refused for the principal's bound, want %d and %d; other errors: %v",
				tc.who, made, refused, tc.want, tc.concurrent-tc.want, other)
		}
	}
}

// TestRawCTRCounterWraps: AES-CTR counts with all 128 bits of the counter
// block, modulo 2^128, as PKCS#11 defines the counter with ulCounterBits
// 128: a counter block that wraps inside the input is no error, and the
// block after ff..ff is 00..00. Each keystream block is checked against
// the encryption of its counter block alone (CBC with a zero IV).
func TestRawCTRCounterWraps(t *testing.T) {
	c := hsmtest.NewEmptyCluster(t)
	c.AddNode()
	conn := c.Dial(0, "admin")
	ks, rs := pb.NewKeyServiceClient(conn), pb.NewRawServiceClient(conn)
	ctx := context.Background()
	resp, err := ks.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/ctr", KeyUsage: pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT})
	if err != nil {
		t.Fatal(err)
	}
	key := resp.GetKeyMetadata().GetKeyId()
	block := func(counter []byte) []byte {
		t.Helper()
		r, err := rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: key, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC, Iv: make([]byte, 16), Plaintext: counter})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetCiphertext()
	}
	ones := bytes.Repeat([]byte{0xff}, 16)
	fe := append(bytes.Repeat([]byte{0xff}, 15), 0xfe)
	one := append(make([]byte, 15), 1)
	for _, tc := range []struct {
		iv       []byte
		n        int
		counters [][]byte
	}{
		{ones, 17, [][]byte{ones, make([]byte, 16)}},
		{ones, 32, [][]byte{ones, make([]byte, 16)}},
		{fe, 48, [][]byte{fe, ones, make([]byte, 16)}},
		{fe, 40, [][]byte{fe, ones, make([]byte, 16)}},
		{ones, 48, [][]byte{ones, make([]byte, 16), one}},
	} {
		pt := make([]byte, tc.n)
		for i := range pt {
			pt[i] = byte(i * 7)
		}
		enc, err := rs.RawEncrypt(ctx, &pb.RawEncryptRequest{KeyId: key, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR, Iv: tc.iv, Plaintext: pt})
		if err != nil {
			t.Fatalf("CTR from %x over %d bytes: %v", tc.iv, tc.n, err)
		}
		ct := enc.GetCiphertext()
		var stream []byte
		for _, cb := range tc.counters {
			stream = append(stream, block(cb)...)
		}
		for i := range pt {
			if ct[i] != pt[i]^stream[i] {
				t.Fatalf("CTR from %x over %d bytes: byte %d is not the keystream of counter %x", tc.iv, tc.n, i, tc.counters[i/16])
			}
		}
		dec, err := rs.RawDecrypt(ctx, &pb.RawDecryptRequest{KeyId: key, Algorithm: pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR, Iv: tc.iv, Ciphertext: ct})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), pt) {
			t.Fatalf("CTR decrypt from %x over %d bytes: %v", tc.iv, tc.n, err)
		}
	}
}
