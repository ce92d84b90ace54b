package awskms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var sigTestKey = AccessKey{ID: "AKIAIOSFODNN7EXAMPLE", Secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", Principal: "alice"}

func testVerifier(now time.Time) *verifier {
	return &verifier{creds: NewStaticCredentials(map[string]AccessKey{sigTestKey.ID: sigTestKey}), service: "kms",
		region: "us-east-1", maxSkew: 5 * time.Minute, now: func() time.Time { return now }}
}

// signed returns a KMS request signed by the AWS SDK's signer.
func signed(t testing.TB, body string, at time.Time, key AccessKey, service, region string, contentHeader bool) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7480/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	sum := sha256.Sum256([]byte(body))
	hash := hex.EncodeToString(sum[:])
	if contentHeader {
		r.Header.Set("X-Amz-Content-Sha256", hash)
	}
	creds := aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hash, service, region, at); err != nil {
		t.Fatal(err)
	}
	return r
}

func readAll(t testing.TB, r *http.Request) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r.Body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSigV4AWSExample checks the verifier against the worked example of
// AWS's Signature Version 4 documentation (IAM ListUsers, 2015-08-30),
// whose signature is published, independently of any SDK.
func TestSigV4AWSExample(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	r.Header.Set("X-Amz-Date", "20150830T123600Z")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "+
		"SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
	v := &verifier{creds: NewStaticCredentials(map[string]AccessKey{"AKIDEXAMPLE": {Secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Principal: "example"}}),
		service: "iam", region: "us-east-1", maxSkew: 5 * time.Minute,
		now: func() time.Time { return time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC) }}
	if p, err := v.verify(r, nil); err != nil || p != "example" {
		t.Fatalf("AWS's example: principal %q, %v", p, err)
	}
}

