package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hsmbroker/hsmbroker/keys"
)

// MaxLine is the most bytes one audit line may have, its newline included.
// It is the one limit the writer (Append), a restart (Open) and Verify all
// apply: Append never writes a longer line, and Open and Verify call a
// longer line broken. It holds every field at its bound (maxField) and the
// largest valid encryption context even when JSON escapes every byte of it
// six-fold.
const MaxLine = 128 << 10

// maxField bounds each string a request can put into a line (principal,
// request id, key reference, reason, ...); maxKeyIDs bounds KeyIDs.
const (
	maxField  = 512
	maxKeyIDs = 8
)

// bound makes r fit in one line: every string longer than maxField is cut
// and marked (with its length and SHA-256, so that two lines can still be
// compared), and an encryption context that is no valid context (more
// pairs or bytes than AWS allows, keys.ValidateContext) is replaced by a
// description of it. A request can therefore never make its line longer
// than MaxLine, however large what it sent.
func bound(r *Record) {
	for _, s := range []*string{&r.Node, &r.Front, &r.RequestID, &r.Peer, &r.Principal, &r.Role, &r.Operation,
		&r.KeyID, &r.KeyRef, &r.Decision, &r.Reason, &r.Result, &r.Code, &r.Segment} {
		*s = truncate(shown(*s))
	}
	if len(r.KeyIDs) > maxKeyIDs {
		r.KeyIDs = append(r.KeyIDs[:maxKeyIDs:maxKeyIDs], fmt.Sprintf("[%d more key ids]", len(r.KeyIDs)-maxKeyIDs))
	}
	for i := range r.KeyIDs {
		r.KeyIDs[i] = truncate(r.KeyIDs[i])
	}
	if r.EncryptionContext != nil {
		if err := keys.ValidateContext(r.EncryptionContext); err != nil {
			omitContext(r, err.Error())
		}
	}
}

// omitContext replaces r's encryption context by what it was: its number
// of pairs, its size and its SHA-256 (of the canonical encoding, or of the
// pairs in key order when it has no valid encoding), and why it is not in
// the line.
func omitContext(r *Record, why string) {
	ec := r.EncryptionContext
	h := sha256.New()
	size := 0
	for _, k := range slices.Sorted(maps.Keys(ec)) {
		v := ec[k]
		size += len(k) + len(v)
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(v), v)
	}
	r.EncryptionContext = nil
	r.ContextOmitted = truncate(fmt.Sprintf("%s; %d pairs, %d bytes, sha256 %s", why, len(ec), size, hex.EncodeToString(h.Sum(nil))))
}

// shown is s with every character that acts on a terminal instead of
// being shown, other than those JSON escapes itself (C0), written as its
// \uXXXX escape: DEL, the C1 controls (U+009B starts an escape sequence)
// and the bidirectional formatting characters (U+202E shows what follows
// reversed, keys.IsDisplayControl). Audit lines are read with less, grep
// and jq on terminals, and a key reference or a method name is the
// caller's text.
func shown(s string) string {
	i := 0
	for i < len(s) && s[i] < 0x7f {
		i++
	}
	if i == len(s) || !strings.ContainsFunc(s[i:], isShownEscaped) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		if isShownEscaped(r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isShownEscaped(r rune) bool { return r >= 0x7f && keys.IsDisplayControl(r) }

// truncate cuts s to at most maxField bytes (at a character boundary) and
// marks the cut with the original length and SHA-256.
func truncate(s string) string {
	if len(s) <= maxField {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	mark := fmt.Sprintf("...[truncated: %d bytes, sha256 %s]", len(s), hex.EncodeToString(sum[:]))
	n := maxField - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}
