package awskms_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

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
	for _, line := range bytes.Split(bytes.TrimSpace(a.w.bytes()), []byte("\n")) {
		var r audit.Record
		if err := json.Unmarshal(line, &r); err != nil {
			tb.Fatalf("audit line %q: %v", line, err)
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
	// The date must be signed as well.
	r = e.do(signedRequest{target: "TrentService.DescribeKey", body: body, key: e.admin, tamper: func(r *http.Request) {
		auth := r.Header.Get("Authorization")
		r.Header.Set("Authorization", strings.Replace(auth, ";x-amz-date", "", 1))
	}})
	if r.status == http.StatusOK || r.errorType() != "IncompleteSignatureException" || !bytes.Contains(r.body, []byte("X-Amz-Date")) {
		t.Errorf("unsigned X-Amz-Date: %d %s; want IncompleteSignatureException", r.status, r.body)
	}
}
