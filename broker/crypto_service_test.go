package broker_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

func TestEncryptDecryptSymmetric(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	ec := map[string]string{"tenant": "acme", "purpose": "test"}

	for _, n := range []int{1, 100, keys.MaxPlaintext} {
		pt := make([]byte, n)
		_, _ = rand.Read(pt)
		enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: pt, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("encrypt %d bytes: %v", n, err)
		}
		if enc.GetKeyId() != k.GetKeyId() || enc.GetEncryptionAlgorithm() != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT {
			t.Fatalf("response names key %q alg %s", enc.GetKeyId(), enc.GetEncryptionAlgorithm())
		}
		if n >= 16 && bytes.Contains(enc.GetCiphertextBlob(), pt) {
			t.Fatal("ciphertext contains the plaintext")
		}
		dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), pt) || dec.GetKeyId() != k.GetKeyId() {
			t.Fatalf("decrypt %d bytes: %v", n, err)
		}
	}

	enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetAliasNames()[0], Plaintext: []byte("by alias"), EncryptionContext: ec})
	if err != nil {
		t.Fatalf("encrypt by alias: %v", err)
	}
	blob := enc.GetCiphertextBlob()
	if _, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetArn(), Plaintext: []byte("by arn")}); err != nil {
		t.Fatalf("encrypt by ARN: %v", err)
	}

	// Every decryption failure that depends on the blob is the same error.
	tampered := append([]byte(nil), blob...)
	tampered[len(tampered)-1] ^= 1
	headerTampered := append([]byte(nil), blob...)
	headerTampered[20] ^= 1 // inside the version/IV: authenticated
	other := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	uniform := []struct {
		name string
		req  *pb.DecryptRequest
	}{
		{"wrong context", &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: map[string]string{"tenant": "evil", "purpose": "test"}}},
		{"missing context", &pb.DecryptRequest{CiphertextBlob: blob}},
		{"extra context", &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: map[string]string{"tenant": "acme", "purpose": "test", "x": "y"}}},
		{"tampered tag", &pb.DecryptRequest{CiphertextBlob: tampered, EncryptionContext: ec}},
		{"tampered header", &pb.DecryptRequest{CiphertextBlob: headerTampered, EncryptionContext: ec}},
		{"garbage", &pb.DecryptRequest{CiphertextBlob: bytes.Repeat([]byte{1}, 80)}},
		{"truncated", &pb.DecryptRequest{CiphertextBlob: blob[:40], EncryptionContext: ec}},
		{"unknown key", &pb.DecryptRequest{CiphertextBlob: append([]byte{1}, make([]byte, 60)...)}},
	}
	var messages []string
	for _, c := range uniform {
		_, err := e.crypto.Decrypt(ctx, c.req)
		wantErr(t, err, codes.InvalidArgument, "InvalidCiphertextException")
		messages = append(messages, err.Error())
	}
	for _, m := range messages[1:] {
		if m != messages[0] {
			t.Errorf("decrypt failures differ: %q vs %q", m, messages[0])
		}
	}
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec, KeyId: other.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "IncorrectKeyException", other.GetKeyId())
	if _, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec, KeyId: k.GetKeyId()}); err != nil {
		t.Fatalf("decrypt naming the right key: %v", err)
	}

	// Bad input names the field and the limit.
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: make([]byte, keys.MaxPlaintext+1)})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "Plaintext", "4096")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "Plaintext")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/no-such-alias", Plaintext: []byte("x")})
	wantErr(t, err, codes.NotFound, "NotFoundException", "alias/no-such-alias")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: keys.NewKeyID(), Plaintext: []byte("x")})
	wantErr(t, err, codes.NotFound, "NotFoundException")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "not a key", Plaintext: []byte("x")})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "KeyId")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x"), EncryptionContext: map[string]string{"": "v"}})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "EncryptionContext")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x"), EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException")
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "CiphertextBlob")
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: make([]byte, keys.MaxCiphertextBlob+1)})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "CiphertextBlob", "6144")
}

