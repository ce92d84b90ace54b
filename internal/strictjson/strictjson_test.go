package strictjson

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

type inner struct {
	Name string `json:"name"`
}

type outer struct {
	ID    string
	Inner *inner
	List  []inner
	Map   map[string]string
	Raw   json.RawMessage
	Skip  string `json:"-"`
	embedded
}

type embedded struct {
	Tokens []string
}

func TestCheck(t *testing.T) {
	tests := []struct {
		doc    string
		ok     bool
		member string // of the error
	}{
		{``, true, ""},
		{`{"ID":"a","Inner":{"name":"n"},"List":[{"name":"x"}],"Map":{"k":"v"},"Raw":{"x":1},"Tokens":[],"Other":{"a":[1]}}`, true, ""},
		{`{"skip":"x","Skip":"y"}`, true, ""}, // json:"-" is no member
		{`{"id":"a"}`, false, "id"},
		{`{"ID":"a","ID":"b"}`, false, "ID"},
		{`{"Inner":{"Name":"n"}}`, false, "Inner.Name"},
		{`{"List":[{"name":"x","NAME":"y"}]}`, false, "List[].NAME"},
		{`{"Map":{"k":"1","k":"2"}}`, false, "Map.k"},
		{`{"Raw":{"x":1,"x":2}}`, false, "Raw.x"},
		{`{"tokens":[]}`, false, "tokens"},
		{`{"Other":{"a":1,"a":2}}`, false, "Other.a"},
		{`[1]`, false, ""},
		{`{} {}`, false, ""},
		{`{"ID":`, false, "ID"},
		{`{"Map":{"k":null}}`, false, "Map.k"},
		{`{"Map":{"a":"1", "k" : null }}`, false, "Map.k"},
		{`{"Map":{"k":nullx}}`, false, "Map.k"}, // the null is read first, as Decoder.Token reads it
		{`{"Map":null,"ID":null,"Inner":null,"List":[null]}`, true, ""},
		{`{"Other":{"k":null},"Raw":{"k":null}}`, true, ""}, // no Go type, and raw JSON
	}
	for _, tt := range tests {
		err := Check([]byte(tt.doc), &outer{})
		if tt.ok {
			if err != nil {
				t.Errorf("%s: refused: %v", tt.doc, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Member != tt.member || !strings.Contains(e.Error(), tt.member) {
			t.Errorf("%s: %v; want an error naming %q", tt.doc, err, tt.member)
		}
	}
}

// TestSpecial8: the 8-byte test finds exactly the bytes the byte table
// marks, wherever they are among the 8 and whatever surrounds them.
func TestSpecial8(t *testing.T) {
	word := func(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			for _, fill := range []byte{'A', 0x21, 0x7f, '!', '#', '[', ']', 0} {
				b := bytes.Repeat([]byte{fill}, 8)
				b[pos] = byte(c)
				want := slices.ContainsFunc(b, func(x byte) bool { return strByte[x] })
				if got := special8(word(b)); got != want {
					t.Fatalf("%q: special8 %v, want %v", b, got, want)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1 << 20 {
		x := r.Uint64()
		if i%2 == 0 {
			x &= 0x7f7f7f7f7f7f7f7f // ASCII only: the borrows decide
		}
		b := binary.LittleEndian.AppendUint64(nil, x)
		want := slices.ContainsFunc(b, func(x byte) bool { return strByte[x] })
		if got := special8(x); got != want {
			t.Fatalf("%q: special8 %v, want %v", b, got, want)
		}
	}
}
