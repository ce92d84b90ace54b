package awskms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// BenchmarkEncrypt measures what the AWS endpoint costs over the gRPC API
// for the same Encrypt on the same broker and key, in one run:
//
//   - GRPC: the gRPC CryptoService over loopback (no TLS).
//   - AWSJSON: aws-sdk-go-v2's KMS client over loopback HTTP (SigV4 signing,
//     the SDK's middleware stack, JSON, base64, signature verification).
//   - AWSJSONRawHTTP: a hand-signed net/http request, which leaves out
//     the SDK's client-side cost and so isolates the server's.
//
// The ratio of AWSJSON (or AWSJSONRawHTTP) to GRPC is the overhead.
func BenchmarkEncrypt(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	out, err := e.kms.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	keyID := aws.ToString(out.KeyMetadata.KeyId)
	plaintext := bytes.Repeat([]byte("p"), 256)
	g := e.grpcClient()

	b.Run("GRPC", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.Encrypt(ctx, &pb.EncryptRequest{KeyId: keyID, Plaintext: plaintext}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AWSJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: plaintext}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AWSJSONRawHTTP", func(b *testing.B) {
		b.ReportAllocs()
		body := []byte(`{"KeyId":"` + keyID + `","Plaintext":"` + base64.StdEncoding.EncodeToString(plaintext) + `"}`)
		sum := sha256.Sum256(body)
		hash := hex.EncodeToString(sum[:])
		signer := v4.NewSigner()
		creds := aws.Credentials{AccessKeyID: e.admin.ID, SecretAccessKey: e.admin.Secret}
		client := e.srv.Client()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/", bytes.NewReader(body))
			req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			if err := signer.SignHTTP(ctx, creds, req, hash, "kms", testRegion, time.Now()); err != nil {
				b.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("%d %s", resp.StatusCode, buf.Bytes())
			}
		}
	})
}
