package main

import (
	"strings"
	"testing"
)

// TestTextOutputEscapesDisplayControls: a value holding a character that
// a terminal acts on (an ESC or C1 CSI sequence, a carriage return, a
// tab that would break the columns, a right-to-left override) is printed
// as its escape, in both the field and the table layout; other text,
// right-to-left scripts included, is printed as it is.
func TestTextOutputEscapesDisplayControls(t *testing.T) {
	evil := "safe\x1b[2J\u009b1;31mEVIL\u202egnp.exe\r\tend"
	want := `safe\x1b[2J\u009b1;31mEVIL\u202egnp.exe\r\tend`
	var b strings.Builder
	if err := fields(&b, "Description", evil, "Tags", "team=מפתח"); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); !strings.Contains(got, want) || !strings.Contains(got, "team=מפתח") || strings.ContainsAny(got, "\x1b\u009b\u202e\r") {
		t.Fatalf("fields printed %q", got)
	}
	b.Reset()
	if err := table(&b, []string{"ID", "DESCRIPTION"}, [][]string{{"k1", evil}}); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); !strings.Contains(got, want) || strings.ContainsAny(got, "\x1b\u009b\u202e\r") {
		t.Fatalf("table printed %q", got)
	}
}
