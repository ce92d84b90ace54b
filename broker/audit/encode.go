package audit

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends r as encoding/json's Marshal encodes it, byte for
// byte (same member order, omitempty, string escaping, sorted context
// keys and RFC 3339 time), without reflection: a line is written for every
// request, and json.Marshal was most of the cost of encoding one.
// FuzzAppendRecordSameAsMarshal holds the two to the same bytes. ok is
// false for a time Marshal refuses (a year outside 0-9999); encode then
// lets Marshal give the error.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	if y := r.Time.Year(); y < 0 || y > 9999 {
		return b, false
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendMember(b, "node", r.Node)
	b = appendMember(b, "front", r.Front)
	b = appendMember(b, "request_id", r.RequestID)
	if r.Peer != "" {
		b = appendMember(b, "peer", r.Peer)
	}
	b = appendMember(b, "principal", r.Principal)
	if r.Role != "" {
		b = appendMember(b, "role", r.Role)
	}
	b = appendMember(b, "operation", r.Operation)
	if r.KeyID != "" {
		b = appendMember(b, "key_id", r.KeyID)
	}
	if len(r.KeyIDs) > 0 {
		b = append(b, `,"key_ids":[`...)
		for i, id := range r.KeyIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, ']')
	}
	if r.KeyRef != "" {
		b = appendMember(b, "key_ref", r.KeyRef)
	}
	if len(r.EncryptionContext) > 0 {
		b = append(b, `,"encryption_context":{`...)
		ks := make([]string, 0, len(r.EncryptionContext))
		for k := range r.EncryptionContext {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		for i, k := range ks {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, r.EncryptionContext[k])
		}
		b = append(b, '}')
	}
	if r.ContextOmitted != "" {
		b = appendMember(b, "encryption_context_omitted", r.ContextOmitted)
	}
	b = appendMember(b, "decision", r.Decision)
	if r.Reason != "" {
		b = appendMember(b, "reason", r.Reason)
	}
	b = appendMember(b, "result", r.Result)
	b = appendMember(b, "code", r.Code)
	if r.Intent != 0 {
		b = append(b, `,"intent":`...)
		b = strconv.AppendUint(b, r.Intent, 10)
	}
	if r.Segment != "" {
		b = appendMember(b, "segment", r.Segment)
	}
	b = appendMember(b, "prev", r.Prev)
	return append(b, '}'), true
}

// appendMember appends ,"name":"value"; name needs no escaping.
func appendMember(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does:
// <, > and & escaped for HTML, invalid UTF-8 replaced by U+FFFD, U+2028
// and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
