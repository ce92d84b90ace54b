package awskms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
//
// The check walks the body's bytes once (scanner) without copying its
// strings: a 4 KiB plaintext is a 5.5 KiB base64 string that
// encoding/json's Decoder.Token would unquote and copy only to be thrown
// away. The walk sees the structure of a valid body exactly as
// encoding/json does; on an invalid one it may stop anywhere, and
// json.Unmarshal, which checks the whole body's syntax before decoding
// any of it, refuses it.
func decodeStrict(body []byte, in any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	s := scanner{b: body}
	s.ws()
	if c := s.b[s.i]; c != '{' {
		if strings.IndexByte(`["-0123456789tfn`, c) >= 0 {
			return serialization("the request body must be one JSON object")
		}
		return errNotJSON()
	}
	if err := s.value(reflect.TypeOf(in), "", 0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return serialization("the request body has data after its JSON object")
	}
	if err := json.Unmarshal(body, in); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return serialization("member %s has the wrong type (want %s)", truncate(te.Field, 64), te.Type)
		case errors.As(err, &se):
			return errNotJSON()
		}
		return serialization("the request body is not a valid JSON object of this operation's members")
	}
	return nil
}

func errNotJSON() *apiError { return serialization("the request body is not valid JSON") }

// scanner walks a JSON body for decodeStrict's checks.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads the string at s.i (an opening quote) and returns its raw
// content; plain means it has no escape and no byte outside ASCII, so the
// raw bytes are its value.
func (s *scanner) str() (raw []byte, plain bool, err error) {
	s.i++
	start := s.i
	plain = true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, plain, nil
		case c == '\\':
			plain = false
			s.i += 2
		case c < 0x20:
			return nil, false, errNotJSON()
		default:
			if c >= 0x80 {
				plain = false
			}
			s.i++
		}
	}
	return nil, false, errNotJSON()
}

// name reads a member name as encoding/json decodes it.
func (s *scanner) name() (string, error) {
	open := s.i
	raw, plain, err := s.str()
	if err != nil {
		return "", err
	}
	if plain {
		return string(raw), nil
	}
	var n string
	if err := json.Unmarshal(s.b[open:s.i], &n); err != nil {
		return "", errNotJSON()
	}
	return n, nil
}

// value reads one JSON value whose Go type is t (nil: a member the shape
// does not have), and refuses repeated and case-variant member names in
// it.
func (s *scanner) value(t reflect.Type, path string, depth int) error {
	if depth > maxJSONDepth {
		return serialization("the request body is nested more than %d levels deep", maxJSONDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s.ws()
	if s.i >= len(s.b) {
		return errNotJSON()
	}
	switch s.b[s.i] {
	case '"':
		_, _, err := s.str()
		return err
	case '[':
		return s.array(t, path, depth)
	case '{':
		return s.object(t, path, depth)
	}
	// A number or literal: its syntax and type are checked by the decoding.
	start := s.i
	for s.i < len(s.b) && strings.IndexByte(",]} \t\n\r", s.b[s.i]) < 0 {
		s.i++
	}
	if s.i == start {
		return errNotJSON()
	}
	return nil
}

func (s *scanner) array(t reflect.Type, path string, depth int) error {
	s.i++ // [
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.value(elem, path+"[]", depth+1); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errNotJSON()
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errNotJSON()
		}
	}
}

func (s *scanner) object(t reflect.Type, path string, depth int) error {
	s.i++ // {
	var fields *shapeFields
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	var seen map[string]bool
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errNotJSON()
		}
		name, err := s.name()
		if err != nil {
			return err
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if seen[name] {
			return serialization("member %s appears more than once", truncate(memberPath(path, name), 128))
		}
		seen[name] = true
		ft := elem
		if fields != nil {
			var exact bool
			ft, exact = fields.byName[name]
			if !exact {
				if want, ok := fields.fold(name); ok {
					return serialization("member %s is not a member of this request: the member is spelled %s",
						truncate(memberPath(path, name), 128), memberPath(path, want))
				}
			}
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errNotJSON()
		}
		s.i++
		if err := s.value(ft, memberPath(path, name), depth+1); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errNotJSON()
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errNotJSON()
		}
	}
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
