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
