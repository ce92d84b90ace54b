package awskms

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// The reference: decodeStrict as it was before it walked the bytes
// itself, checking through encoding/json's Decoder.Token. The fuzz target
// below holds the two to the same answers.

// decodeStrict decodes body into in (a pointer to a struct), after
// checking that it has one reading (see above). An empty body is {}.
// Errors are SerializationExceptions naming the member.
func decodeStrictTokens(body []byte, in any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := checkValueTokens(dec, reflect.TypeOf(in), "", 0, true); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return serialization("the request body has data after its JSON object")
	}
	if err := json.Unmarshal(body, in); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return serialization("member %s has the wrong type (want %s)", truncate(te.Field, 64), te.Type)
		}
		return serialization("the request body is not a valid JSON object of this operation's members")
	}
	return nil
}

// checkValue reads one JSON value from dec, whose Go type is t (nil: a
// member the shape does not have), and refuses repeated and case-variant
// member names in it.
func checkValueTokens(dec *json.Decoder, t reflect.Type, path string, depth int, top bool) error {
	if depth > maxJSONDepth {
		return serialization("the request body is nested more than %d levels deep", maxJSONDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return serialization("the request body is not valid JSON")
	}
	d, ok := tok.(json.Delim)
	if top && (!ok || d != '{') {
		return serialization("the request body must be one JSON object")
	}
	if !ok {
		return nil // a scalar: its type is checked by the decoding
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := checkValueTokens(dec, elem, path+"[]", depth+1, false); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ]
	case '{':
		var fields *shapeFields
		var elem reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct:
			fields = fieldsOf(t)
		case t != nil && t.Kind() == reflect.Map:
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return serialization("the request body is not valid JSON")
			}
			name, _ := tok.(string)
			at := memberPath(path, name)
			if seen[name] {
				return serialization("member %s appears more than once", truncate(at, 128))
			}
			seen[name] = true
			ft := elem
			if fields != nil {
				var exact bool
				ft, exact = fields.byName[name]
				if !exact {
					if want, ok := fields.fold(name); ok {
						return serialization("member %s is not a member of this request: the member is spelled %s",
							truncate(at, 128), memberPath(path, want))
					}
				}
			}
			if err := checkValueTokens(dec, ft, at, depth+1, false); err != nil {
				return err
			}
		}
		_, err = dec.Token() // }
	}
	if err != nil {
		return serialization("the request body is not valid JSON")
	}
	return nil
}

// FuzzDecodeStrictSameAsTokens: the byte walk accepts exactly the bodies
// the Decoder.Token check accepted, decodes them to the same request, and
// refuses the rest as SerializationExceptions.
func FuzzDecodeStrictSameAsTokens(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"KeyId":"k","EncryptionContext":{"a":"b"},"GrantTokens":["t"],"DryRun":false}`,
		`{"KeyId":"k","Unknown":{"x":[1,{"y":2}]}}`, `{"KeyId":"k","Unknown":[{"a":1},{"a":2}]}`, `{"keyId":"k"}`,
		`{"\u212AeyId":"k"}`, `{"KeyId":"a","KeyId":"b"}`, `{"EncryptionContext":{"a":"1","a":"2"}}`,
		`{"EncryptionContext":{"a":"1","\u0061":"2"}}`, `{"Unknown":{"a":1,"a":2}}`, `[]`, `{} []`, `{"KeyId":1}`,
		`{"KeyId":"k",}`, `{"KeyId" "k"}`, `{"Plaintext":"AAEC\/w=="}`, " {\"KeyId\":\"\xff\"} ", `{"KeyId":"k"}x`,
		strings.Repeat(`{"x":`, 33) + `1` + strings.Repeat(`}`, 33), `{"EncryptionContext":{"a":"b"}}`, `tru`, `5`, `"s"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var a, b encryptInput
		errA := decodeStrict(body, &a)
		errB := decodeStrictTokens(body, &b)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%q: byte walk %v, tokens %v", body, errA, errB)
		}
		if errA != nil {
			var ae *apiError
			if !errors.As(errA, &ae) || ae.exception != excSerialization {
				t.Fatalf("%q: %v is not a SerializationException", body, errA)
			}
			return
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%q: decoded %+v, want %+v", body, a, b)
		}
	})
}
