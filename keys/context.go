package keys

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"
)

// EncryptionContext is the AWS KMS encryption context: non-secret key-value
// pairs bound to a ciphertext as AAD. Decrypt must be given the same pairs.
type EncryptionContext map[string]string

// Limits on an encryption context.
const (
	MaxContextPairs = 64
	MaxContextSize  = 8192 // bytes of EncodeContext output
)

// EncodeContext returns the canonical encoding of ctx, the part of the AAD
// that binds the context to a ciphertext. An empty or nil context encodes to
// zero bytes (nil), so a blob encrypted without a context has the header alone as
// AAD. Otherwise:
//
//	uint32 big-endian  number of pairs, 1 or more
//	then, for each pair in increasing byte order of key:
//	uint32 big-endian  len(key)
//	                   key
//	uint32 big-endian  len(value)
//	                   value
//
// The length prefixes make the encoding injective: no two contexts share
// bytes, whatever characters their keys and values hold. Each context has
// exactly one encoding; DecodeContext accepts only that one.
func EncodeContext(ctx EncryptionContext) []byte {
	if len(ctx) == 0 {
		return nil
	}
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	slices.Sort(keys) // string order is byte order
	b := make([]byte, 0, encodedContextSize(ctx))
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		v := ctx[k]
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// encodedContextSize is len(EncodeContext(ctx)) without building it.
func encodedContextSize(ctx EncryptionContext) int {
	if len(ctx) == 0 {
		return 0
	}
	size := 4
	for k, v := range ctx {
		size += 8 + len(k) + len(v)
	}
	return size
}

// DecodeContext is the inverse of EncodeContext, and strict: it accepts only
// canonical encodings of contexts that pass ValidateContext, so whatever it
// accepts re-encodes to the same bytes. Zero bytes decode to a nil context.
// Errors are *FieldError for the field "EncryptionContext".
func DecodeContext(b []byte) (EncryptionContext, error) {
	if len(b) == 0 {
		return nil, nil
	}
	bad := func(format string, args ...any) (EncryptionContext, error) {
		return nil, fieldError("EncryptionContext", "malformed encoding: "+format, args...)
	}
	if len(b) > MaxContextSize {
		return bad("%d bytes, more than %d", len(b), MaxContextSize)
	}
	if len(b) < 4 {
		return bad("truncated pair count")
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	switch {
	case n == 0:
		return bad("zero pairs (an empty context encodes to zero bytes)")
	case n > MaxContextPairs:
		return bad("%d pairs, more than %d", n, MaxContextPairs)
	}
	ctx := make(EncryptionContext, n)
	var prev string
	for i := range int(n) {
		k, rest, ok := cutLengthPrefixed(b)
		if !ok {
			return bad("pair %d: key runs past the end", i)
		}
		v, rest, ok := cutLengthPrefixed(rest)
		if !ok {
			return bad("pair %d: value runs past the end", i)
		}
		b = rest
		if i > 0 && k <= prev {
			return bad("pair %d: keys not in strictly increasing byte order", i)
		}
		prev = k
		if p := contextPairProblem(k, v); p != "" {
			return bad("pair %d: %s", i, p)
		}
		ctx[k] = v
	}
	if len(b) != 0 {
		return bad("%d bytes after the last pair", len(b))
	}
	return ctx, nil
}

// cutLengthPrefixed splits a uint32 big-endian length and that many bytes
// off the front of b.
func cutLengthPrefixed(b []byte) (field string, rest []byte, ok bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return "", nil, false
	}
	return string(b[:n]), b[n:], true
}

// ValidateContext checks an encryption context: at most MaxContextPairs
// pairs, keys non-empty, keys and values valid UTF-8 (values may be empty),
// and at most MaxContextSize bytes once encoded. Errors are *FieldError for
// the field "EncryptionContext" and do not repeat the pairs.
func ValidateContext(ctx EncryptionContext) error {
	const field = "EncryptionContext"
	if len(ctx) > MaxContextPairs {
		return fieldError(field, "must have at most %d pairs, got %d", MaxContextPairs, len(ctx))
	}
	if size := encodedContextSize(ctx); size > MaxContextSize {
		return fieldError(field, "must be at most %d bytes encoded, got %d", MaxContextSize, size)
	}
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same pair on every call
	for _, k := range keys {
		if p := contextPairProblem(k, ctx[k]); p != "" {
			return fieldError(field, "%s", p)
		}
	}
	return nil
}

func contextPairProblem(k, v string) string {
	switch {
	case k == "":
		return "keys must not be empty"
	case !utf8.ValidString(k):
		return "keys must be valid UTF-8"
	case !utf8.ValidString(v):
		return "values must be valid UTF-8"
	}
	return ""
}
