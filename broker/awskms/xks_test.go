package awskms_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// xksCall signs a request as AWS KMS signs XKS proxy calls (SigV4, service
// kms-xks-proxy) and posts it.
func (e *env) xksCall(tb testing.TB, path string, body any) rawResponse {
	tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		tb.Fatal(err)
	}
	return e.doWith(tb, signedRequest{path: xksPrefix + "/kms/xks/v1" + path, body: b, key: e.xksKey, service: "kms-xks-proxy"})
}

func reqMeta(op string) map[string]string {
	return map[string]string{
		"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
		"kmsKeyArn":       "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"kmsOperation":    op,
		"kmsRequestId":    "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
		"kmsViaService":   "rds",
	}
}

type xksEncryptOut struct {
	Ciphertext                   string `json:"ciphertext"`
	CiphertextMetadata           string `json:"ciphertextMetadata"`
	InitializationVector         string `json:"initializationVector"`
	AuthenticationTag            string `json:"authenticationTag"`
	CiphertextDataIntegrityValue string `json:"ciphertextDataIntegrityValue"`
}

func b64s(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%q is not base64: %v", s, err)
	}
	return b
}

func wantXKS(t *testing.T, r rawResponse, status int, name string) {
	t.Helper()
	if r.status != status || r.errorType() != name {
		t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, name)
	}
	var b struct {
		ErrorMessage string `json:"errorMessage"`
	}
	_ = json.Unmarshal(r.body, &b)
	for _, c := range b.ErrorMessage {
		if c < 0x20 || c > 0x7e {
			t.Errorf("errorMessage %q has a character outside printable ASCII", b.ErrorMessage)
		}
	}
	if len(b.ErrorMessage) >= 512 {
		t.Errorf("errorMessage of %d characters", len(b.ErrorMessage))
	}
}

