package awskms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
)

// Regression tests for the holes attack testing found in the AWS endpoint
// (issue 11, items 1 and 7). Every request here is hand-made and signed
// with SigV4, and goes through the real HTTP handler.

// auditLine is the audit record of the request whose answer carried reqID.
func (a *accessEnv) auditLine(tb testing.TB, reqID string) audit.Record {
	tb.Helper()
	// Newest first: the line sought is near the end, and a fuzz target
	// that reads every line of a growing log on each input slows to a
	// crawl.
	lines := bytes.Split(bytes.TrimSpace(a.w.bytes()), []byte("\n"))
	id := []byte(reqID)
	for i := len(lines) - 1; i >= 0; i-- {
		if !bytes.Contains(lines[i], id) {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal(lines[i], &r); err != nil {
			tb.Fatalf("audit line %q: %v", lines[i], err)
		}
		if r.RequestID == reqID {
			return r
		}
	}
	tb.Fatalf("no audit line for request %s", reqID)
	return audit.Record{}
}

// asRaw posts a literal body as key.
func (a *accessEnv) asRaw(tb testing.TB, key awskms.AccessKey, op, body string) rawResponse {
	tb.Helper()
	return a.doWith(tb, signedRequest{target: "TrentService." + op, body: []byte(body), key: key})
}

// ambiguousBodies are bodies whose EncryptionContext a strict reader and
// encoding/json read differently: one spelled exactly as AWS spells it,
// another differing only in letter case or repeating it. {{CT}} is the
// ciphertext.
var ambiguousBodies = []struct{ name, body, member string }{
	{"case variant after", `{"CiphertextBlob":"{{CT}}","EncryptionContext":{"tenant":"acme"},"encryptionContext":{"tenant":"evil"}}`, "encryptionContext"},
	{"case variant before", `{"CiphertextBlob":"{{CT}}","ENCRYPTIONCONTEXT":{"tenant":"evil"},"EncryptionContext":{"tenant":"acme"}}`, "ENCRYPTIONCONTEXT"},
	{"escaped case variant", `{"CiphertextBlob":"{{CT}}","EncryptionContext":{"tenant":"acme"},"\u0065ncryptionContext":{"tenant":"evil"}}`, "encryptionContext"},
	{"repeated", `{"CiphertextBlob":"{{CT}}","EncryptionContext":{"tenant":"acme"},"EncryptionContext":{"tenant":"evil"}}`, "EncryptionContext"},
	{"repeated context key", `{"CiphertextBlob":"{{CT}}","EncryptionContext":{"tenant":"acme","tenant":"evil"}}`, "tenant"},
	{"case variant only", `{"CiphertextBlob":"{{CT}}","encryptionContext":{"tenant":"evil"}}`, "encryptionContext"},
}

// TestEncryptionContextOneReading: a principal whose grant requires
// tenant=acme, and a key policy that denies tenant=evil, cannot get
// tenant=evil's plaintext by giving the context twice; the request is
// refused with SerializationException naming the member, and the audit
// line of an allowed request records the context the operation used.
func TestEncryptionContextOneReading(t *testing.T) {
	a := newAccessEnv(t)
	ctx := ctxT(t)
	key := createKey(t, a.kms, "", "")
	acme, evil := map[string]string{"tenant": "acme"}, map[string]string{"tenant": "evil"}
	if _, err := a.kms.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("app"),
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: acme}}); err != nil {
		t.Fatal(err)
	}
	evilCT, err := a.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("evil's secret"), EncryptionContext: evil})
	if err != nil {
		t.Fatal(err)
	}
	ct := base64.StdEncoding.EncodeToString(evilCT.CiphertextBlob)

	refusedAll := func(stage string) {
		t.Helper()
		for _, b := range ambiguousBodies {
			r := a.asRaw(t, a.app, "Decrypt", strings.ReplaceAll(b.body, "{{CT}}", ct))
			if r.status == http.StatusOK || bytes.Contains(r.body, []byte("Plaintext")) {
				t.Fatalf("%s, %s: app decrypted tenant=evil's ciphertext: %d %s", stage, b.name, r.status, r.body)
			}
			if r.status != http.StatusBadRequest || r.errorType() != "SerializationException" || !bytes.Contains(r.body, []byte(b.member)) {
				t.Errorf("%s, %s: %d %s; want 400 SerializationException naming %s", stage, b.name, r.status, r.body, b.member)
			}
			if l := a.auditLine(t, r.header.Get("x-amzn-RequestId")); l.Result != "SerializationException" || l.Principal != "app" {
				t.Errorf("%s, %s: audit line %+v", stage, b.name, l)
			}
		}
	}
	refusedAll("grant requires tenant=acme")

	// The grant's own context works, and the audit line has it.
	acmeCT, err := a.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("acme's secret"), EncryptionContext: acme})
	if err != nil {
		t.Fatal(err)
	}
	r := a.asRaw(t, a.app, "Decrypt", `{"CiphertextBlob":"`+base64.StdEncoding.EncodeToString(acmeCT.CiphertextBlob)+`","EncryptionContext":{"tenant":"acme"}}`)
	if r.status != http.StatusOK {
		t.Fatalf("decrypt under the grant: %d %s", r.status, r.body)
	}
	if l := a.auditLine(t, r.header.Get("x-amzn-RequestId")); l.Result != "OK" || l.EncryptionContext["tenant"] != "acme" || len(l.EncryptionContext) != 1 {
		t.Errorf("audit line of the allowed decrypt: %+v", l)
	}

	// A key policy that allows app everything but denies tenant=evil.
	policy := `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/app"},"Action":["kms:Decrypt","kms:Encrypt","kms:DescribeKey"]},
	  {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/app"},"Action":"kms:Decrypt","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"evil"}}}]}`
	if _, err := a.kms.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	refusedAll("policy denies tenant=evil")
	r = a.asRaw(t, a.app, "Decrypt", `{"CiphertextBlob":"`+ct+`","EncryptionContext":{"tenant":"evil"}}`)
	if r.status == http.StatusOK || r.errorType() != "AccessDeniedException" {
		t.Fatalf("decrypt of tenant=evil against the Deny: %d %s", r.status, r.body)
	}
	if l := a.auditLine(t, r.header.Get("x-amzn-RequestId")); l.Decision != "deny" || l.EncryptionContext["tenant"] != "evil" {
		t.Errorf("audit line of the denied decrypt: %+v", l)
	}

	// A member the operation does not have is not read by the check
	// either: DescribeKey has no EncryptionContext, so a policy condition
	// on one cannot be met by sending one.
	policy = `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/app"},"Action":"kms:DescribeKey","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"acme"}}}]}`
	if _, err := a.kms.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	r = a.asRaw(t, a.app, "DescribeKey", `{"KeyId":"`+key+`","EncryptionContext":{"tenant":"acme"}}`)
	if r.status == http.StatusOK || r.errorType() != "AccessDeniedException" {
		t.Fatalf("DescribeKey with a context it does not take: %d %s", r.status, r.body)
	}

	// Grant constraints are read once too.
	r = a.asRaw(t, a.admin, "CreateGrant", `{"KeyId":"`+key+`","GranteePrincipal":"app","Operations":["Decrypt"],`+
		`"Constraints":{"EncryptionContextSubset":{"tenant":"acme"},"encryptionContextSubset":{}}}`)
	if r.status != http.StatusBadRequest || r.errorType() != "SerializationException" || !bytes.Contains(r.body, []byte("encryptionContextSubset")) {
		t.Fatalf("CreateGrant with two constraint spellings: %d %s", r.status, r.body)
	}
}