func TestKeyStatesGateUse(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("gate")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: k.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x")})
	wantErr(t, err, codes.FailedPrecondition, "DisabledException", k.GetKeyId())
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, err, codes.FailedPrecondition, "DisabledException")
	_, err = e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: k.GetKeyId(), KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	wantErr(t, err, codes.FailedPrecondition, "DisabledException")
	if _, err := e.keys.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: k.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()}); err != nil {
		t.Fatalf("decrypt after re-enable: %v", err)
	}

	del, err := e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.GetKeyId(), PendingWindowDays: 7})
	if err != nil {
		t.Fatal(err)
	}
	if del.GetKeyState() != pb.KeyState_KEY_STATE_PENDING_DELETION || del.GetPendingWindowDays() != 7 {
		t.Fatalf("schedule response %+v", del)
	}
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, err, codes.FailedPrecondition, "KMSInvalidStateException", "pending deletion")
	_, err = e.keys.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: k.GetKeyId()})
	wantErr(t, err, codes.FailedPrecondition, "KMSInvalidStateException")
	_, err = e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.GetKeyId()})
	wantErr(t, err, codes.FailedPrecondition, "KMSInvalidStateException", "already pending")
	cancel, err := e.keys.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: k.GetKeyId()})
	if err != nil || cancel.GetKeyState() != pb.KeyState_KEY_STATE_DISABLED {
		t.Fatalf("cancel: %v %v", cancel, err)
	}
	d, _ := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: k.GetKeyId()})
	if d.GetKeyMetadata().GetKeyState() != pb.KeyState_KEY_STATE_DISABLED || d.GetKeyMetadata().GetDeletionDate() != nil {
		t.Fatalf("after cancel: %v", d.GetKeyMetadata())
	}
	_, err = e.keys.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: k.GetKeyId()})
	wantErr(t, err, codes.FailedPrecondition, "KMSInvalidStateException")

	for _, days := range []uint32{1, 6, 31, 365, 1 << 31} {
		_, err = e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.GetKeyId(), PendingWindowDays: days})
		wantErr(t, err, codes.InvalidArgument, "ValidationException", "PendingWindowDays", "7", "30")
	}
}

// After its waiting period the leader deletes the key; it is gone, with
// its aliases.
func TestScheduledDeletionHappens(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	del, err := e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.GetKeyId()})
	if err != nil {
		t.Fatal(err)
	}
	if del.GetPendingWindowDays() != 30 {
		t.Fatalf("default window %d, want 30", del.GetPendingWindowDays())
	}
	if got := time.Until(del.GetDeletionDate().AsTime()); got < 29*24*time.Hour || got > 31*24*time.Hour {
		t.Fatalf("deletion date %v from now", got)
	}
	e.clock.Set(del.GetDeletionDate().AsTime().Add(time.Second))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: k.GetKeyId()})
		if err != nil {
			wantErr(t, err, codes.NotFound, "NotFoundException")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key not deleted after its deletion date")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: k.GetAliasNames()[0]})
	wantErr(t, err, codes.NotFound, "NotFoundException")
}

func TestRotationKeepsOldCiphertexts(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	var blobs [][]byte
	for i := 0; i < 3; i++ {
		enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, enc.GetCiphertextBlob())
		rot, err := e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k.GetKeyId()})
		if err != nil || rot.GetVersion() != uint32(i+2) {
			t.Fatalf("rotate: %v %v", rot, err)
		}
	}
	for i, b := range blobs {
		dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: b})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), []byte{byte(i)}) {
			t.Fatalf("version %d ciphertext: %v", i+1, err)
		}
	}
	vs, err := e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k.GetKeyId(), PageSize: 3})
	if err != nil || len(vs.GetVersions()) != 3 || vs.GetNextPageToken() == "" {
		t.Fatalf("versions page 1: %v %v", vs, err)
	}
	vs2, err := e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k.GetKeyId(), PageToken: vs.GetNextPageToken()})
	if err != nil || len(vs2.GetVersions()) != 1 || !vs2.GetVersions()[0].GetCurrent() || vs2.GetVersions()[0].GetVersion() != 4 {
		t.Fatalf("versions page 2: %v %v", vs2, err)
	}
	rsaKey := e.createKey(pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	_, err = e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: rsaKey.GetKeyId()})
	wantErr(t, err, codes.FailedPrecondition, "UnsupportedOperationException", "symmetric")
}

