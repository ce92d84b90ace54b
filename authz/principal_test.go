package authz

import (
	"strings"
	"testing"
)

func TestNewPrincipalProblem(t *testing.T) {
	for _, ok := range []string{"app", "app-1", "mariadb@db1.example", "svc.payments_2", "Élodie", "a:b/c=d,e+f",
		strings.Repeat("x", MaxPrincipalName)} {
		if p := NewPrincipalProblem(ok); p != "" {
			t.Errorf("%q refused: %s", ok, p)
		}
	}
	for name, want := range map[string]string{
		"":                                      "required",
		strings.Repeat("x", MaxPrincipalName+1): "at most 256 bytes",
		"bad name":                              "spaces",
		" lead":                                 "spaces",
		"tab\tname":                             "spaces",
		"no\u00a0break":                         "spaces",
		"nul\x00":                               "control",
		"bell\x07":                              "control",
		"del\x7f":                               "control",
		"next\u0085line":                        "spaces",
		"csi\u009b2J":                           "control",
		"p\u202e":                               "formatting",
		"iso\u2066late":                         "formatting",
		"zero\u200bwidth":                       "formatting",
		"bom\ufeff":                             "formatting",
		"\xff\xfe":                              "UTF-8",
		"*":                                     "ARN",
		"arn:aws:iam::000000000000:user/app":    "ARN",
	} {
		if p := NewPrincipalProblem(name); !strings.Contains(p, want) {
			t.Errorf("%q: problem %q, want one mentioning %q", name, p, want)
		}
	}
}