// TestXKS exercises the external key store proxy API as AWS KMS calls it.
func TestXKS(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	key := createKey(t, e.kms, "", "")
	if _, err := e.kms.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/rds-root"), TargetKeyId: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	ecKey := createKey(t, e.kms, types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify)

	encrypt := func(t *testing.T, id string, pt, aad []byte, cdiv bool) rawResponse {
		t.Helper()
		body := map[string]any{"requestMetadata": reqMeta("Encrypt"), "plaintext": b64s(pt), "encryptionAlgorithm": "AES_GCM"}
		if aad != nil {
			body["additionalAuthenticatedData"] = b64s(aad)
		}
		if cdiv {
			body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
		}
		return e.xksCall(t, "/keys/"+id+"/encrypt", body)
	}
	decrypt := func(t *testing.T, id string, c xksEncryptOut, aad []byte) rawResponse {
		t.Helper()
		body := map[string]any{"requestMetadata": reqMeta("Decrypt"), "ciphertext": c.Ciphertext, "ciphertextMetadata": c.CiphertextMetadata,
			"initializationVector": c.InitializationVector, "authenticationTag": c.AuthenticationTag, "encryptionAlgorithm": "AES_GCM"}
		if aad != nil {
			body["additionalAuthenticatedData"] = b64s(aad)
		}
		return e.xksCall(t, "/keys/"+id+"/decrypt", body)
	}
	parse := func(t *testing.T, r rawResponse) xksEncryptOut {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("encrypt: %d %s", r.status, r.body)
		}
		var out xksEncryptOut
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("GetHealthStatus", func(t *testing.T) {
		r := e.xksCall(t, "/health", map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}})
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("health: %d %s", r.status, r.body)
		}
		var h struct {
			XksProxyFleetSize int
			XksProxyVendor    string
			XksProxyModel     string
			EkmVendor         string
			EkmFleetDetails   []struct{ ID, Model, HealthStatus string }
		}
		if err := json.Unmarshal(r.body, &h); err != nil {
			t.Fatal(err)
		}
		if h.XksProxyFleetSize != 1 || h.XksProxyVendor != "hsmbroker tests" || h.EkmVendor == "" || len(h.EkmFleetDetails) != 1 ||
			h.EkmFleetDetails[0].ID != "node1" || h.EkmFleetDetails[0].HealthStatus != "ACTIVE" || !strings.Contains(h.EkmFleetDetails[0].Model, "SoftHSM") {
			t.Errorf("health %s", r.body)
		}
		// The specification raises ValidationException for every
		// operation but GetHealthStatus: a health check is answered
		// whatever metadata it carries.
		for _, body := range []any{map[string]any{}, map[string]any{"requestMetadata": map[string]string{"kmsOperation": "KmsHealthCheck"}}} {
			if r := e.xksCall(t, "/health", body); r.status != 200 {
				t.Errorf("health with %v: %d %s", body, r.status, r.body)
			}
		}
	})

	t.Run("GetKeyMetadata", func(t *testing.T) {
		for _, id := range []string{key, strings.ToUpper(key), "rds-root"} {
			r := e.xksCall(t, "/keys/"+id+"/metadata", map[string]any{"requestMetadata": reqMeta("DescribeKey")})
			if r.status != 200 || string(r.body) != `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}` {
				t.Fatalf("metadata of %s: %d %s", id, r.status, r.body)
			}
		}
		r := e.xksCall(t, "/keys/"+ecKey+"/metadata", map[string]any{"requestMetadata": reqMeta("CreateKey")})
		if r.status != 200 || string(r.body) != `{"keySpec":"ECC_NIST_P256","keyUsage":["SIGN","VERIFY"],"keyStatus":"ENABLED"}` {
			t.Fatalf("metadata of an EC key: %d %s", r.status, r.body)
		}
		// keyUsage lists what the key supports among the specification's
		// operations: a MAC key supports none of them.
		macKey := createKey(t, e.kms, types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac)
		r = e.xksCall(t, "/keys/"+macKey+"/metadata", map[string]any{"requestMetadata": reqMeta("CreateKey")})
		if r.status != 200 || string(r.body) != `{"keySpec":"HMAC_256","keyUsage":[],"keyStatus":"ENABLED"}` {
			t.Fatalf("metadata of an HMAC key: %d %s", r.status, r.body)
		}
		rsaKey := createKey(t, e.kms, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt)
		r = e.xksCall(t, "/keys/"+rsaKey+"/metadata", map[string]any{"requestMetadata": reqMeta("CreateKey")})
		if r.status != 200 || string(r.body) != `{"keySpec":"RSA_2048","keyUsage":[],"keyStatus":"ENABLED"}` {
			t.Fatalf("metadata of an RSA encryption key: %d %s", r.status, r.body)
		}
		wantXKS(t, e.xksCall(t, "/keys/11111111-2222-4333-8444-555555555555/metadata", map[string]any{"requestMetadata": reqMeta("CreateKey")}),
			404, "KeyNotFoundException")
		wantXKS(t, e.xksCall(t, "/keys/no.such.alias/metadata", map[string]any{"requestMetadata": reqMeta("CreateKey")}), 404, "KeyNotFoundException")
		wantXKS(t, e.xksCall(t, "/keys/rds-root/metadata", map[string]any{}), 400, "ValidationException")
		wantXKS(t, e.xksCall(t, "/keys/rds-root/metadata", map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "x", "kmsOperation": "DescribeKey"}}),
			400, "ValidationException")
	})

	t.Run("EncryptDecrypt", func(t *testing.T) {
		pt := []byte("a data key of 32 bytes.........!")
		aad := []byte("project=nile,department=marketing")
		c := parse(t, encrypt(t, key, pt, aad, true))
		ct, iv, tag, md := unb64(t, c.Ciphertext), unb64(t, c.InitializationVector), unb64(t, c.AuthenticationTag), unb64(t, c.CiphertextMetadata)
		if len(ct) != len(pt) || len(iv) != 12 || len(tag) != 16 || len(md) == 0 || len(md) > 20 {
			t.Fatalf("encrypt parts: ct %d iv %d tag %d metadata %d", len(ct), len(iv), len(tag), len(md))
		}
		// The CDIV is SHA-256 over aad || metadata || iv || ciphertext || tag.
		h := sha256.New()
		for _, p := range [][]byte{aad, md, iv, ct, tag} {
			h.Write(p)
		}
		if got := unb64(t, c.CiphertextDataIntegrityValue); !bytes.Equal(got, h.Sum(nil)) {
			t.Fatalf("ciphertextDataIntegrityValue does not match the specification's computation")
		}
		r := decrypt(t, "rds-root", c, aad)
		if r.status != 200 || string(r.body) != `{"plaintext":"`+b64s(pt)+`"}` {
			t.Fatalf("decrypt: %d %s", r.status, r.body)
		}
		noAAD := parse(t, encrypt(t, key, pt, nil, false))
		if noAAD.CiphertextDataIntegrityValue != "" {
			t.Errorf("CDIV returned without being asked for")
		}
		if r := decrypt(t, key, noAAD, nil); r.status != 200 {
			t.Fatalf("decrypt without AAD: %d %s", r.status, r.body)
		}
	})

	t.Run("DecryptFailures", func(t *testing.T) {
		aad := []byte("context")
		c := parse(t, encrypt(t, key, []byte("secret"), aad, false))
		flip := func(s string) string {
			b, _ := base64.StdEncoding.DecodeString(s)
			b[len(b)-1] ^= 1
			return b64s(b)
		}
		cases := map[string]func() rawResponse{
			"wrong AAD": func() rawResponse { return decrypt(t, key, c, []byte("other")) },
			"no AAD":    func() rawResponse { return decrypt(t, key, c, nil) },
			"tag": func() rawResponse {
				d := c
				d.AuthenticationTag = flip(c.AuthenticationTag)
				return decrypt(t, key, d, aad)
			},
			"ciphertext": func() rawResponse {
				d := c
				d.Ciphertext = flip(c.Ciphertext)
				return decrypt(t, key, d, aad)
			},
			"iv": func() rawResponse {
				d := c
				d.InitializationVector = flip(c.InitializationVector)
				return decrypt(t, key, d, aad)
			},
			"metadata": func() rawResponse {
				d := c
				d.CiphertextMetadata = flip(c.CiphertextMetadata)
				return decrypt(t, key, d, aad)
			},
			"metadata dropped": func() rawResponse {
				d := c
				d.CiphertextMetadata = ""
				return decrypt(t, key, d, aad)
			},
			// The specification's warning: metadata moved into the AAD must
			// not decrypt.
			"metadata moved into AAD": func() rawResponse {
				d := c
				d.CiphertextMetadata = ""
				return decrypt(t, key, d, append(bytes.Clone(aad), unb64(t, c.CiphertextMetadata)...))
			},
			"16-byte IV": func() rawResponse {
				d := c
				d.InitializationVector = b64s(make([]byte, 16))
				return decrypt(t, key, d, aad)
			},
			"other key": func() rawResponse { return decrypt(t, createKey(t, e.kms, "", ""), c, aad) },
		}
		for name, call := range cases {
			t.Run(name, func(t *testing.T) { wantXKS(t, call(), 400, "InvalidCiphertextException") })
		}
	})

	t.Run("BrokerCiphertextsStayApart", func(t *testing.T) {
		// A ciphertext blob of TrentService Encrypt, split into the XKS
		// parts with its header as the AAD, must not open through XKS.
		enc, err := e.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("broker secret")})
		if err != nil {
			t.Fatal(err)
		}
		blob := enc.CiphertextBlob
		header, sealed := blob[:33], blob[33:]
		for _, md := range []string{"", b64s([]byte{1, 0, 0, 0, 1})} {
			c := xksEncryptOut{Ciphertext: b64s(sealed[:len(sealed)-16]), AuthenticationTag: b64s(sealed[len(sealed)-16:]),
				InitializationVector: b64s(header[21:33]), CiphertextMetadata: md}
			wantXKS(t, decrypt(t, key, c, header), 400, "InvalidCiphertextException")
		}
	})

	t.Run("Rotation", func(t *testing.T) {
		k := createKey(t, e.kms, "", "")
		before := parse(t, encrypt(t, k, []byte("v1"), nil, false))
		if _, err := e.kms.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		after := parse(t, encrypt(t, k, []byte("v2"), nil, false))
		if after.CiphertextMetadata == before.CiphertextMetadata {
			t.Errorf("ciphertextMetadata %q did not change with the key version", after.CiphertextMetadata)
		}
		for _, c := range []xksEncryptOut{before, after} {
			if r := decrypt(t, k, c, nil); r.status != 200 {
				t.Fatalf("decrypt after rotation: %d %s", r.status, r.body)
			}
		}
	})

	t.Run("KeyStateAndUsage", func(t *testing.T) {
		k := createKey(t, e.kms, "", "")
		c := parse(t, encrypt(t, k, []byte("x"), nil, false))
		if _, err := e.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		r := e.xksCall(t, "/keys/"+k+"/metadata", map[string]any{"requestMetadata": reqMeta("DescribeKey")})
		if !bytes.Contains(r.body, []byte(`"keyStatus":"DISABLED"`)) {
			t.Errorf("disabled key metadata %s", r.body)
		}
		wantXKS(t, encrypt(t, k, []byte("x"), nil, false), 400, "InvalidStateException")
		wantXKS(t, decrypt(t, k, c, nil), 400, "InvalidStateException")
		wantXKS(t, encrypt(t, ecKey, []byte("x"), nil, false), 400, "InvalidKeyUsageException")
		wantXKS(t, encrypt(t, "11111111-2222-4333-8444-555555555555", []byte("x"), nil, false), 404, "KeyNotFoundException")
	})

	t.Run("Validation", func(t *testing.T) {
		base := func() map[string]any {
			return map[string]any{"requestMetadata": reqMeta("Encrypt"), "plaintext": b64s([]byte("x")), "encryptionAlgorithm": "AES_GCM"}
		}
		tests := map[string]func(map[string]any){
			"no metadata":          func(b map[string]any) { delete(b, "requestMetadata") },
			"no kmsKeyArn":         func(b map[string]any) { m := reqMeta("Encrypt"); delete(m, "kmsKeyArn"); b["requestMetadata"] = m },
			"no plaintext":         func(b map[string]any) { delete(b, "plaintext") },
			"plaintext not base64": func(b map[string]any) { b["plaintext"] = "***" },
			"other algorithm":      func(b map[string]any) { b["encryptionAlgorithm"] = "AES_CBC" },
			"no algorithm":         func(b map[string]any) { delete(b, "encryptionAlgorithm") },
			"other CDIV algorithm": func(b map[string]any) { b["ciphertextDataIntegrityValueAlgorithm"] = "MD5" },
		}
		for name, mutate := range tests {
			t.Run(name, func(t *testing.T) {
				b := base()
				mutate(b)
				wantXKS(t, e.xksCall(t, "/keys/"+key+"/encrypt", b), 400, "ValidationException")
			})
		}
		wantXKS(t, e.xksCall(t, "/keys/bad$id/encrypt", base()), 400, "ValidationException")
		big := base()
		big["plaintext"] = b64s(make([]byte, 9000))
		wantXKS(t, e.xksCall(t, "/keys/"+key+"/encrypt", big), 501, "UnsupportedOperationException")
		unknown := base()
		unknown["requestMetadata"].(map[string]string)["kmsOperation"] = "BulkEncrypt" // unknown operations are accepted
		if r := e.xksCall(t, "/keys/"+key+"/encrypt", unknown); r.status != 200 {
			t.Errorf("a future kmsOperation was refused: %d %s", r.status, r.body)
		}
	})

	t.Run("Authentication", func(t *testing.T) {
		body := []byte(`{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"KmsHealthCheck"}}`)
		path := xksPrefix + "/kms/xks/v1/health"
		wrong := e.xksKey
		wrong.Secret = strings.Repeat("A", 44)
		cases := map[string]signedRequest{
			"wrong secret":            {path: path, body: body, key: wrong, service: "kms-xks-proxy"},
			"TrentService credential": {path: path, body: body, key: e.admin, service: "kms-xks-proxy"},
			"signed for kms":          {path: path, body: body, key: e.xksKey, service: "kms"},
			"unsigned":                {path: path, body: body, service: "kms-xks-proxy"},
			"replayed":                {path: path, body: body, key: e.xksKey, service: "kms-xks-proxy", at: time.Now().Add(-10 * time.Minute)},
			"tampered body": {path: path, body: body, key: e.xksKey, service: "kms-xks-proxy", noContent: true, tamper: func(r *http.Request) {
				r.Body = nopCloser{strings.NewReader(strings.Replace(string(body), `"r"`, `"s"`, 1))}
			}},
			"other region": {path: path, body: body, key: e.xksKey, service: "kms-xks-proxy", region: "eu-west-1"},
		}
		for name, sr := range cases {
			t.Run(name, func(t *testing.T) { wantXKS(t, e.doWith(t, sr), 401, "AuthenticationFailedException") })
		}
		// The XKS credential is not a TrentService credential either.
		r := e.doWith(t, signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`), key: e.xksKey})
		if r.errorType() != "UnrecognizedClientException" {
			t.Errorf("XKS credential on TrentService: %d %s", r.status, r.body)
		}
	})

	t.Run("Routing", func(t *testing.T) {
		wantXKS(t, e.xksCall(t, "/keys/"+key+"/sign", map[string]any{"requestMetadata": reqMeta("Sign")}), 404, "InvalidUriPathException")
		wantXKS(t, e.xksCall(t, "/keys", map[string]any{}), 404, "InvalidUriPathException")
		resp, err := e.srv.Client().Get(e.srv.URL + xksPrefix + "/kms/xks/v1/keys/" + key + "/metadata")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET answered %d, want 405", resp.StatusCode)
		}
		// Another prefix is not the XKS API: it falls to TrentService.
		r := e.doWith(t, signedRequest{path: "/other/kms/xks/v1/health", body: []byte(`{}`), key: e.xksKey, service: "kms-xks-proxy"})
		if r.status != 404 {
			t.Errorf("other prefix answered %d %s", r.status, r.body)
		}
	})
}

// TestXKSFailureLogNamesTheKMSRequest: a refused call's log line carries
// the request metadata AWS KMS sent, as an answered call's does, so that
// the failures an operator looks for can be matched with CloudTrail.
func TestXKSFailureLogNamesTheKMSRequest(t *testing.T) {
	var logs hsmtest.SyncBuffer
	e := newEnv(t, func(c *awskms.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	key := createKey(t, e.kms, "", "")
	meta := reqMeta("Decrypt")
	meta["kmsRequestId"] = "failed-call-7f3a"
	r := e.xksCall(t, "/keys/"+key+"/decrypt", map[string]any{"requestMetadata": meta, "encryptionAlgorithm": "AES_GCM",
		"ciphertext": b64s([]byte("not a ciphertext")), "initializationVector": b64s(make([]byte, 12)), "authenticationTag": b64s(make([]byte, 16))})
	wantXKS(t, r, 400, "InvalidCiphertextException")
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "failed-call-7f3a") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no log line names the kmsRequestId; logs:\n%s", logs.String())
	}
	for k, want := range map[string]any{"msg": "xks request", "operation": "Decrypt", "external_key_id": key, "principal": "aws-kms",
		"kms_operation": "Decrypt", "aws_principal_arn": meta["awsPrincipalArn"], "kms_key_arn": meta["kmsKeyArn"],
		"status": float64(400), "error_name": "InvalidCiphertextException"} {
		if line[k] != want {
			t.Errorf("log line %s = %v, want %v", k, line[k], want)
		}
	}
	if _, ok := line["took"]; !ok {
		t.Error("log line has no took")
	}
}
