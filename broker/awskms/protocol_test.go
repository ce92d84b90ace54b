package awskms_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/awskms"
)

// TestProtocol checks the JSON 1.1 protocol at the byte level: framing,
// error bodies and statuses, request ids and timestamps.
func TestProtocol(t *testing.T) {
	e := newEnv(t)
	raw := func(op, body string) rawResponse {
		return e.do(signedRequest{target: "TrentService." + op, body: []byte(body), key: e.admin})
	}
	tests := []struct {
		name    string
		resp    func() rawResponse
		status  int
		errType string
		mention string
	}{
		{"malformed JSON", func() rawResponse { return raw("ListKeys", `{"Limit":`) }, 400, "SerializationException", ""},
		{"not an object", func() rawResponse { return raw("ListKeys", `[1,2]`) }, 400, "SerializationException", ""},
		{"wrong member type", func() rawResponse { return raw("ListKeys", `{"Limit":"ten"}`) }, 400, "SerializationException", "Limit"},
		{"number out of range", func() rawResponse { return raw("ListKeys", `{"Limit":1e12}`) }, 400, "SerializationException", "member Limit must be a whole number"},
		{"trailing data", func() rawResponse { return raw("ListKeys", `{} {}`) }, 400, "SerializationException", "after"},
		{"bad base64 blob", func() rawResponse { return raw("Decrypt", `{"CiphertextBlob":"***"}`) }, 400, "SerializationException", ""},
		{"missing required member", func() rawResponse { return raw("Encrypt", `{"Plaintext":"aGk="}`) }, 400, "ValidationException", "keyId"},
		{"tag without a value", func() rawResponse { return raw("CreateKey", `{"Tags":[{"TagKey":"a","TagValue":""},{"TagKey":"b"}]}`) }, 400,
			"ValidationException", "tags.2.member.tagValue"},
		{"bad base64 names the member", func() rawResponse { return raw("Encrypt", `{"KeyId":"alias/x","Plaintext":"not base64!"}`) }, 400,
			"SerializationException", "Plaintext is not valid base64"},
		{"unknown operation", func() rawResponse { return raw("MakeCoffee", `{}`) }, 400, "UnknownOperationException", ""},
		{"unsupported operation", func() rawResponse { return raw("ImportKeyMaterial", `{}`) }, 400, "UnsupportedOperationException", "ImportKeyMaterial"},
		{"no target", func() rawResponse { return e.do(signedRequest{body: []byte(`{}`), key: e.admin}) }, 400, "UnknownOperationException", "X-Amz-Target"},
		{"other service's target", func() rawResponse {
			return e.do(signedRequest{target: "DynamoDB_20120810.ListTables", body: []byte(`{}`), key: e.admin})
		}, 400, "UnknownOperationException", ""},
		{"wrong content type", func() rawResponse {
			return e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`), key: e.admin,
				header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
		}, 400, "SerializationException", "Content-Type"},
		{"body over the limit", func() rawResponse {
			return e.do(signedRequest{target: "TrentService.Encrypt", body: bytes.Repeat([]byte(" "), awskms.DefaultMaxBodyBytes+1), key: e.admin})
		}, 400, "ValidationException", "exceeds"},
		{"unsigned", func() rawResponse { return e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`)}) }, 400,
			"MissingAuthenticationTokenException", ""},
		{"replayed", func() rawResponse {
			return e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`), key: e.admin, at: time.Now().Add(-time.Hour)})
		}, 400, "InvalidSignatureException", "expired"},
		{"tampered body", func() rawResponse {
			return e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{"Limit":5}`), key: e.admin, noContent: true,
				tamper: func(r *http.Request) {
					r.Body = nopCloser{strings.NewReader(`{"Limit":6}`)}
				}})
		}, 400, "InvalidSignatureException", "signature"},
		{"garbled Authorization", func() rawResponse {
			return e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`), key: e.admin,
				tamper: func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x") }})
		}, 400, "IncompleteSignatureException", ""},
		{"other path", func() rawResponse {
			return e.do(signedRequest{path: "/v1/keys", target: "TrentService.ListKeys", body: []byte(`{}`), key: e.admin})
		}, 404, "UnknownOperationException", ""},
		{"GET", func() rawResponse {
			resp, err := e.srv.Client().Get(e.srv.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return rawResponse{status: resp.StatusCode, header: resp.Header, body: []byte(`{"__type":"UnknownOperationException"}`)}
		}, 405, "UnknownOperationException", ""},
	}
	ids := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.resp()
			if r.status != tt.status || r.errorType() != tt.errType || !bytes.Contains(r.body, []byte(tt.mention)) {
				t.Fatalf("got %d %s, want %d %s mentioning %q", r.status, r.body, tt.status, tt.errType, tt.mention)
			}
			id := r.header.Get("x-amzn-RequestId")
			if len(id) != 36 || ids[id] {
				t.Errorf("request id %q missing or reused", id)
			}
			ids[id] = true
		})
	}

	t.Run("success framing", func(t *testing.T) {
		r := raw("CreateKey", "")
		if r.status != 200 || r.header.Get("Content-Type") != "application/x-amz-json-1.1" || r.header.Get("x-amzn-RequestId") == "" {
			t.Fatalf("create key with an empty body: %d %v %s", r.status, r.header, r.body)
		}
		var out struct{ KeyMetadata map[string]json.RawMessage }
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		var created float64
		if err := json.Unmarshal(out.KeyMetadata["CreationDate"], &created); err != nil {
			t.Fatalf("CreationDate %s is not epoch seconds: %v", out.KeyMetadata["CreationDate"], err)
		}
		if d := time.Since(time.Unix(int64(created), 0)); d < -time.Minute || d > time.Minute {
			t.Errorf("CreationDate %v is %v from now", created, d)
		}
		for _, m := range []string{"AWSAccountId", "Enabled", "MultiRegion", "Description", "KeyManager", "Origin"} {
			if _, ok := out.KeyMetadata[m]; !ok {
				t.Errorf("KeyMetadata lacks %s: %s", m, r.body)
			}
		}
		if _, ok := out.KeyMetadata["DeletionDate"]; ok {
			t.Errorf("an enabled key has a DeletionDate: %s", r.body)
		}
		enc := raw("Encrypt", `{"KeyId":`+string(out.KeyMetadata["KeyId"])+`,"Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b"},"GrantTokens":["ignored"],"Unknown":1}`)
		if enc.status != 200 {
			t.Fatalf("encrypt: %d %s", enc.status, enc.body)
		}
	})
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// FuzzTrentRequest sends arbitrary bodies, correctly signed, to every
// operation of a real broker: whatever the body, the answer is a
// well-formed success or AWS error, never a panic or a 500.
//
// The fuzzing engine runs the target again in each worker process, each
// with its own broker and so its own key: a seed naming the key made here
// would name no key in a worker, and every operation would stop at
// NotFound. Seeds name the key as fuzzKey and carry a ciphertext as
// {{CT}}, which the target replaces with this process's key id and a
// ciphertext of that key.
func FuzzTrentRequest(f *testing.F) {
	e := newEnv(f)
	ops := []string{"CreateAlias", "DescribeKey", "ListKeys", "EnableKey", "DisableKey", "ScheduleKeyDeletion", "CancelKeyDeletion",
		"UpdateKeyDescription", "UpdateAlias", "DeleteAlias", "ListAliases", "TagResource", "UntagResource", "ListResourceTags",
		"EnableKeyRotation", "DisableKeyRotation", "GetKeyRotationStatus", "RotateKeyOnDemand", "ListKeyRotations", "GetKeyPolicy",
		"PutKeyPolicy", "ListKeyPolicies", "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
		"GenerateDataKeyPairWithoutPlaintext", "GetPublicKey", "Sign", "Verify", "GenerateMac", "VerifyMac", "GenerateRandom", "CreateGrant"}
	const fuzzKey = "00000000-0000-4000-8000-000000000000"
	k := e.trent("CreateKey", map[string]any{})
	var created struct{ KeyMetadata struct{ KeyId string } }
	_ = json.Unmarshal(k.body, &created)
	id := created.KeyMetadata.KeyId
	enc := e.trent("Encrypt", map[string]any{"KeyId": id, "Plaintext": []byte("hi"), "EncryptionContext": map[string]string{"a": "b"}})
	var sealed struct{ CiphertextBlob string }
	if err := json.Unmarshal(enc.body, &sealed); err != nil || sealed.CiphertextBlob == "" {
		f.Fatalf("encrypt: %d %s", enc.status, enc.body)
	}
	for i := range ops {
		f.Add(uint8(i), []byte(`{"KeyId":"`+fuzzKey+`","Plaintext":"aGk=","Limit":2,"NumberOfBytes":16,"KeySpec":"AES_256"}`))
	}
	f.Add(uint8(0), []byte(`{"AliasName":"alias/fuzz","TargetKeyId":"`+fuzzKey+`"}`))
	f.Add(uint8(23), []byte(`{"CiphertextBlob":"AQ==","EncryptionContext":{"":""}}`))
	f.Add(uint8(23), []byte(`{"CiphertextBlob":"{{CT}}","EncryptionContext":{"a":"b"}}`))
	f.Add(uint8(24), []byte(`{"CiphertextBlob":"{{CT}}","SourceEncryptionContext":{"a":"b"},"DestinationKeyId":"`+fuzzKey+`"}`))
	f.Add(uint8(2), []byte(`{"Marker":"!!","Limit":-1}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		op := ops[int(which)%len(ops)]
		body = bytes.ReplaceAll(body, []byte(fuzzKey), []byte(id))
		body = bytes.ReplaceAll(body, []byte("{{CT}}"), []byte(sealed.CiphertextBlob))
		r := e.doWith(t, signedRequest{target: "TrentService." + op, body: body, key: e.admin})
		if r.status >= 500 {
			t.Fatalf("%s %q: %d %s", op, body, r.status, r.body)
		}
		if r.status != 200 && r.errorType() == "" {
			t.Fatalf("%s %q: %d without an error type: %s", op, body, r.status, r.body)
		}
	})
}