func TestRSAEncryption(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	pkr, err := e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: k.GetKeyId()})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pkr.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(pkr.GetEncryptionAlgorithms()) != 2 || len(pkr.GetSigningAlgorithms()) != 0 {
		t.Fatalf("algorithms %v / %v", pkr.GetEncryptionAlgorithms(), pkr.GetSigningAlgorithms())
	}
	for _, c := range []struct {
		alg   pb.EncryptionAlgorithm
		hash  crypto.Hash
		limit int
	}{
		{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1, crypto.SHA1, 214},
		{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256, crypto.SHA256, 190},
	} {
		// Encrypted by the service, decrypted by the service.
		enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: make([]byte, c.limit), EncryptionAlgorithm: c.alg})
		if err != nil {
			t.Fatalf("%s at the limit: %v", c.alg, err)
		}
		dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{KeyId: k.GetKeyId(), CiphertextBlob: enc.GetCiphertextBlob(), EncryptionAlgorithm: c.alg})
		if err != nil || len(dec.GetPlaintext()) != c.limit {
			t.Fatalf("%s decrypt: %v", c.alg, err)
		}
		_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: make([]byte, c.limit+1), EncryptionAlgorithm: c.alg})
		wantErr(t, err, codes.InvalidArgument, "ValidationException", "Plaintext", itoa(c.limit))
		// Encrypted by anyone with the public key.
		ct, _ := rsa.EncryptOAEP(c.hash.New(), rand.Reader, pub.(*rsa.PublicKey), []byte("from outside"), nil)
		dec, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{KeyId: k.GetAliasNames()[0], CiphertextBlob: ct, EncryptionAlgorithm: c.alg})
		if err != nil || string(dec.GetPlaintext()) != "from outside" {
			t.Fatalf("%s decrypt of outside ciphertext: %v", c.alg, err)
		}
	}
	ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), []byte("x"), nil)
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: ct, EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "KeyId", "required")
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{KeyId: k.GetKeyId(), CiphertextBlob: ct, EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256})
	wantErr(t, err, codes.InvalidArgument, "InvalidCiphertextException")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("x"), EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1,
		EncryptionContext: map[string]string{"a": "b"}})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "EncryptionContext")
	_, err = e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: k.GetKeyId(), KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException")
	_, err = e.crypto.Sign(ctx, &pb.SignRequest{KeyId: k.GetKeyId(), Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException", "ENCRYPT_DECRYPT")
	// The key named and the algorithm left out: the answer is that the key
	// cannot decrypt with SYMMETRIC_DEFAULT, not that an RSA ciphertext is
	// not a symmetric one.
	_, err = e.crypto.Decrypt(ctx, &pb.DecryptRequest{KeyId: k.GetKeyId(), CiphertextBlob: ct})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException", "RSA_2048", "SYMMETRIC_DEFAULT")
}

func TestDataKeys(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	ec := map[string]string{"file": "report.pdf"}
	for _, c := range []struct {
		spec pb.DataKeySpec
		n    uint32
		want int
	}{{pb.DataKeySpec_DATA_KEY_SPEC_AES_256, 0, 32}, {pb.DataKeySpec_DATA_KEY_SPEC_AES_128, 0, 16}, {0, 1, 1}, {0, 1024, 1024}} {
		dk, err := e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: k.GetKeyId(), KeySpec: c.spec, NumberOfBytes: c.n, EncryptionContext: ec})
		if err != nil || len(dk.GetPlaintext()) != c.want {
			t.Fatalf("%v/%d: %d bytes, %v", c.spec, c.n, len(dk.GetPlaintext()), err)
		}
		dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: dk.GetCiphertextBlob(), EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), dk.GetPlaintext()) {
			t.Fatalf("encrypted data key does not decrypt to the plaintext one: %v", err)
		}
	}
	np, err := e.crypto.GenerateDataKeyWithoutPlaintext(ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{KeyId: k.GetKeyId(), KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	if err != nil {
		t.Fatal(err)
	}
	if dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: np.GetCiphertextBlob()}); err != nil || len(dec.GetPlaintext()) != 32 {
		t.Fatalf("data key without plaintext: %v", err)
	}
	for _, bad := range []*pb.GenerateDataKeyRequest{
		{KeyId: k.GetKeyId()},
		{KeyId: k.GetKeyId(), KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, NumberOfBytes: 32},
		{KeyId: k.GetKeyId(), NumberOfBytes: 1025},
		{KeyId: k.GetKeyId(), NumberOfBytes: 1 << 31},
		{KeyId: k.GetKeyId(), KeySpec: 77},
	} {
		_, err := e.crypto.GenerateDataKey(ctx, bad)
		wantErr(t, err, codes.InvalidArgument, "ValidationException")
	}

	for _, spec := range []pb.DataKeyPairSpec{pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_RSA_2048, pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_ECC_NIST_P256, pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_ECC_NIST_P521} {
		kp, err := e.crypto.GenerateDataKeyPair(ctx, &pb.GenerateDataKeyPairRequest{KeyId: k.GetKeyId(), KeyPairSpec: spec, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: kp.GetPrivateKeyCiphertextBlob(), EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.GetPlaintext(), kp.GetPrivateKeyPlaintext()) {
			t.Fatalf("%s: encrypted private key does not decrypt to the plaintext one: %v", spec, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(kp.GetPrivateKeyPlaintext())
		if err != nil {
			t.Fatal(err)
		}
		pubDER, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
		if !bytes.Equal(pubDER, kp.GetPublicKey()) {
			t.Fatalf("%s: public key does not match the private key", spec)
		}
	}
	kp, err := e.crypto.GenerateDataKeyPairWithoutPlaintext(ctx, &pb.GenerateDataKeyPairWithoutPlaintextRequest{KeyId: k.GetKeyId(), KeyPairSpec: pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_ECC_NIST_P384})
	if err != nil || len(kp.GetPublicKey()) == 0 || len(kp.GetPrivateKeyCiphertextBlob()) == 0 {
		t.Fatalf("pair without plaintext: %v", err)
	}
	_, err = e.crypto.GenerateDataKeyPair(ctx, &pb.GenerateDataKeyPairRequest{KeyId: k.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "KeyPairSpec")
}

func TestSignVerifyEveryAlgorithm(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	msg := []byte("sign this")
	for _, spec := range []pb.KeySpec{pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeySpec_KEY_SPEC_RSA_3072, pb.KeySpec_KEY_SPEC_RSA_4096,
		pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeySpec_KEY_SPEC_ECC_NIST_P384, pb.KeySpec_KEY_SPEC_ECC_NIST_P521} {
		k := e.createKey(spec, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
		pkr, err := e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: k.GetKeyId()})
		if err != nil {
			t.Fatal(err)
		}
		if len(k.GetSigningAlgorithms()) == 0 {
			t.Fatalf("%s: metadata lists no signing algorithms", spec)
		}
		for _, alg := range k.GetSigningAlgorithms() {
			sig, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: k.GetKeyId(), Message: msg, SigningAlgorithm: alg})
			if err != nil {
				t.Fatalf("%s %s: %v", spec, alg, err)
			}
			ka := keys.SigningAlgorithm(strings.TrimPrefix(alg.String(), "SIGNING_ALGORITHM_"))
			h := ka.Hash().New()
			h.Write(msg)
			digest := h.Sum(nil)
			if ok, err := keys.VerifySignature(pkr.GetPublicKey(), ka, digest, sig.GetSignature()); !ok || err != nil {
				t.Fatalf("%s %s: stdlib rejects the signature: %v", spec, alg, err)
			}
			// Digest mode gives a signature that verifies the same way.
			dsig, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: k.GetKeyId(), Message: digest, MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST, SigningAlgorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			v, err := e.crypto.Verify(ctx, &pb.VerifyRequest{KeyId: k.GetKeyId(), Message: msg, Signature: dsig.GetSignature(), SigningAlgorithm: alg})
			if err != nil || !v.GetSignatureValid() {
				t.Fatalf("%s %s: Verify of digest-mode signature: %v %v", spec, alg, v, err)
			}
			v, err = e.crypto.Verify(ctx, &pb.VerifyRequest{KeyId: k.GetKeyId(), Message: []byte("other"), Signature: sig.GetSignature(), SigningAlgorithm: alg})
			if err != nil || v.GetSignatureValid() {
				t.Fatalf("%s %s: Verify of another message: %v %v", spec, alg, v, err)
			}
		}
	}
	p256 := e.createKey(pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0)
	_, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: p256.GetKeyId(), Message: msg, SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_384})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException")
	_, err = e.crypto.Sign(ctx, &pb.SignRequest{KeyId: p256.GetKeyId(), Message: msg})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "SigningAlgorithm")
	_, err = e.crypto.Sign(ctx, &pb.SignRequest{KeyId: p256.GetKeyId(), Message: []byte("short"), MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST, SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "32")
	_, err = e.crypto.Sign(ctx, &pb.SignRequest{KeyId: p256.GetKeyId(), Message: make([]byte, 4097), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "4096")
	_, err = e.crypto.Verify(ctx, &pb.VerifyRequest{KeyId: p256.GetKeyId(), Message: msg, SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "Signature")
	sym := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	_, err = e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: sym.GetKeyId()})
	wantErr(t, err, codes.FailedPrecondition, "UnsupportedOperationException")

	pkr, _ := e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: p256.GetKeyId()})
	pub, _ := x509.ParsePKIXPublicKey(pkr.GetPublicKey())
	if _, ok := pub.(*ecdsa.PublicKey); !ok {
		t.Fatalf("P-256 public key is %T", pub)
	}
}

