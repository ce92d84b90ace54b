package keys

import (
	"errors"
	"testing"
)

func TestParseKeyID(t *testing.T) {
	want := [KeyIDSize]byte{0x12, 0x34, 0xab, 0xcd, 0x12, 0xab, 0x34, 0xcd, 0x56, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xab}
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"canonical", "1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"upper case", "1234ABCD-12AB-34CD-56EF-1234567890AB", true},
		{"empty", "", false},
		{"no hyphens", "1234abcd12ab34cd56ef1234567890ab", false},
		{"braces", "{1234abcd-12ab-34cd-56ef-1234567890ab}", false},
		{"hyphen moved", "1234abc-d12ab-34cd-56ef-1234567890ab", false},
		{"non-hex", "1234abcg-12ab-34cd-56ef-1234567890ab", false},
		{"non-hex last", "1234abcd-12ab-34cd-56ef-1234567890az", false},
		{"short", "1234abcd-12ab-34cd-56ef-1234567890a", false},
		{"long", "1234abcd-12ab-34cd-56ef-1234567890abc", false},
		{"urn", "urn:uuid:1234abcd-12ab-34cd-56ef-12345", false},
		{"hyphen in group", "1234abcd-12ab-34cd-56ef-12345678-0ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyID(tt.in)
			if !tt.ok {
				checkErr(t, err, ErrInvalidArgument, "KeyId")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("ParseKeyID = %x, want %x", got, want)
			}
			if s := FormatKeyID(got); s != "1234abcd-12ab-34cd-56ef-1234567890ab" {
				t.Errorf("FormatKeyID = %q", s)
			}
		})
	}
}

func TestNewKeyID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := NewKeyID()
		id, err := ParseKeyID(s)
		if err != nil {
			t.Fatalf("NewKeyID() = %q: %v", s, err)
		}
		if FormatKeyID(id) != s {
			t.Fatalf("NewKeyID() = %q is not canonical", s)
		}
		if id[6]>>4 != 4 || id[8]>>6 != 2 {
			t.Fatalf("NewKeyID() = %q is not an RFC 9562 version 4 UUID", s)
		}
		if seen[s] {
			t.Fatalf("NewKeyID() repeated %q", s)
		}
		seen[s] = true
	}
}

func TestParseKeyIDErrorIsFresh(t *testing.T) {
	_, err1 := ParseKeyID("x")
	var fe *FieldError
	if !errors.As(err1, &fe) {
		t.Fatal("not a FieldError")
	}
	fe.Problem = "changed"
	_, err2 := ParseKeyID("x")
	if err2.Error() == err1.Error() {
		t.Fatal("ParseKeyID returns a shared, mutable error")
	}
}
