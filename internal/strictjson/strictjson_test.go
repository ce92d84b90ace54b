package strictjson

import (
	"encoding/json"
	"errors"
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
