package awskms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"

	"github.com/hsmbroker/hsmbroker/broker"
)

// One reading of a request body. encoding/json matches an object member to
// a struct field whatever its letter case, and lets the last of repeated
// members win; a reader that compares names exactly, or keeps the first,
// would see a different request. So a body is decoded once, into the
// operation's typed request, and everything that looks at the request
// (authorization, the audit line, the operation) reads that one value.
// Before it is decoded, a body is refused if it could be read two ways:
//
//   - a member repeated in an object, at any depth (encryption context
//     keys included);
//   - a member whose name differs only in letter case from a member of the
//     request shape (AWS's spelling is the only one accepted).
//
// Members the shape does not have at all are ignored, as AWS's JSON
// protocol servers ignore them (clients newer than this service may send
// them); since the check and the operation both read the decoded value,
// an ignored member is ignored by both.

// maxJSONDepth bounds the nesting of a request body. The deepest AWS
// shape (CreateGrant's Constraints, a tag in a list) is 3 levels.
const maxJSONDepth = 32

// serialization is the answer to a body that cannot be read one way.
func serialization(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, excSerialization, fmt.Sprintf(format, args...)}
}

// decodeStrict decodes body into in (a pointer to a struct), after
// checking that it has one reading (see above). An empty body is {}.
// Errors are SerializationExceptions naming the member.
func decodeStrict(body []byte, in any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := checkValue(dec, reflect.TypeOf(in), "", 0, true); err != nil {
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
func checkValue(dec *json.Decoder, t reflect.Type, path string, depth int, top bool) error {
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
			if err := checkValue(dec, elem, path+"[]", depth+1, false); err != nil {
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
			if err := checkValue(dec, ft, at, depth+1, false); err != nil {
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

func memberPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// shapeFields are the JSON member names of a struct, as encoding/json
// names them (embedded structs' members included), with their types.
type shapeFields struct {
	byName map[string]reflect.Type
	names  []string
}

// fold finds the member name that matches name as encoding/json matches
// names (Unicode case folding: strings.EqualFold, under which the Kelvin
// sign is a k and the long s an s).
func (f *shapeFields) fold(name string) (string, bool) {
	for _, n := range f.names {
		if strings.EqualFold(n, name) {
			return n, true
		}
	}
	return "", false
}

var shapeCache sync.Map // reflect.Type -> *shapeFields

func fieldsOf(t reflect.Type) *shapeFields {
	if f, ok := shapeCache.Load(t); ok {
		return f.(*shapeFields)
	}
	f := &shapeFields{byName: map[string]reflect.Type{}}
	for _, sf := range reflect.VisibleFields(t) {
		if sf.Anonymous || !sf.IsExported() {
			continue
		}
		name := sf.Name
		if tag, _, _ := strings.Cut(sf.Tag.Get("json"), ","); tag == "-" {
			continue
		} else if tag != "" {
			name = tag
		}
		f.byName[name] = sf.Type
		f.names = append(f.names, name)
	}
	shapeCache.Store(t, f)
	return f
}

// contextsOf picks the encryption contexts and key reference that
// authorization and the audit line need out of a decoded request: the
// same maps the operation hands to the core. Fields are found by name, so
// every request shape with an EncryptionContext member is covered.
func contextsOf(in any) broker.RequestContexts {
	v := reflect.ValueOf(in)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return broker.RequestContexts{}
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return broker.RequestContexts{}
	}
	ctxMap := func(name string) map[string]string {
		f := v.FieldByName(name)
		if m, ok := reflectInterface(f).(map[string]string); ok {
			return m
		}
		return nil
	}
	c := broker.RequestContexts{EncryptionContext: ctxMap("EncryptionContext"),
		Source: ctxMap("SourceEncryptionContext"), Destination: ctxMap("DestinationEncryptionContext")}
	for _, name := range []string{"KeyId", "TargetKeyId", "DestinationKeyId"} {
		if s, ok := reflectInterface(v.FieldByName(name)).(string); ok && s != "" {
			c.KeyRef = s
			break
		}
	}
	if len(c.KeyRef) > 2048 {
		c.KeyRef = c.KeyRef[:2048]
	}
	return c
}

func reflectInterface(f reflect.Value) any {
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	return f.Interface()
}