// TestTargetMustBeSigned: a DescribeKey request signed without
// x-amz-target among its signed headers, replayed as DisableKey, is refused
// and the key stays enabled.
func TestTargetMustBeSigned(t *testing.T) {
	e := newEnv(t)
	key := createKey(t, e.kms, "", "")
	body := []byte(`{"KeyId":"` + key + `"}`)
	r := e.do(signedRequest{body: body, key: e.admin, tamper: func(r *http.Request) {
		r.Header.Set("X-Amz-Target", "TrentService.DisableKey")
	}})
	if r.status == http.StatusOK || r.errorType() != "IncompleteSignatureException" || !bytes.Contains(r.body, []byte("X-Amz-Target")) {
		t.Errorf("unsigned X-Amz-Target: %d %s; want IncompleteSignatureException", r.status, r.body)
	}
	d, err := e.kms.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(key)})
	if err != nil || !d.KeyMetadata.Enabled {
		t.Fatalf("key after the replay: %+v %v", d, err)
	}
	// Two X-Amz-Target headers name no one operation.
	two := e.do(signedRequest{body: body, key: e.admin, tamper: func(r *http.Request) {
		r.Header.Add("X-Amz-Target", "TrentService.DescribeKey")
		r.Header.Add("X-Amz-Target", "TrentService.DisableKey")
	}})
	if two.status == http.StatusOK || two.errorType() != "UnknownOperationException" {
		t.Errorf("two targets: %d %s", two.status, two.body)
	}
	// The date must be signed as well.
	r = e.do(signedRequest{target: "TrentService.DescribeKey", body: body, key: e.admin, tamper: func(r *http.Request) {
		auth := r.Header.Get("Authorization")
		r.Header.Set("Authorization", strings.Replace(auth, ";x-amz-date", "", 1))
	}})
	if r.status == http.StatusOK || r.errorType() != "IncompleteSignatureException" || !bytes.Contains(r.body, []byte("X-Amz-Date")) {
		t.Errorf("unsigned X-Amz-Date: %d %s; want IncompleteSignatureException", r.status, r.body)
	}
}