func TestMACAndRandom(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, c := range []struct {
		spec pb.KeySpec
		alg  pb.MacAlgorithm
		n    int
	}{
		{pb.KeySpec_KEY_SPEC_HMAC_256, pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256, 32},
		{pb.KeySpec_KEY_SPEC_HMAC_384, pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_384, 48},
		{pb.KeySpec_KEY_SPEC_HMAC_512, pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_512, 64},
	} {
		k := e.createKey(c.spec, 0)
		if k.GetKeyUsage() != pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC {
			t.Fatalf("%s default usage %s", c.spec, k.GetKeyUsage())
		}
		m, err := e.crypto.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: k.GetKeyId(), Message: []byte("msg"), MacAlgorithm: c.alg})
		if err != nil || len(m.GetMac()) != c.n {
			t.Fatalf("%s: %v", c.alg, err)
		}
		v, err := e.crypto.VerifyMac(ctx, &pb.VerifyMacRequest{KeyId: k.GetKeyId(), Message: []byte("msg"), Mac: m.GetMac(), MacAlgorithm: c.alg})
		if err != nil || !v.GetMacValid() {
			t.Fatalf("%s verify: %v %v", c.alg, v, err)
		}
		v, err = e.crypto.VerifyMac(ctx, &pb.VerifyMacRequest{KeyId: k.GetKeyId(), Message: []byte("msg2"), Mac: m.GetMac(), MacAlgorithm: c.alg})
		if err != nil || v.GetMacValid() {
			t.Fatalf("%s verify of another message: %v %v", c.alg, v, err)
		}
	}
	k := e.createKey(pb.KeySpec_KEY_SPEC_HMAC_256, 0)
	_, err := e.crypto.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: k.GetKeyId(), Message: []byte("m"), MacAlgorithm: pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_512})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException")
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("m")})
	wantErr(t, err, codes.InvalidArgument, "InvalidKeyUsageException")

	r, err := e.crypto.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: 1024})
	if err != nil || len(r.GetPlaintext()) != 1024 {
		t.Fatalf("random: %v", err)
	}
	for _, n := range []uint32{0, 1025, 1 << 31, 1<<32 - 1} {
		// The message names the number asked for.
		_, err := e.crypto.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: n})
		wantErr(t, err, codes.InvalidArgument, "ValidationException", "NumberOfBytes", "1024", fmt.Sprintf("got %d", n))
		_, err = e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: "alias/none", NumberOfBytes: n})
		if n != 0 {
			wantErr(t, err, codes.InvalidArgument, "ValidationException", "NumberOfBytes", fmt.Sprintf("got %d", n))
		}
	}
}

func TestReEncrypt(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	b := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	enc, _ := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: a.GetKeyId(), Plaintext: []byte("move me"), EncryptionContext: map[string]string{"k": "1"}})
	re, err := e.crypto.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), SourceEncryptionContext: map[string]string{"k": "1"},
		DestinationKeyId: b.GetAliasNames()[0], DestinationEncryptionContext: map[string]string{"k": "2"}})
	if err != nil || re.GetSourceKeyId() != a.GetKeyId() || re.GetKeyId() != b.GetKeyId() {
		t.Fatalf("re-encrypt: %v %v", re, err)
	}
	dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: re.GetCiphertextBlob(), EncryptionContext: map[string]string{"k": "2"}})
	if err != nil || string(dec.GetPlaintext()) != "move me" || dec.GetKeyId() != b.GetKeyId() {
		t.Fatalf("decrypt re-encrypted: %v", err)
	}
	_, err = e.crypto.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), DestinationKeyId: b.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "InvalidCiphertextException")
	_, err = e.crypto.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "DestinationKeyId")
	_ = sha256.New
}
