package awskms

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"unicode"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/hsmbroker/hsmbroker/internal/strictjson"
)

// One reading of a request body. encoding/json matches an object member to
// a struct field whatever its letter case, and lets the last of repeated
// members win; a reader that compares names exactly, or keeps the first,
// would see a different request. So a body is decoded once, into the
// operation's typed request, and everything that looks at the request
// (authorization, the audit line, the operation) reads that one value.
// Before it is decoded, a body is refused if it could be read two ways
// (internal/strictjson): a member repeated in an object, at any depth
// (encryption context keys included), or a member whose name differs only
// in letter case from a member of the request shape (AWS's spelling is the
// only one accepted).
//
// Members the shape does not have at all are ignored, as AWS's JSON
// protocol servers ignore them (clients newer than this service may send
// them); since the check and the operation both read the decoded value,
// an ignored member is ignored by both.

// serialization is the answer to a body that cannot be read one way.
func serialization(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, excSerialization, fmt.Sprintf(format, args...)}
}

// decodeStrict decodes body into in (a pointer to a struct), after
// checking that it has one reading (strictjson.Check). An empty body is
// {}. Errors are SerializationExceptions naming the member.
func decodeStrict(body []byte, in any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := strictjson.Check(body, in); err != nil {
		return serialization("the request body cannot be read one way: %v", err)
	}
	if err := json.Unmarshal(body, in); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			name := netlimit.Truncate(memberName(te.Field), 64)
			if lo, hi, ok := intRange(te.Type); ok && strings.HasPrefix(te.Value, "number") {
				// A number, but not a whole one in the member's range
				// (2147483648 for an int32): its type is right, and the
				// message says what it must be. It is still refused while
				// the body is read, as AWS's protocol layer refuses it.
				return serialization("member %s must be a whole number from %d to %d", name, lo, hi)
			}
			return serialization("member %s has the wrong type (want %s)", name, jsonType(te.Type))
		}
		var be base64.CorruptInputError
		if errors.As(err, &be) {
			if names := binaryMembers(reflect.TypeOf(in)); len(names) > 0 {
				return serialization("member %s is not valid base64", strings.Join(names, " or "))
			}
		}
		return serialization("the request body is not a valid JSON object of this operation's members")
	}
	return nil
}

// intRange is the range of an integer member's Go type (through
// pointers), ok false for other types.
func intRange(t reflect.Type) (lo, hi int64, ok bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		bits := t.Bits()
		return -1 << (bits - 1), 1<<(bits-1) - 1, true
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return 0, 1<<t.Bits() - 1, true
	}
	return 0, 0, false
}

// memberName is a member's path as the request names it: encoding/json
// puts the Go names of embedded structs (such as dryRun) in the path,
// which no request has.
func memberName(field string) string {
	parts := strings.Split(field, ".")
	kept := parts[:0]
	for _, p := range parts {
		if p != "" && unicode.IsUpper(rune(p[0])) {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return field
	}
	return strings.Join(kept, ".")
}

// jsonType names a member's type as a JSON request carries it, not as Go
// declares it.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(jsonType(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object of " + strings.TrimPrefix(strings.TrimPrefix(jsonType(t.Elem()), "a "), "an ") + " values"
	case reflect.Pointer:
		return jsonType(t.Elem())
	case reflect.Struct:
		return "an object"
	}
	return "another type"
}

// binaryMembers lists the members of a request shape (a pointer to a
// struct) that carry base64: the candidates for a body whose base64 does
// not decode, which encoding/json does not name.
func binaryMembers(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			names = append(names, binaryMembers(f.Type)...)
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Uint8 && f.IsExported() {
			name := f.Name
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" && tag != "-" {
				name = tag
			}
			names = append(names, name)
		}
	}
	return names
}

// contextFields locates, in one request shape, the encryption contexts
// and key reference that authorization and the audit line need: the same
// maps the operation hands to the core. Fields are found by name, so every
// request shape with an EncryptionContext member is covered; they are
// found once per shape (contextFieldsOf, when the operation table is
// built), because looking them up by name on every request took about
// 1.5% of the daemon's CPU.
type contextFields struct {
	ec, src, dst []int   // index paths of the context maps, nil if absent
	keyRefs      [][]int // KeyId, TargetKeyId, DestinationKeyId: the first non-empty one
}

var (
	contextMapType = reflect.TypeFor[map[string]string]()
	stringType     = reflect.TypeFor[string]()
)

func contextFieldsOf(t reflect.Type) contextFields {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var c contextFields
	if t.Kind() != reflect.Struct {
		return c
	}
	field := func(name string, typ reflect.Type) []int {
		f, ok := t.FieldByName(name)
		if !ok || !f.IsExported() || f.Type != typ {
			return nil
		}
		return f.Index
	}
	c.ec = field("EncryptionContext", contextMapType)
	c.src = field("SourceEncryptionContext", contextMapType)
	c.dst = field("DestinationEncryptionContext", contextMapType)
	for _, name := range []string{"KeyId", "TargetKeyId", "DestinationKeyId"} {
		if i := field(name, stringType); i != nil {
			c.keyRefs = append(c.keyRefs, i)
		}
	}
	return c
}

// of reads the fields out of in, a pointer to the shape they were found in.
func (c contextFields) of(in any) broker.RequestContexts {
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
	ctxMap := func(i []int) map[string]string {
		if i == nil {
			return nil
		}
		m, _ := v.FieldByIndex(i).Interface().(map[string]string)
		return m
	}
	r := broker.RequestContexts{EncryptionContext: ctxMap(c.ec), Source: ctxMap(c.src), Destination: ctxMap(c.dst)}
	for _, i := range c.keyRefs {
		if s := v.FieldByIndex(i).String(); s != "" {
			r.KeyRef = s
			break
		}
	}
	if len(r.KeyRef) > 2048 {
		r.KeyRef = r.KeyRef[:2048]
	}
	return r
}
