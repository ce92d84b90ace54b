package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// The reference: Check as it was before it walked the bytes itself,
// reading the document through encoding/json's Decoder.Token. The fuzz
// target below holds the two to the same answers.

func checkTokens(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := checkValueTokens(dec, reflect.TypeOf(v), "", 0, true, false); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fail("", "the document has data after its JSON object")
	}
	return nil
}

func checkValueTokens(dec *json.Decoder, t reflect.Type, path string, depth int, top, notNull bool) error {
	if depth > MaxDepth {
		return fail(path, "the document is nested more than %d levels deep", MaxDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return fail(path, "the document is not valid JSON%s", where(path))
	}
	if notNull && tok == nil {
		return fail(path, "member %s is null; a value of this map must not be", truncate(path, 128))
	}
	d, ok := tok.(json.Delim)
	if top && (!ok || d != '{') {
		return fail("", "the document must be one JSON object")
	}
	if !ok {
		return nil
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := checkValueTokens(dec, elem, path+"[]", depth+1, false, false); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ]
	case '{':
		var fields *structFields
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
				return fail(path, "the document is not valid JSON%s", where(path))
			}
			name, _ := tok.(string)
			at := memberPath(path, name)
			if seen[name] {
				return fail(at, "member %s appears more than once", truncate(at, 128))
			}
			seen[name] = true
			ft := elem
			if fields != nil {
				var exact bool
				ft, exact = fields.byName[name]
				if !exact {
					if want, ok := fields.fold(name); ok {
						return fail(at, "member %s is spelled %s", truncate(at, 128), memberPath(path, want))
					}
				}
			}
			if err := checkValueTokens(dec, ft, at, depth+1, false, elem != nil && !nullable(ft)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // }
	}
	if err != nil {
		return fail(path, "the document is not valid JSON%s", where(path))
	}
	return nil
}

// Shapes for the fuzz target: an AWS request with an encryption context
// (a map: its keys may repeat-check but not fold), a nested list of
// structs, and a key policy statement (maps of maps, raw members).
type fuzzTag struct {
	TagKey   string
	TagValue string
}

type fuzzConstraints struct {
	EncryptionContextEquals map[string]string
	EncryptionContextSubset map[string]string
}

type fuzzGrantTokens struct {
	GrantTokens []string
}

type fuzzRequest struct {
	KeyId             string
	Plaintext         []byte
	EncryptionContext map[string]string
	NumberOfBytes     *int32
	Tags              []fuzzTag
	Constraints       *fuzzConstraints
	Matrix            [][]fuzzTag
	Ignored           string `json:"-"`
	fuzzGrantTokens
}

type fuzzStatement struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Principal json.RawMessage              `json:"Principal"`
	Action    []string                     `json:"Action"`
	Condition map[string]map[string]string `json:"Condition"`
	Kelvin    string                       `json:"\u212Aelvin"`
}

// FuzzCheckSameAsTokens: the byte walk accepts exactly the documents the
// Decoder.Token walk accepts and, when it refuses one, names the same
// member with the same message, for every shape.
func FuzzCheckSameAsTokens(f *testing.F) {
	for _, s := range []string{``, " \v ", `{}`, `{"KeyId":"k","EncryptionContext":{"a":"b"},"GrantTokens":["t"]}`,
		`{"KeyId":"k","Unknown":{"x":[1,{"y":2}]}}`, `{"KeyId":"k","Unknown":[{"a":1},{"a":2}]}`, `{"keyId":"k"}`,
		`{"\u212AeyId":"k"}`, `{"KeyId":"a","KeyId":"b"}`, `{"EncryptionContext":{"a":"1","a":"2"}}`,
		`{"EncryptionContext":{"a":"1","A":"2"}}`, `{"EncryptionContext":{"a":"1","\u0061":"2"}}`,
		`{"Unknown":{"a":1,"a":2}}`, `[]`, `{} []`, `{"KeyId":1}`, `{"KeyId":"k",}`, `{"KeyId" "k"}`,
		`{"Plaintext":"AAEC\/w=="}`, " {\"KeyId\":\"\xff\",\"\xfe\":1,\"\xfd\":2} ", `{"KeyId":"k"}x`,
		strings.Repeat(`{"x":`, 33) + `1` + strings.Repeat(`}`, 33), `tru`, `5`, `"s"`, `-`, `1e400`,
		`{"NumberOfBytes":1e400}`, `{"x":[1e-400,-0.5E+3,01]}`, `{"Tags":[{"TagKey":"a","tagKey":"b"}]}`,
		`{"Constraints":{"EncryptionContextSubset":{"k":"v"},"encryptionContextSubset":{}}}`,
		`{"Matrix":[[{"TagValue":"x","TagValue":"y"}]]}`, `{"ignored":"x","Ignored":"y"}`,
		`{"Condition":{"StringEquals":{"a":"b","A":"c"}},"Condition":{}}`, `{"kelvin":"x"}`, `{"Kelvin":1}`,
		`{"Principal":{"AWS":"*","AWS":"x"}}`, `{"a":"\u00zz"}`, `{"a":"\ud800"}`, "{\"a\":\"\x01\"}",
		`{"":1,"":2}`, `{"":{"":[{"":1}]}}`, `[1,]`, `{"a":[1 2]}`, `{"a":[,1]}`, `{"a":truex}`, `{"a":nul}`,
		`{"EncryptionContext":{"a":null}}`, `{"EncryptionContext":{"a":null,}}`, `{"EncryptionContext":{"a":null`,
		`{"EncryptionContext":{"a":nullx}}`, `{"EncryptionContext":{"a": null }}`, `{"Condition":{"a":null}}`,
		`{"Condition":{"a":{"b":null}}}`, `{"x":null}`, `{"Principal":{"AWS":null}}`,
		`{"a":1,`, `{"a":[`, `{"a"`, `{"a":`, `{,}`, `{"a":1 "b":2}`, "\ufeff{}", "{}\u00a0"} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, doc []byte, shape uint8) {
		var v any
		switch shape % 4 {
		case 0:
			v = &fuzzRequest{}
		case 1:
			v = &fuzzStatement{}
		case 2:
			v = &map[string]fuzzRequest{}
		default:
			v = new(any)
		}
		got, want := Check(doc, v), checkTokens(doc, v)
		if (got == nil) != (want == nil) {
			t.Fatalf("%q into %T: byte walk %v, tokens %v", doc, v, got, want)
		}
		if got == nil {
			return
		}
		var g, w *Error
		if !errors.As(got, &g) || !errors.As(want, &w) {
			t.Fatalf("%q: errors %T %T are not *Error", doc, got, want)
		}
		if g.Member != w.Member || g.Error() != w.Error() {
			t.Fatalf("%q into %T: byte walk refused %q (%v), tokens %q (%v)", doc, v, g.Member, g, w.Member, w)
		}
	})
}
