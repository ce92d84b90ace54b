package awskms

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker"
)

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name, body string
		mention    string // "" for accepted
	}{
		{"empty", ``, ""},
		{"exact", `{"KeyId":"k","EncryptionContext":{"a":"b"},"GrantTokens":["t"],"DryRun":false}`, ""},
		{"unknown member ignored", `{"KeyId":"k","Unknown":{"x":[1,{"y":2}]}}`, ""},
		{"unknown member may repeat inside", `{"KeyId":"k","Unknown":[{"a":1},{"a":2}]}`, ""},
		{"case variant", `{"keyId":"k"}`, "keyId"},
		{"case variant of an embedded member", `{"KeyId":"k","grantTokens":[]}`, "grantTokens"},
		{"unicode fold", `{"\u212AeyId":"k"}`, "eyId"},
		{"repeated", `{"KeyId":"a","KeyId":"b"}`, "KeyId"},
		{"repeated context key", `{"EncryptionContext":{"a":"1","a":"2"}}`, "EncryptionContext.a"},
		{"repeated in an unknown member", `{"Unknown":{"a":1,"a":2}}`, "Unknown.a"},
		{"not an object", `[]`, "one JSON object"},
		{"trailing", `{} []`, "after"},
		{"deep", strings.Repeat(`{"x":`, 40) + `1` + strings.Repeat(`}`, 40), "nested"},
		{"wrong type", `{"KeyId":1}`, "member KeyId has the wrong type (want a string)"},
		{"wrong type of an embedded member", `{"DryRun":"yes"}`, "member DryRun has the wrong type (want a boolean)"},
		{"wrong type of a context", `{"EncryptionContext":["a"]}`, "member EncryptionContext has the wrong type (want an object of string values)"},
		{"wrong type of a list", `{"GrantTokens":"t"}`, "member GrantTokens has the wrong type (want a list of strings)"},
		{"not base64", `{"Plaintext":"not base64!"}`, "member Plaintext is not valid base64"},
		{"null context value", `{"KeyId":"k","EncryptionContext":{"a":null}}`, "member EncryptionContext.a is null"},
		{"null member", `{"KeyId":"k","EncryptionContext":null,"GrantTokens":null}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in encryptInput
			err := decodeStrict([]byte(tt.body), &in)
			if tt.mention == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.exception != excSerialization || !strings.Contains(ae.message, tt.mention) {
				t.Fatalf("got %v; want a SerializationException mentioning %q", err, tt.mention)
			}
		})
	}
	// Nested shapes: a tag list and grant constraints.
	var tags tagResourceInput
	if err := decodeStrict([]byte(`{"KeyId":"k","Tags":[{"TagKey":"a","TagValue":"b","tagValue":"c"}]}`), &tags); err == nil ||
		!strings.Contains(err.Error(), "Tags[].tagValue") {
		t.Errorf("case variant in a tag: %v", err)
	}
	if err := decodeStrict([]byte(`{"KeyId":"k","Tags":{"TagKey":"a"}}`), &tags); err == nil ||
		!strings.Contains(err.Error(), "member Tags has the wrong type (want a list of objects)") {
		t.Errorf("tags as an object: %v", err)
	}
	var g createGrantInput
	if err := decodeStrict([]byte(`{"Constraints":{"EncryptionContextEquals":{"t":"a"},"EncryptionContextequals":{}}}`), &g); err == nil {
		t.Error("case variant in grant constraints accepted")
	}
	if err := decodeStrict([]byte(`{"Constraints":{"EncryptionContextEquals":{"t":"a"}}}`), &g); err != nil || g.Constraints.EncryptionContextEquals["t"] != "a" {
		t.Errorf("grant constraints: %+v %v", g.Constraints, err)
	}
}

// TestDecodeNumbersOutOfRange: a number that is not a whole one in its
// member's range is refused saying what it must be, not that its type is
// wrong.
func TestDecodeNumbersOutOfRange(t *testing.T) {
	for _, body := range []string{`{"NumberOfBytes":2147483648}`, `{"NumberOfBytes":-2147483649}`, `{"NumberOfBytes":1.5}`} {
		var in generateDataKeyInput
		err := decodeStrict([]byte(body), &in)
		var ae *apiError
		if !errors.As(err, &ae) || ae.exception != excSerialization ||
			!strings.Contains(ae.message, "member NumberOfBytes must be a whole number from -2147483648 to 2147483647") {
			t.Errorf("%s: got %v; want a SerializationException giving the range", body, err)
		}
	}
	var in generateDataKeyInput
	if err := decodeStrict([]byte(`{"NumberOfBytes":"32"}`), &in); err == nil || !strings.Contains(err.Error(), "wrong type (want a number)") {
		t.Errorf("a string for a number: %v", err)
	}
}

// TestGrantTokensBounded: GrantTokens, which are ignored, are still held
// to AWS's bounds (at most 10 tokens of 1 to 8192 characters).
func TestGrantTokensBounded(t *testing.T) {
	decode := operations["Encrypt"]
	tests := []struct {
		name, tokens string
		ok           bool
	}{
		{"none", `[]`, true},
		{"ten", `["` + strings.Repeat(`t","`, 9) + `t"]`, true},
		{"longest", `["` + strings.Repeat("é", 8192) + `"]`, true},
		{"eleven", `["` + strings.Repeat(`t","`, 10) + `t"]`, false},
		{"too long", `["` + strings.Repeat("t", 8193) + `"]`, false},
		{"empty", `[""]`, false},
	}
	for _, tt := range tests {
		_, err := decode([]byte(`{"KeyId":"alias/x","Plaintext":"eA==","GrantTokens":` + tt.tokens + `}`))
		var ae *apiError
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case !tt.ok && (!errors.As(err, &ae) || ae.exception != broker.ExcValidation || !strings.Contains(ae.message, "GrantTokens")):
			t.Errorf("%s: got %v; want a ValidationException naming GrantTokens", tt.name, err)
		}
	}
}

// contextsOf reads a request's contexts as the operation table does.
func contextsOf(in any) broker.RequestContexts { return contextFieldsOf(reflect.TypeOf(in)).of(in) }

func TestContextsOf(t *testing.T) {
	in := &reEncryptInput{SourceEncryptionContext: map[string]string{"s": "1"}, DestinationEncryptionContext: map[string]string{"d": "2"},
		DestinationKeyId: "dst"}
	c := contextsOf(in)
	if c.Source["s"] != "1" || c.Destination["d"] != "2" || c.EncryptionContext != nil || c.KeyRef != "dst" {
		t.Errorf("ReEncrypt: %+v", c)
	}
	e := &encryptInput{KeyId: "k", EncryptionContext: map[string]string{"a": "b"}}
	if c := contextsOf(e); c.KeyRef != "k" || c.EncryptionContext["a"] != "b" {
		t.Errorf("Encrypt: %+v", c)
	}
	// DescribeKey has no context, whatever the body said.
	if c := contextsOf(&describeKeyInput{KeyId: "k"}); c.EncryptionContext != nil || c.KeyRef != "k" {
		t.Errorf("DescribeKey: %+v", c)
	}
	if c := contextsOf(&aliasInput{TargetKeyId: "t"}); c.KeyRef != "t" {
		t.Errorf("CreateAlias: %+v", c)
	}
}
