package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// readable rewrites the YAML decoder's errors, which speak of Go types
// ("cannot unmarshal !!int `5` into time.Duration", "field x not found in
// type config.Raft"), in the configuration's own terms: the setting, where
// it is, and what it should be. data is the document, to find the setting
// a line holds.
func readable(err error, data []byte) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = readableLine(m, data)
	}
	return errors.New(strings.Join(msgs, "; "))
}

var (
	lineRe      = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRe   = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	unmarshalRe = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
)

func readableLine(m string, data []byte) string {
	sm := lineRe.FindStringSubmatch(m)
	if sm == nil {
		return m
	}
	line, rest := sm[1], sm[2]
	if u := unknownRe.FindStringSubmatch(rest); u != nil {
		where := ""
		if s := sectionsOf(reflect.TypeFor[Config](), "")[u[2]]; s != "" {
			where = " under " + s
		}
		return fmt.Sprintf("line %s: unknown setting %q%s (deploy/hsmbrokerd.example.yaml lists every setting)", line, u[1], where)
	}
	u := unmarshalRe.FindStringSubmatch(rest)
	if u == nil {
		return m
	}
	tag, value, goType := u[1], u[2], u[3]
	if goType == "config.Config" {
		return fmt.Sprintf("line %s: the configuration must be a mapping of settings (key: value), not a %s", line, yamlKind(tag))
	}
	n, _ := strconv.Atoi(line)
	key := keyOnLine(data, n, value)
	if strings.HasSuffix(value, "...") && key != "" {
		// The decoder shortens values; the line has it whole.
		value = wholeValue(data, n, strings.TrimSuffix(key, ": "), value)
	}
	got := "a " + yamlKind(tag)
	if value != "" {
		got = strconv.Quote(value)
	}
	return fmt.Sprintf("line %s: %s%s is not %s", line, key, got, wantKind(goType))
}

// keyOnLine is the setting line n (1-based) of data gives value to, with
// ": " after it, or "" if it cannot be told: the key before value in a
// flow mapping ("hsm: {call_timeout: 5}"), else the line's first key.
func keyOnLine(data []byte, n int, value string) string {
	lines := bytes.Split(data, []byte("\n"))
	if n < 1 || n > len(lines) {
		return ""
	}
	l := string(lines[n-1])
	if value != "" {
		if m := regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*:\s*` + regexp.QuoteMeta(value) + `\s*(?:[,}\]#]|$)`).FindStringSubmatch(l); m != nil {
			return m[1] + ": "
		}
	}
	if k, _, ok := strings.Cut(strings.TrimLeft(strings.TrimSpace(l), "- "), ":"); ok && k != "" && !strings.ContainsAny(k, " {[") {
		return k + ": "
	}
	return ""
}

// wholeValue is the value of key on line n (1-based) of data, for a value
// the decoder shortened to short; short if it cannot be told.
func wholeValue(data []byte, n int, key, short string) string {
	lines := bytes.Split(data, []byte("\n"))
	if n < 1 || n > len(lines) {
		return short
	}
	_, v, ok := strings.Cut(string(lines[n-1]), key+":")
	v, _, _ = strings.Cut(v, " #")
	if v = strings.Trim(strings.TrimSpace(v), `"'`); !ok || v == "" || !strings.HasPrefix(v, strings.TrimSuffix(short, "...")) {
		return short
	}
	return v
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "string"
	case "seq":
		return "list"
	case "map":
		return "mapping"
	case "int", "float":
		return "number"
	case "bool":
		return "boolean"
	}
	return tag
}

func wantKind(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration with a unit, such as 5s or 500ms"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "config."):
		return "a mapping (key: value)"
	}
	return "of type " + goType
}

// sectionsOf maps the Go names of Config's nested sections to their YAML
// paths ("Raft" to "raft", "XKS" to "kms.xks").
func sectionsOf(t reflect.Type, prefix string) map[string]string {
	out := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Struct || f.Type.PkgPath() != t.PkgPath() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		out[f.Type.Name()] = path
		for k, v := range sectionsOf(f.Type, path+".") {
			out[k] = v
		}
	}
	return out
}