// TestContentType: the SDKs' media type, with or without parameters, and
// the other JSON types AWS accepts are served; any other is refused
// SerializationException, however it is spelled.
func TestContentType(t *testing.T) {
	e := newEnv(t)
	key := createKey(t, e.kms, "", "")
	body := []byte(`{"KeyId":"` + key + `"}`)
	for _, tc := range []struct {
		ct string
		ok bool
	}{
		{"application/x-amz-json-1.1", true},
		{"application/x-amz-json-1.1; charset=utf-8", true},
		{"Application/X-Amz-Json-1.1", true},
		{"application/x-amz-json-1.0", true},
		{"application/json", true},
		{"text/plain", false},
		{"application/x-amz-json-1.1x", false},
	} {
		r := e.do(signedRequest{target: "TrentService.DescribeKey", body: body, key: e.admin, header: map[string]string{"Content-Type": tc.ct}})
		switch {
		case tc.ok && r.status != http.StatusOK:
			t.Errorf("Content-Type %q: %d %s, want 200", tc.ct, r.status, r.body)
		case !tc.ok && (r.status != http.StatusBadRequest || r.errorType() != "SerializationException" || !bytes.Contains(r.body, []byte("Content-Type"))):
			t.Errorf("Content-Type %q: %d %s, want 400 SerializationException naming Content-Type", tc.ct, r.status, r.body)
		}
	}
}

