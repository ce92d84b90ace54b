package broker_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzRequests feeds arbitrary request messages to the service core (the
// methods gRPC and the AWS front call) and checks that validation answers
// every one without a panic and with a classifiable error. A selector byte
// picks the RPC; the rest is the protobuf encoding of its request.
//
// The fuzzing engine runs the target again in each worker process, each
// with its own keys: a seed carrying the ids or a ciphertext of the keys
// made here would name no key in a worker, and every request would stop
// at NotFound. Seeds carry placeholders of the same lengths instead
// (fuzzIDs, fuzzBlob), which the target replaces with this process's key
// ids and ciphertext; the encoding stays valid, as no length changes.
func FuzzRequests(f *testing.F) {
	e := newEnv(f)
	ctx := context.Background()
	sym := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	ec := e.createKey(pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0)
	mac := e.createKey(pb.KeySpec_KEY_SPEC_HMAC_256, 0)
	enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: sym.GetKeyId(), Plaintext: []byte("seed"), EncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		f.Fatal(err)
	}
	fuzzIDs := [3]string{"00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000a2", "00000000-0000-4000-8000-0000000000a3"}
	realIDs := [3]string{sym.GetKeyId(), ec.GetKeyId(), mac.GetKeyId()}
	fuzzBlob := bytes.Repeat([]byte{0xc7}, len(enc.GetCiphertextBlob()))
	placeholders := func(b []byte) []byte {
		for i, id := range realIDs {
			b = bytes.ReplaceAll(b, []byte(id), []byte(fuzzIDs[i]))
		}
		return bytes.ReplaceAll(b, enc.GetCiphertextBlob(), fuzzBlob)
	}
	seeds := []struct {
		sel byte
		m   proto.Message
	}{
		{0, &pb.EncryptRequest{KeyId: sym.GetKeyId(), Plaintext: []byte("x"), EncryptionContext: map[string]string{"k": "v"}}},
		{1, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: map[string]string{"a": "b"}}},
		{2, &pb.ReEncryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), DestinationKeyId: sym.GetAliasNames()[0]}},
		{3, &pb.GenerateDataKeyRequest{KeyId: sym.GetArn(), NumberOfBytes: 32}},
		{4, &pb.SignRequest{KeyId: ec.GetKeyId(), Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256}},
		{5, &pb.VerifyRequest{KeyId: ec.GetKeyId(), Message: []byte("m"), Signature: []byte{1}, SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256}},
		{6, &pb.GenerateMacRequest{KeyId: mac.GetKeyId(), Message: []byte("m"), MacAlgorithm: pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256}},
		{7, &pb.CreateKeyRequest{AliasName: "alias/fuzz", KeySpec: pb.KeySpec_KEY_SPEC_HMAC_256}},
		{8, &pb.ScheduleKeyDeletionRequest{KeyId: "alias/nope", PendingWindowDays: 7}},
		{9, &pb.ListKeysRequest{PageSize: 2, PageToken: "abc"}},
		{10, &pb.UpdateAliasRequest{AliasName: sym.GetAliasNames()[0], TargetKeyId: mac.GetKeyId()}},
		{11, &pb.GenerateDataKeyPairRequest{KeyId: sym.GetKeyId(), KeyPairSpec: pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_ECC_NIST_P256}},
		{12, &pb.TagKeyRequest{KeyId: sym.GetKeyId(), Tags: map[string]string{"a": "b"}}},
	}
	for _, s := range seeds {
		b, _ := proto.Marshal(s.m)
		f.Add(append([]byte{s.sel}, placeholders(b)...))
	}
	svc := e.svc
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		data = bytes.Clone(data)
		for i, id := range fuzzIDs {
			data = bytes.ReplaceAll(data, []byte(id), []byte(realIDs[i]))
		}
		data = bytes.ReplaceAll(data, fuzzBlob, enc.GetCiphertextBlob())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The core itself, past authorization: what it does with any
		// decoded request.
		ctx = broker.Internal(ctx, "fuzz")
		body := data[1:]
		var err error
		switch data[0] % 13 {
		case 0:
			r := &pb.EncryptRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.Encrypt(ctx, r)
			}
		case 1:
			r := &pb.DecryptRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.Decrypt(ctx, r)
			}
		case 2:
			r := &pb.ReEncryptRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.ReEncrypt(ctx, r)
			}
		case 3:
			r := &pb.GenerateDataKeyRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.GenerateDataKey(ctx, r)
			}
		case 4:
			r := &pb.SignRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.Sign(ctx, r)
			}
		case 5:
			r := &pb.VerifyRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.Verify(ctx, r)
			}
		case 6:
			r := &pb.GenerateMacRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.GenerateMac(ctx, r)
			}
		case 7:
			r := &pb.CreateKeyRequest{}
			// Only the fast specs: RSA generation would make fuzzing crawl.
			if proto.Unmarshal(body, r) == nil && (r.GetKeySpec() == 0 || r.GetKeySpec() >= pb.KeySpec_KEY_SPEC_ECC_NIST_P256) {
				_, err = broker.KeyServer(svc).CreateKey(ctx, r)
			}
		case 8:
			r := &pb.ScheduleKeyDeletionRequest{}
			if proto.Unmarshal(body, r) == nil && r.GetKeyId() != sym.GetKeyId() && r.GetKeyId() != ec.GetKeyId() && r.GetKeyId() != mac.GetKeyId() {
				_, err = svc.ScheduleKeyDeletion(ctx, r)
			}
		case 9:
			r := &pb.ListKeysRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.ListKeys(ctx, r)
			}
		case 10:
			r := &pb.UpdateAliasRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.UpdateAlias(ctx, r)
			}
		case 11:
			r := &pb.GenerateDataKeyPairRequest{}
			if proto.Unmarshal(body, r) == nil && r.GetKeyPairSpec() < pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_RSA_2048+3 && r.GetKeyPairSpec() != pb.DataKeyPairSpec_DATA_KEY_PAIR_SPEC_RSA_4096 {
				_, err = svc.GenerateDataKeyPair(ctx, r)
			}
		case 12:
			r := &pb.TagKeyRequest{}
			if proto.Unmarshal(body, r) == nil {
				_, err = svc.TagKey(ctx, r)
			}
		}
		if err != nil {
			if code, exc, msg := brokerClassify(err); exc == "KMSInternalException" {
				t.Fatalf("internal error (%s) for fuzzed request: %v", code, msg)
			}
		}
	})
}
