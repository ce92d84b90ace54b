package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxPolicySize is the largest key policy, in bytes, as in AWS KMS.
const MaxPolicySize = 32 << 10

// ErrPolicyRequired is CheckPolicy's answer to an empty policy.
var ErrPolicyRequired = errors.New("authz: a key policy is required")

// PolicyError says why a document is not a key policy this service can
// evaluate. Its message names the part at fault and never repeats more
// of the document than that part's name.
type PolicyError struct {
	Reason string
}

func (e *PolicyError) Error() string { return e.Reason }

func malformed(format string, args ...any) error {
	return &PolicyError{Reason: fmt.Sprintf(format, args...)}
}

// CheckPolicy checks that policy can be put on a key: at most
// MaxPolicySize bytes of UTF-8, one JSON object with a Statement, and
// statements this service can evaluate (ParsePolicy). It answers
// ErrPolicyRequired for an empty document and a *PolicyError otherwise.
func CheckPolicy(policy string) error {
	switch {
	case policy == "":
		return ErrPolicyRequired
	case len(policy) > MaxPolicySize:
		return malformed("the key policy is %d bytes; the limit is %d", len(policy), MaxPolicySize)
	case !utf8.ValidString(policy):
		return malformed("the key policy is not valid UTF-8")
	}
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(policy))
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return malformed("the key policy is not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("the key policy has data after its JSON object")
	}
	st := bytes.TrimSpace(doc["Statement"])
	if len(st) == 0 || (st[0] != '[' && st[0] != '{') {
		return malformed("the key policy has no Statement")
	}
	if _, err := ParsePolicy(policy); err != nil {
		return malformed("%v", err)
	}
	return nil
}