// FuzzEncryptionContextOneReading sends Encrypt and Decrypt requests whose
// members around EncryptionContext are fuzzed (repeated, case-varied,
// escaped) as the user app, whose grant requires tenant=acme. Whatever the
// body, a request that succeeds was authorized and audited with the
// context the operation used: the audited context holds tenant=acme, and
// it (and only it) decrypts what Encrypt returned. Decrypt of a ciphertext
// bound to tenant=evil never succeeds.
func FuzzEncryptionContextOneReading(f *testing.F) {
	a := newAccessEnv(f)
	ctx := ctxT(f)
	key := createKey(f, a.kms, "", "")
	if _, err := a.kms.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String("app"),
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"tenant": "acme"}}}); err != nil {
		f.Fatal(err)
	}
	evilCT, err := a.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("evil's secret"),
		EncryptionContext: map[string]string{"tenant": "evil"}})
	if err != nil {
		f.Fatal(err)
	}
	prefix := `{"KeyId":"` + key + `","Plaintext":"aGk=","CiphertextBlob":"` + base64.StdEncoding.EncodeToString(evilCT.CiphertextBlob) + `"`
	for _, b := range ambiguousBodies {
		_, rest, _ := strings.Cut(b.body, `"{{CT}}"`)
		f.Add([]byte(strings.TrimSuffix(rest, "}")))
	}
	for _, s := range []string{
		`,"EncryptionContext":{"tenant":"acme"}`,
		`,"EncryptionContext":{"tenant":"evil"}`,
		`,"EncryptionContext":{"tenant":"acme"},"EncryptionContext":null`,
		`,"EncryptionContext":{"tenant":"acme","TENANT":"evil"}`,
		`,"EncryptionContext":{"tenant":"acme"},"SourceEncryptionContext":{"tenant":"evil"}`,
		`,"EncryptionContext":{"tenant":"evil"},"GrantTokens":["x"],"encryptioncontext":{"tenant":"acme"}`,
		`,"Encryption\u212Aontext":{"tenant":"evil"},"EncryptionContext":{"tenant":"acme"}`,
		`,"EncryptionContext":{"tenant":"acme"},"KeyId":"alias/other"`,
		`,"EncryptionContext":{"tenant":"acme"},"keyId":"alias/other"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, members []byte) {
		body := prefix + string(members) + "}"
		enc := a.asRaw(t, a.app, "Encrypt", body)
		if enc.status == http.StatusOK {
			var out struct{ CiphertextBlob []byte }
			if err := json.Unmarshal(enc.body, &out); err != nil {
				t.Fatalf("Encrypt answer %s: %v", enc.body, err)
			}
			l := a.auditLine(t, enc.header.Get("x-amzn-RequestId"))
			if l.EncryptionContext["tenant"] != "acme" {
				t.Fatalf("Encrypt of %s allowed with audited context %v, outside the grant", body, l.EncryptionContext)
			}
			// The ciphertext is bound to the context the operation used:
			// the audited one must open it.
			// A context of this input's own: the target's would end two
			// minutes after setup, which a slow run outlasts.
			if _, err := a.kms.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: l.EncryptionContext}); err != nil {
				t.Fatalf("Encrypt of %s: the audited context %v is not the one the ciphertext is bound to: %v", body, l.EncryptionContext, err)
			}
		} else if bytes.Contains(enc.body, []byte("CiphertextBlob")) {
			t.Fatalf("refused Encrypt returned a ciphertext: %s", enc.body)
		}
		dec := a.asRaw(t, a.app, "Decrypt", body)
		if dec.status == http.StatusOK || bytes.Contains(dec.body, []byte("Plaintext")) {
			l := a.auditLine(t, dec.header.Get("x-amzn-RequestId"))
			t.Fatalf("Decrypt of %s gave tenant=evil's plaintext; audited context %v: %s", body, l.EncryptionContext, dec.body)
		}
	})
}

// TestXKSOneReading: an XKS body that could be read two ways (a member
// repeated or in another letter case) is refused before anything is done.
func TestXKSOneReading(t *testing.T) {
	e := newEnv(t)
	key := createKey(t, e.kms, "", "")
	md, _ := json.Marshal(reqMeta("Encrypt"))
	for _, body := range []string{
		`{"requestMetadata":` + string(md) + `,"plaintext":"aGk=","encryptionAlgorithm":"AES_GCM","additionalAuthenticatedData":"YQ==","AdditionalAuthenticatedData":"Yg=="}`,
		`{"requestMetadata":` + string(md) + `,"plaintext":"aGk=","encryptionAlgorithm":"AES_GCM","plaintext":"aGk="}`,
		`{"requestMetadata":` + string(md) + `,"RequestMetadata":` + string(md) + `,"plaintext":"aGk=","encryptionAlgorithm":"AES_GCM"}`,
		`{"requestMetadata":{"awsPrincipalArn":"a","AwsPrincipalArn":"b","kmsOperation":"Encrypt","kmsRequestId":"1","kmsKeyArn":"k"},"plaintext":"aGk=","encryptionAlgorithm":"AES_GCM"}`,
	} {
		r := e.doWith(t, signedRequest{path: xksPrefix + "/kms/xks/v1/keys/" + key + "/encrypt", body: []byte(body), key: e.xksKey, service: "kms-xks-proxy"})
		if r.status != http.StatusBadRequest || r.errorType() != "ValidationException" || !bytes.Contains(r.body, []byte("member")) {
			t.Errorf("%s: %d %s; want ValidationException naming the member", body, r.status, r.body)
		}
	}
	ok := e.xksCall(t, "/keys/"+key+"/encrypt", map[string]any{"requestMetadata": reqMeta("Encrypt"), "plaintext": "aGk=", "encryptionAlgorithm": "AES_GCM"})
	if ok.status != http.StatusOK {
		t.Fatalf("a well-formed XKS Encrypt: %d %s", ok.status, ok.body)
	}
}

// TestAuthenticationFailuresAuditedAsDenials: a request that proves no
// identity is a refusal, and its audit line says so ("deny", with the
// check that failed), so that filtering the log for denials finds forged
// and unsigned requests too. A signature made with a known access key
// names that key's principal in the reason, not as the line's principal.
func TestAuthenticationFailuresAuditedAsDenials(t *testing.T) {
	a := newAccessEnv(t)
	body := []byte(`{}`)
	wrongSecret := a.app
	wrongSecret.Secret = strings.Repeat("x", len(a.app.Secret))
	unknown := a.app
	unknown.ID = "AKIA" + strings.Repeat("Z", 16)
	for _, c := range []struct {
		name, exception, reason string
		sr                      signedRequest
	}{
		{"unsigned", "MissingAuthenticationTokenException", "unauthenticated: MissingAuthenticationTokenException",
			signedRequest{target: "TrentService.ListKeys", body: body, key: a.app, tamper: func(r *http.Request) { r.Header.Del("Authorization") }}},
		{"wrong secret", "InvalidSignatureException", "unauthenticated: InvalidSignatureException with the access key of app",
			signedRequest{target: "TrentService.ListKeys", body: body, key: wrongSecret}},
		{"unknown access key", "UnrecognizedClientException", "unauthenticated: UnrecognizedClientException",
			signedRequest{target: "TrentService.ListKeys", body: body, key: unknown}},
		{"XKS wrong secret", "", "unauthenticated: InvalidSignatureException with the access key of aws-kms",
			signedRequest{path: xksPrefix + "/kms/xks/v1/health", body: []byte(`{"requestMetadata":{"awsPrincipalArn":"x","kmsOperation":"CreateKey","kmsRequestId":"r"}}`),
				key: awskms.AccessKey{ID: a.xksKey.ID, Secret: strings.Repeat("y", len(a.xksKey.Secret))}, service: "kms-xks-proxy"}},
		// Refused before the signature is looked at: still no identity.
		{"wrong path", "UnknownOperationException", "unauthenticated: UnknownOperationException before any identity was proved",
			signedRequest{path: "/other", target: "TrentService.ListKeys", body: body, key: a.app}},
		{"GET", "UnknownOperationException", "unauthenticated: UnknownOperationException before any identity was proved",
			signedRequest{target: "TrentService.ListKeys", body: body, key: a.app, tamper: func(r *http.Request) { r.Method = http.MethodGet }}},
		{"no target", "UnknownOperationException", "unauthenticated: UnknownOperationException before any identity was proved",
			signedRequest{body: body, key: a.app, header: map[string]string{"Content-Type": "application/x-amz-json-1.1"}}},
		{"XKS unknown path", "InvalidUriPathException", "unauthenticated: InvalidUriPathException before any identity was proved",
			signedRequest{path: xksPrefix + "/kms/xks/v1/keys", body: body, key: a.xksKey, service: "kms-xks-proxy"}},
		{"XKS under another prefix", "InvalidUriPathException", "unauthenticated: InvalidUriPathException before any identity was proved",
			signedRequest{path: "/elsewhere/kms/xks/v1/health", body: body, key: a.xksKey, service: "kms-xks-proxy"}},
		{"XKS GET", "ValidationException", "unauthenticated: ValidationException before any identity was proved",
			signedRequest{path: xksPrefix + "/kms/xks/v1/health", body: body, key: a.xksKey, service: "kms-xks-proxy",
				tamper: func(r *http.Request) { r.Method = http.MethodGet }}},
	} {
		r := a.do(c.sr)
		if r.status == http.StatusOK || (c.exception != "" && r.errorType() != c.exception) {
			t.Errorf("%s: %d %s, want %s", c.name, r.status, r.body, c.exception)
			continue
		}
		l := a.auditLine(t, r.header.Get("x-amzn-RequestId"))
		if l.Decision != "deny" || l.Reason != c.reason || l.Principal != "" {
			t.Errorf("%s: audit line decision %q, reason %q, principal %q; want deny, %q, no principal", c.name, l.Decision, l.Reason, l.Principal, c.reason)
		}
	}
}

// TestClientGoneIsNotAnOutage: a client that closes its connection while
// its request is in the HSM (an RSA-4096 key being generated) is recorded
// as ClientClosedRequest (499), not as the DependencyTimeoutException
// (503) that would page an operator for an HSM or cluster outage.
func TestClientGoneIsNotAnOutage(t *testing.T) {
	a := newAccessEnv(t)
	createLines := func() []audit.Record {
		var out []audit.Record
		for _, line := range bytes.Split(bytes.TrimSpace(a.w.bytes()), []byte("\n")) {
			var r audit.Record
			if json.Unmarshal(line, &r) == nil && r.Operation == "kms:CreateKey" && r.Result != audit.ResultIntent {
				out = append(out, r)
			}
		}
		return out
	}
	closed := 0
	for attempt := 0; attempt < 5 && closed == 0; attempt++ {
		before := len(createLines())
		ctx, cancel := context.WithTimeout(ctxT(t), 30*time.Millisecond)
		_, err := a.kms.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa4096, KeyUsage: types.KeyUsageTypeSignVerify})
		cancel()
		var lines []audit.Record
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if lines = createLines(); len(lines) > before || time.Now().After(deadline) {
				break
			}
		}
		if len(lines) <= before {
			t.Fatalf("attempt %d (client error %v): no audit line for the CreateKey", attempt, err)
		}
		switch l := lines[len(lines)-1]; {
		case l.Result == "ClientClosedRequest" && l.Code == "499":
			closed++
		case l.Result == "OK" && err == nil:
			// The key was made before the client gave up; try again.
		default:
			t.Fatalf("attempt %d: audit line result %q code %q (client error %v); want ClientClosedRequest 499", attempt, l.Result, l.Code, err)
		}
	}
	if closed == 0 {
		t.Fatal("every RSA-4096 key was made within 30 ms; the client never left first")
	}
}

// With Config.Hosts set, a request signed for another Host (captured on
// its way to another service that shares the access key) is refused, on
// TrentService and on the XKS proxy API alike; one signed for a listed
// name is served, whatever its letter case or port.
func TestSignedHostMustBeThisEndpoint(t *testing.T) {
	e := newEnv(t, func(c *awskms.Config) { c.Hosts = []string{"kms.example.internal", "LocalHost"} })
	ctx := ctxT(t)
	// The SDK signs the Host it connects to: 127.0.0.1:PORT is not listed.
	_, err := e.kms.ListKeys(ctx, &kms.ListKeysInput{})
	wantAWSError(t, err, "InvalidSignatureException", "signed for host '127.0.0.1:", "not a name of this endpoint")
	_, port, _ := strings.Cut(strings.TrimPrefix(e.srv.URL, "http://"), ":")
	local := kms.NewFromConfig(aws.Config{Region: testRegion, HTTPClient: e.srv.Client(),
		Credentials: e.kms.Options().Credentials, Retryer: func() aws.Retryer { return aws.NopRetryer{} }},
		func(o *kms.Options) { o.BaseEndpoint = aws.String("http://localhost:" + port) })
	if _, err := local.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("ListKeys signed for localhost, listed as LocalHost: %v", err)
	}
	for host, ok := range map[string]bool{"kms.example.internal:443": true, "KMS.Example.Internal.": true, "kms.example.internal.evil:443": false, "kms2.example.internal": false} {
		r := e.do(signedRequest{target: "TrentService.ListKeys", body: []byte("{}"), key: e.admin, host: host})
		if ok != (r.status == http.StatusOK) || !ok && r.errorType() != "InvalidSignatureException" {
			t.Errorf("ListKeys signed for Host %s: %d %s", host, r.status, r.body)
		}
	}
	health := map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}}
	if r := e.xksCall(t, "/health", health); r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "AuthenticationFailedException") ||
		!strings.Contains(string(r.body), "not a name of this endpoint") {
		t.Errorf("XKS health signed for 127.0.0.1: %d %s", r.status, r.body)
	}
}

// An external key store proxy credential put among the endpoint's access
// keys (an operator's mix-up: it carries no role, and no role reads as
// user) signs no TrentService request; it still signs XKS requests.
func TestXKSCredentialIsNoEndpointKey(t *testing.T) {
	var proxy awskms.AccessKey
	e := newEnv(t, func(c *awskms.Config) {
		proxy = c.XKS.Credentials.(awskms.StaticCredentials)[firstKey(c.XKS.Credentials.(awskms.StaticCredentials))]
		c.Credentials.(awskms.StaticCredentials)[proxy.ID] = proxy
	})
	if !proxy.XKS {
		t.Fatal("GenerateXKSAccessKey made a key not marked XKS")
	}
	_, err := e.client(proxy.ID, proxy.Secret).ListKeys(ctxT(t), &kms.ListKeysInput{})
	wantAWSError(t, err, "UnrecognizedClientException", "external key store proxy credential")
	health := map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}}
	if r := e.xksCall(t, "/health", health); r.status != http.StatusOK {
		t.Fatalf("XKS health with the proxy credential: %d %s", r.status, r.body)
	}
}

func firstKey(c awskms.StaticCredentials) string {
	for id := range c {
		return id
	}
	return ""
}
