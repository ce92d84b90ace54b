package authz

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPrincipalName is the longest principal name, in bytes.
const MaxPrincipalName = 256

// NewPrincipalProblem says what is wrong with name as the name of a new
// principal (a client certificate, an access key, a TDE token, a role
// record), or "" if nothing is. A name is 1 to MaxPrincipalName bytes of
// UTF-8 with no white space, control or format character, and is neither
// "*" nor an ARN: key policies and grants name principals as NAME or
// arn:aws:iam::ACCOUNT:user/NAME, and hsmctl prints them in columns.
//
// Names are checked where they are made, not where they are used: a
// principal named before this rule keeps working, and its role record can
// still be deleted (docs/SECURITY.md, "Principal names").
func NewPrincipalProblem(name string) string {
	switch {
	case name == "":
		return "is required"
	case len(name) > MaxPrincipalName:
		return "must be at most 256 bytes"
	case !utf8.ValidString(name):
		return "must be UTF-8"
	case strings.ContainsFunc(name, func(r rune) bool {
		// Format characters (Cf) show nothing or reorder what follows
		// (U+202E), so two names could look alike or one look like another.
		return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
	}):
		return "must not contain spaces, control characters or invisible formatting characters (such as U+202E)"
	case name == "*" || strings.HasPrefix(name, "arn:"):
		return "must be a plain name, not \"*\" or an ARN"
	}
	return ""
}
