// Package strictjson refuses JSON documents that two readers could read
// differently. encoding/json matches an object member to a struct field
// whatever its letter case (Unicode case folding) and keeps the last of
// repeated members; a reader that compares names exactly, or keeps the
// first, sees another document. Check refuses, at any depth:
//
//   - a member repeated in an object (map keys included);
//   - a member whose name differs only in letter case from a field of the
//     Go struct the object is decoded into;
//   - null as the value of a map entry whose Go type cannot hold null (a
//     string, number, bool, list or map): encoding/json stores the zero
//     value under the name, so {"a": null} would read as {"a": ""} to one
//     reader and as "no a" to another;
//
// so that a document that passes has one reading, and decoding it with
// encoding/json gives that reading. Members a struct does not have are not
// refused (only checked for repeats).
package strictjson

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
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
//
// Check walks data's bytes once without copying its strings (a 4 KiB
// plaintext is a 5.5 KiB base64 string that Decoder.Token would unquote
// and copy only to throw it away). It accepts and refuses exactly what a
// walk with encoding/json's Decoder.Token does: the same syntax, a scalar
// read as Decoder.Token reads it into an any (a number beyond float64's
// range is refused), and member names compared after unquoting them as
// encoding/json does.
func Check(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	s := scanner{b: data}
	s.ws() // TrimSpace's white space includes JSON's: a byte is left.
	if s.b[s.i] != '{' {
		if s.b[s.i] == '[' || s.scalar() {
			return fail("", "the document must be one JSON object")
		}
		return s.invalid()
	}
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if err := s.object(t, 0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return fail("", "the document has data after its JSON object")
	}
	return nil
}

// scanner walks a document for Check.
type scanner struct {
	b []byte
	i int
	// path[:n] are the members and list elements from the document down
	// to the value being read; they become a string only for an error. A
	// value deeper than MaxDepth is refused before it is read, so there
	// are at most MaxDepth+1.
	path [MaxDepth + 2]step
	n    int
}

// step is a member name (decoded) or, elem, a list element.
type step struct {
	name []byte
	elem bool
}

func (s *scanner) pathString() string {
	var b []byte
	for _, st := range s.path[:s.n] {
		if st.elem {
			b = append(b, "[]"...)
			continue
		}
		if len(b) != 0 {
			b = append(b, '.')
		}
		b = append(b, st.name...)
	}
	return string(b)
}

func (s *scanner) push(st step) {
	s.path[s.n] = st
	s.n++
}

// invalid is the error for a syntax error in the value at s.path.
func (s *scanner) invalid() *Error {
	path := s.pathString()
	return fail(path, "the document is not valid JSON%s", where(path))
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

// value reads one value at depth whose Go type is t (nil: a member the
// type does not have). sep is the byte that must come first (':' after a
// member name, ',' between list elements), 0 for none. Like the Token
// walk, the depth is checked before anything is read.
func (s *scanner) value(t reflect.Type, depth int, sep byte) error {
	return s.valueIn(t, depth, sep, false)
}

// valueIn is value for a map entry's value when inMap is set.
func (s *scanner) valueIn(t reflect.Type, depth int, sep byte, inMap bool) error {
	if depth > MaxDepth {
		return fail(s.pathString(), "the document is nested more than %d levels deep", MaxDepth)
	}
	if sep != 0 {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != sep {
			return s.invalid()
		}
		s.i++
	}
	if inMap && !nullable(t) && s.nullValue() {
		at := s.pathString()
		return fail(at, "member %s is null; a value of this map must not be", truncate(at, 128))
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s.ws()
	if s.i >= len(s.b) {
		return s.invalid()
	}
	switch s.b[s.i] {
	case '{':
		return s.object(t, depth)
	case '[':
		return s.array(t, depth)
	}
	if !s.scalar() {
		return s.invalid()
	}
	return nil
}

// scalar reads a string, number or literal at s.i as Decoder.Token reads
// it, and reports whether it is one.
func (s *scanner) scalar() bool {
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

// nullValue reports whether the value at s.i is the literal null. Like
// Decoder.Token, it reads the literal whatever follows it. It moves
// nothing.
func (s *scanner) nullValue() bool {
	at := s.i
	s.ws()
	null := s.literal("null")
	s.i = at
	return null
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number reads a number (RFC 8259's grammar, up to its last byte: what
// follows is the caller's). Decoder.Token reads a number into a float64,
// so one beyond float64's range is refused.
func (s *scanner) number() bool {
	start := s.i
	digits := func() bool {
		n := s.i
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
		}
		return s.i > n
	}
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i >= len(s.b):
		return false
	case s.b[s.i] == '0':
		s.i++
	case !digits():
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !digits() {
			return false
		}
	}
	exp := false
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		exp = true
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !digits() {
			return false
		}
	}
	// Without an exponent, fewer than 300 digits are below 1e300.
	if exp || s.i-start >= 300 {
		if _, err := strconv.ParseFloat(string(s.b[start:s.i]), 64); err != nil {
			return false // out of range: the syntax is checked above
		}
	}
	return true
}

// strByte[c] is set for the bytes that end a run of plain string bytes:
// the quote, the backslash, control characters and bytes outside ASCII.
var strByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c < 0x20 || c == '"' || c == '\\' || c >= 0x80
	}
	return t
}()

