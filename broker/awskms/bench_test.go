package awskms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
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
//   - grpc: the gRPC CryptoService over loopback (no TLS).
//   - awsjson: aws-sdk-go-v2's KMS client over loopback HTTP (SigV4 signing,
//     the SDK's middleware stack, JSON, base64, signature verification).
//   - rawhttp: a hand-signed net/http request, which leaves out the SDK's
//     client-side cost and so isolates the server's.
//
// Each iteration makes one call of each kind, the order rotating from one
// iteration to the next, so a busy machine weighs on all three alike; it
// reports each side's median (us/<side>) and the ratios to gRPC
// (<side>/grpc).
//
//	go test -run '^$' -bench Encrypt ./broker/awskms
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

	body := []byte(`{"KeyId":"` + keyID + `","Plaintext":"` + base64.StdEncoding.EncodeToString(plaintext) + `"}`)
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: e.admin.ID, SecretAccessKey: e.admin.Secret}
	client := e.srv.Client()
	sides := []struct {
		name string
		call func() error
	}{
		{"grpc", func() error {
			_, err := g.Encrypt(ctx, &pb.EncryptRequest{KeyId: keyID, Plaintext: plaintext})
			return err
		}},
		{"awsjson", func() error {
			_, err := e.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: plaintext})
			return err
		}},
		{"rawhttp", func() error {
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			if err := signer.SignHTTP(ctx, creds, req, hash, "kms", testRegion, time.Now()); err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%d %s", resp.StatusCode, buf.Bytes())
			}
			return nil
		}},
	}
	times := make([][]time.Duration, len(sides))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range sides {
			k := (i + j) % len(sides)
			t0 := time.Now()
			if err := sides[k].call(); err != nil {
				b.Fatalf("%s: %v", sides[k].name, err)
			}
			times[k] = append(times[k], time.Since(t0))
		}
	}
	b.StopTimer()
	medians := make([]time.Duration, len(sides))
	for k, ts := range times {
		slices.Sort(ts)
		medians[k] = ts[len(ts)/2]
		b.ReportMetric(float64(medians[k].Nanoseconds())/1e3, "us/"+sides[k].name)
	}
	for k := 1; k < len(sides); k++ {
		b.ReportMetric(float64(medians[k])/float64(medians[0]), sides[k].name+"/grpc")
	}
}