func TestSigV4(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	const body = `{"Limit":10}`
	tests := []struct {
		name    string
		req     func() *http.Request
		wantExc string
		mention string
	}{
		{"valid", func() *http.Request { return signed(t, body, now, sigTestKey, "kms", "us-east-1", true) }, "", ""},
		{"valid without content hash header", func() *http.Request { return signed(t, body, now, sigTestKey, "kms", "us-east-1", false) }, "", ""},
		{"valid within skew", func() *http.Request {
			return signed(t, body, now.Add(-4*time.Minute), sigTestKey, "kms", "us-east-1", true)
		}, "", ""},
		{"wrong secret", func() *http.Request {
			k := sigTestKey
			k.Secret += "x"
			return signed(t, body, now, k, "kms", "us-east-1", true)
		}, excInvalidSignature, "signature we calculated"},
		{"unknown access key", func() *http.Request {
			k := sigTestKey
			k.ID = "AKIAUNKNOWN000000000"
			return signed(t, body, now, k, "kms", "us-east-1", true)
		}, excUnrecognizedClient, "security token"},
		{"replayed after the skew", func() *http.Request {
			return signed(t, body, now.Add(-6*time.Minute), sigTestKey, "kms", "us-east-1", true)
		},
			excInvalidSignature, "Signature expired"},
		{"from the future", func() *http.Request {
			return signed(t, body, now.Add(6*time.Minute), sigTestKey, "kms", "us-east-1", true)
		},
			excInvalidSignature, "not yet current"},
		{"other region", func() *http.Request { return signed(t, body, now, sigTestKey, "kms", "eu-west-1", true) }, excInvalidSignature, "region"},
		{"other service", func() *http.Request { return signed(t, body, now, sigTestKey, "s3", "us-east-1", true) }, excInvalidSignature, "'kms'"},
		{"tampered body with content hash", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Body = httptestBody(`{"Limit":11}`)
			return r
		}, excInvalidSignature, "x-amz-content-sha256"},
		{"tampered body without content hash", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", false)
			r.Body = httptestBody(`{"Limit":11}`)
			return r
		}, excInvalidSignature, "signature we calculated"},
		{"tampered body and content hash", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Body = httptestBody(`{"Limit":11}`)
			sum := sha256.Sum256([]byte(`{"Limit":11}`))
			r.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
			return r
		}, excInvalidSignature, "signature we calculated"},
		{"unsigned payload", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", false)
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			return r
		}, excInvalidSignature, "x-amz-content-sha256"},
		{"tampered target", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Set("X-Amz-Target", "TrentService.ScheduleKeyDeletion")
			return r
		}, excInvalidSignature, "signature we calculated"},
		{"tampered date", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Set("X-Amz-Date", now.Add(time.Second).Format(amzDateFormat))
			return r
		}, excInvalidSignature, "signature we calculated"},
		{"other host", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Host = "127.0.0.1:7481"
			return r
		}, excInvalidSignature, "signature we calculated"},
		{"session token", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Set("X-Amz-Security-Token", "token")
			return r
		}, excUnrecognizedClient, "session tokens"},
		{"missing Authorization", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Del("Authorization")
			return r
		}, excMissingAuthToken, ""},
		{"presigned query", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7480/?X-Amz-Algorithm=AWS4-HMAC-SHA256", strings.NewReader(body))
			return r
		}, excIncompleteSignature, "presigned"},
		{"two Authorization headers", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
			return r
		}, excIncompleteSignature, "more than one"},
		{"no date", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Del("X-Amz-Date")
			return r
		}, excIncompleteSignature, "X-Amz-Date"},
		{"scope date differs", func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			d := now.Format(scopeDateFormat)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/"+d+"/", "/20200101/", 1))
			return r
		}, excInvalidSignature, "Date in Credential scope"},
	}
	garbled := []struct{ name, header, mention string }{
		{"other algorithm", "AWS4-HMAC-SHA512 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00", "AWS4-HMAC-SHA256"},
		{"basic auth", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "AWS4-HMAC-SHA256"},
		{"empty", "AWS4-HMAC-SHA256", "key=value"},
		{"no credential", "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + strings.Repeat("0", 64), "Credential"},
		{"no signature", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=host", "Signature"},
		{"short credential", "AWS4-HMAC-SHA256 Credential=a/20200101/kms/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64), "Credential"},
		{"bad terminator", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws5_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64), "aws4_request"},
		{"bad date", "AWS4-HMAC-SHA256 Credential=a/2020-1-1/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64), "YYYYMMDD"},
		{"host not signed", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date, Signature=" + strings.Repeat("0", 64), "Host"},
		{"unsorted headers", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date;host, Signature=" + strings.Repeat("0", 64), "sorted"},
		{"upper-case header", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=Host, Signature=" + strings.Repeat("0", 64), "lower-case"},
		{"short signature", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=abc", "hex"},
		{"duplicate component", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, Credential=b/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64), "twice"},
		{"unknown component", "AWS4-HMAC-SHA256 Credential=a/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64) + ", Extra=1", "unknown"},
		{"huge", "AWS4-HMAC-SHA256 " + strings.Repeat("x", 10000), "longer"},
	}
	for _, g := range garbled {
		tests = append(tests, struct {
			name    string
			req     func() *http.Request
			wantExc string
			mention string
		}{"garbled " + g.name, func() *http.Request {
			r := signed(t, body, now, sigTestKey, "kms", "us-east-1", true)
			r.Header.Set("Authorization", g.header)
			return r
		}, excIncompleteSignature, g.mention})
	}
	v := testVerifier(now)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req()
			p, err := v.verify(r, readAll(t, r))
			if tt.wantExc == "" {
				if err != nil || p != "alice" {
					t.Fatalf("principal %q, %v", p, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %q, want %s", p, tt.wantExc)
			}
			if err.exception != tt.wantExc || !strings.Contains(err.message, tt.mention) {
				t.Fatalf("got %s, want %s mentioning %q", err, tt.wantExc, tt.mention)
			}
		})
	}
}

func httptestBody(s string) *readCloser { return &readCloser{strings.NewReader(s)} }

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// FuzzVerifySigV4 feeds arbitrary Authorization headers, dates, paths,
// queries and bodies to the verifier. It must never panic, and must accept
// a request only for the one key it knows.
func FuzzVerifySigV4(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := signed(f, `{}`, now, sigTestKey, "kms", "us-east-1", true)
	f.Add(good.Header.Get("Authorization"), good.Header.Get("X-Amz-Date"), "/", "", []byte(`{}`))
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260102/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature="+strings.Repeat("a", 64),
		"20260102T030405Z", "/a%2Fb/../c", "b=2&a=1&a=0", []byte("x"))
	f.Add("AWS4-HMAC-SHA256 Credential=//////, SignedHeaders=;;, Signature==", "", "//", "%zz", []byte(nil))
	f.Add("AWS4-HMAC-SHA256 ,,,,", "99999999T999999Z", "", "&&==", []byte("{"))
	v := testVerifier(now)
	f.Fuzz(func(t *testing.T, auth, date, path, query string, body []byte) {
		r := good.Clone(context.Background())
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", date)
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = path, "", query
		p, err := v.verify(r, body)
		if err == nil && p != "alice" {
			t.Fatalf("accepted with principal %q", p)
		}
		if err != nil && err.exception == "" {
			t.Fatalf("error without an exception name: %v", err)
		}
		_, _ = parseAuthorization(auth)
	})
}

// swappableCreds is one access key whose secret a test changes.
type swappableCreds struct {
	mu     sync.Mutex
	secret string
}

func (c *swappableCreds) Lookup(id string) (string, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.secret, "alice", id == sigTestKey.ID
}

// The verifier keeps derived signing keys and keyed HMAC states, but a
// changed secret takes effect on the next request, and requests verified
// side by side each get their own HMAC state.
func TestSigV4SigningKeyCache(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	creds := &swappableCreds{secret: sigTestKey.Secret}
	v := testVerifier(now)
	v.creds = creds
	verify := func(key AccessKey, body string) *authError {
		r := signed(t, body, now, key, "kms", "us-east-1", true)
		_, aerr := v.verify(r, readAll(t, r))
		return aerr
	}
	if aerr := verify(sigTestKey, `{"n":1}`); aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := verify(sigTestKey, `{"n":2}`); aerr != nil {
		t.Fatalf("second request, cached key: %v", aerr)
	}
	rotated := sigTestKey
	rotated.Secret = "a different secret of the same access key"
	creds.mu.Lock()
	creds.secret = rotated.Secret
	creds.mu.Unlock()
	if aerr := verify(sigTestKey, `{"n":3}`); aerr == nil || aerr.exception != excInvalidSignature {
		t.Fatalf("request signed with the old secret after the change: %v, want %s", aerr, excInvalidSignature)
	}
	if aerr := verify(rotated, `{"n":4}`); aerr != nil {
		t.Fatalf("request signed with the new secret: %v", aerr)
	}

	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				good := signed(t, fmt.Sprintf(`{"g":%d,"i":%d}`, g, i), now, rotated, "kms", "us-east-1", true)
				bad := signed(t, fmt.Sprintf(`{"g":%d,"i":%d}`, g, i), now, sigTestKey, "kms", "us-east-1", true)
				if _, aerr := v.verify(good, readAll(t, good)); aerr != nil {
					errs <- "good request refused: " + aerr.Error()
					return
				}
				if _, aerr := v.verify(bad, readAll(t, bad)); aerr == nil {
					errs <- "request with the old secret accepted"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// BenchmarkVerifySigV4 is the server's cost to verify one SDK-signed KMS
// request, the body already read:
//
//	go test -run '^$' -bench VerifySigV4 -benchmem ./broker/awskms
func BenchmarkVerifySigV4(b *testing.B) {
	at := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	v := testVerifier(at)
	body := `{"KeyId":"alias/bench","KeySpec":"AES_256"}`
	r := signed(b, body, at, sigTestKey, "kms", "us-east-1", true)
	raw := readAll(b, r)
	b.ReportAllocs()
	for b.Loop() {
		if _, aerr := v.verify(r, raw); aerr != nil {
			b.Fatal(aerr)
		}
	}
}