// special8 reports whether any of the 8 bytes in x is one strByte marks
// (a bit test on the 8 at once: a byte outside ASCII sets its top bit; an
// ASCII byte below 0x20, or equal to '"' or '\\' after the XOR, borrows
// when 1 or 0x20 is taken from it).
func special8(x uint64) bool {
	const ones, tops = 0x0101010101010101, 0x8080808080808080
	q := x ^ ones*'"'
	bs := x ^ ones*'\\'
	return (x|(x-ones*0x20)&^x|(q-ones)&^q|(bs-ones)&^bs)&tops != 0
}

// str reads the string at s.i (an opening quote). plain means it has no
// escape and no byte outside ASCII, so its raw bytes (between the quotes)
// are its value.
func (s *scanner) str() (plain, ok bool) {
	s.i++
	plain = true
	b := s.b
	for i := s.i; i < len(b); {
		if i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
			continue
		}
		c := b[i]
		if !strByte[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return plain, true
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false, false
				}
				for _, h := range b[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false, false
					}
				}
				i += 6
			default:
				return false, false
			}
		case c < 0x20:
			return false, false
		default: // outside ASCII; invalid UTF-8 is read as U+FFFD
			plain = false
			i++
		}
	}
	return false, false
}

// name reads a member name at s.i and returns it as encoding/json decodes
// it: the raw bytes when they are plain, else unquoted (a copy).
func (s *scanner) name() ([]byte, bool) {
	open := s.i
	plain, ok := s.str()
	if !ok {
		return nil, false
	}
	if plain {
		return s.b[open+1 : s.i-1], true
	}
	var n string
	if err := json.Unmarshal(s.b[open:s.i], &n); err != nil {
		return nil, false
	}
	return []byte(n), true
}

// more reports whether a container has another element, as
// Decoder.More: the next byte is neither its end nor the document's.
func (s *scanner) more() bool {
	s.ws()
	return s.i < len(s.b) && s.b[s.i] != ']' && s.b[s.i] != '}'
}

// end reads a container's closing byte.
func (s *scanner) end(c byte) error {
	if s.i >= len(s.b) || s.b[s.i] != c {
		return s.invalid()
	}
	s.i++
	return nil
}

func (s *scanner) array(t reflect.Type, depth int) error {
	s.i++ // [
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	s.push(step{elem: true})
	for sep := byte(0); s.more(); sep = ',' {
		if err := s.value(elem, depth+1, sep); err != nil {
			return err
		}
	}
	s.n--
	return s.end(']')
}

func (s *scanner) object(t reflect.Type, depth int) error {
	s.i++ // {
	var fields *structFields
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	// The names seen so far: in a small list while there are few, then
	// in a map.
	var small [16][]byte
	seen := small[:0]
	var many map[string]bool
	for first := true; s.more(); first = false {
		if !first {
			if s.b[s.i] != ',' {
				return s.invalid()
			}
			s.i++
			s.ws()
		} else if s.b[s.i] == ',' {
			return s.invalid()
		}
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.invalid()
		}
		name, ok := s.name()
		if !ok {
			return s.invalid()
		}
		s.push(step{name: name})
		repeated := false
		if many != nil {
			repeated = many[string(name)]
			many[string(name)] = true
		} else {
			for _, n := range seen {
				if bytes.Equal(n, name) {
					repeated = true
					break
				}
			}
			if seen = append(seen, name); len(seen) > len(small) {
				many = make(map[string]bool, 2*len(seen))
				for _, n := range seen {
					many[string(n)] = true
				}
			}
		}
		if repeated {
			at := s.pathString()
			return fail(at, "member %s appears more than once", truncate(at, 128))
		}
		ft := elem
		if fields != nil {
			var exact bool
			ft, exact = fields.byName[string(name)]
			if !exact {
				if want, ok := fields.fold(string(name)); ok {
					at := s.pathString()
					s.n--
					return fail(at, "member %s is spelled %s", truncate(at, 128), memberPath(s.pathString(), want))
				}
			}
		}
		if err := s.valueIn(ft, depth+1, ':', elem != nil); err != nil {
			return err
		}
		s.n--
	}
	return s.end('}')
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// nullable reports whether a map entry's value of Go type t can be null
// and be read back as null: a pointer, an interface or a json.RawMessage.
// A nil t (a type Check does not know) counts as nullable.
func nullable(t reflect.Type) bool {
	return t == nil || t == rawMessage || t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface
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
