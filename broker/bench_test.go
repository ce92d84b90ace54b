package broker_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/broker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// The broker's overhead over the partition layer it wraps: the same
// operation on the same key and token, once through gRPC on loopback (the
// full service: interceptor, validation, state lookup, blob format) and
// once as the direct partition call the service makes, at 1 and 16
// concurrent clients. docs/BENCHMARKS.md reports the ratios.

type benchOp struct {
	name   string
	spec   pb.KeySpec
	usage  pb.KeyUsage
	grpc   func(ctx context.Context, e *env, keyID string, blob []byte) error
	direct func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, blob []byte) error
	blob   func(ctx context.Context, e *env, keyID string) []byte
}

var plaintext4K = make([]byte, 4096)

func benchOps() []benchOp {
	digest := sha256.Sum256([]byte("bench"))
	return []benchOp{
		{name: "Encrypt4K", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: plaintext4K})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				iv := make([]byte, hsm.GCMIVSize)
				_, _ = rand.Read(iv)
				_, err := p.EncryptGCM(ctx, ref, iv, plaintext4K, iv)
				return err
			}},
		{name: "Decrypt4K", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			blob: func(ctx context.Context, e *env, id string) []byte {
				r, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: plaintext4K})
				if err != nil {
					panic(err)
				}
				return r.GetCiphertextBlob()
			},
			grpc: func(ctx context.Context, e *env, _ string, blob []byte) error {
				_, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, blob []byte) error {
				c, err := keys.ParseCiphertext(blob)
				if err != nil {
					return err
				}
				h, _ := c.Header()
				_, err = p.DecryptGCM(ctx, ref, c.IV, c.Sealed, keys.AAD(h, nil))
				return err
			}},
		{name: "GenerateDataKey", spec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				dk, err := p.Random(ctx, 32)
				if err != nil {
					return err
				}
				iv := make([]byte, hsm.GCMIVSize)
				_, _ = rand.Read(iv)
				_, err = p.EncryptGCM(ctx, ref, iv, dk, iv)
				return err
			}},
		{name: "SignRSA2048", spec: pb.KeySpec_KEY_SPEC_RSA_2048, usage: pb.KeyUsage_KEY_USAGE_SIGN_VERIFY,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
					SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				_, err := p.SignDigest(ctx, ref, keys.SigningRSASSAPKCS1V15SHA256, digest[:])
				return err
			}},
		{name: "SignP256", spec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256,
			grpc: func(ctx context.Context, e *env, id string, _ []byte) error {
				_, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: id, Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
					SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
				return err
			},
			direct: func(ctx context.Context, p *hsm.Partition, ref hsm.KeyRef, _ []byte) error {
				_, err := p.SignDigest(ctx, ref, keys.SigningECDSASHA256, digest[:])
				return err
			}},
	}
}

// runClients runs op from n goroutines until b.N operations are done.
func runClients(b *testing.B, n int, op func() error) {
	b.Helper()
	var wg sync.WaitGroup
	next := make(chan struct{}, b.N)
	for i := 0; i < b.N; i++ {
		next <- struct{}{}
	}
	close(next)
	errs := make(chan error, n)
	b.ResetTimer()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := op(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func BenchmarkServiceVsPartition(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	for _, op := range benchOps() {
		md := e.createKey(op.spec, op.usage)
		k, ok := e.node.State().Key(md.GetKeyId())
		if !ok {
			b.Fatal("key not in state")
		}
		ref := hsm.KeyRef{ID: k.ID, Version: 1, Spec: k.Spec, Usage: k.Usage, Wrapped: k.Versions[0].Wrapped}
		var blob []byte
		if op.blob != nil {
			blob = op.blob(ctx, e, md.GetKeyId())
		}
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d/partition", op.name, clients), func(b *testing.B) {
				runClients(b, clients, func() error { return op.direct(ctx, e.part, ref, blob) })
			})
			b.Run(fmt.Sprintf("%s/clients=%d/grpc", op.name, clients), func(b *testing.B) {
				runClients(b, clients, func() error { return op.grpc(ctx, e, md.GetKeyId(), blob) })
			})
		}
	}
}
