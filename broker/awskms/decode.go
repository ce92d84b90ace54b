package awskms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"

	"github.com/hsmbroker/hsmbroker/broker"
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
			return serialization("member %s has the wrong type (want %s)", truncate(te.Field, 64), te.Type)
		}
		return serialization("the request body is not a valid JSON object of this operation's members")
	}
	return nil
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
