// Package strictjson refuses JSON documents that two readers could read
// differently. encoding/json matches an object member to a struct field
// whatever its letter case (Unicode case folding) and keeps the last of
// repeated members; a reader that compares names exactly, or keeps the
// first, sees another document. Check refuses, at any depth:
//
//   - a member repeated in an object (map keys included);
//   - a member whose name differs only in letter case from a field of the
//     Go struct the object is decoded into;
//
// so that a document that passes has one reading, and decoding it with
// encoding/json gives that reading. Members a struct does not have are not
// refused (only checked for repeats).
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// MaxDepth bounds the nesting of a document.
const MaxDepth = 32

// Error is a document Check refuses. Member is the path of the member at
// fault ("Constraints.EncryptionContextSubset", "Tags[].TagKey"), "" when
// the document as a whole is at fault.
type Error struct {
	Member string
	msg    string
}

func (e *Error) Error() string { return e.msg }

func fail(member, format string, args ...any) *Error {
	return &Error{Member: member, msg: fmt.Sprintf(format, args...)}
}

// Check checks that data is one JSON object with one reading when decoded
// into v (a pointer to a struct, or any value of the Go type data will be
// decoded into). An empty document (only white space) passes.
func Check(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := checkValue(dec, reflect.TypeOf(v), "", 0, true); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fail("", "the document has data after its JSON object")
	}
	return nil
}

// checkValue reads one JSON value from dec, whose Go type is t (nil: a
// member the type does not have).
func checkValue(dec *json.Decoder, t reflect.Type, path string, depth int, top bool) error {
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
	d, ok := tok.(json.Delim)
	if top && (!ok || d != '{') {
		return fail("", "the document must be one JSON object")
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
			if err := checkValue(dec, ft, at, depth+1, false); err != nil {
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

func where(path string) string {
	if path == "" {
		return ""
	}
	return " at member " + truncate(path, 128)
}

func memberPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// structFields are the JSON member names of a struct, as encoding/json
// names them (embedded structs' members included), with their types.
type structFields struct {
	byName map[string]reflect.Type
	names  []string
}

// fold finds the member name that matches name as encoding/json matches
// names (Unicode case folding, as strings.EqualFold: the Kelvin sign is a
// k, the long s an s).
func (f *structFields) fold(name string) (string, bool) {
	for _, n := range f.names {
		if strings.EqualFold(n, name) {
			return n, true
		}
	}
	return "", false
}

var cache sync.Map // reflect.Type -> *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := cache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{byName: map[string]reflect.Type{}}
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
	cache.Store(t, f)
	return f
}
