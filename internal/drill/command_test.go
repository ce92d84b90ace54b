package drill

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	tests := []struct {
		name, tmpl string
		node       Node
		want       string
		wantErr    string
	}{
		{"id", "kill {node}", Node{ID: "node2", Addr: "127.0.0.1:7420"}, "kill node2", ""},
		{"number and address", "x {n} {addr}", Node{ID: "node12", Addr: "[::1]:7420"}, "x 12 [::1]:7420", ""},
		{"no number", "x {n}", Node{ID: "alpha"}, "", "ends with no number"},
		{"unsafe id", "x {node}", Node{ID: "a;rm -rf /"}, "", "not safe"},
		{"unsafe address", "x {addr}", Node{ID: "n1", Addr: "$(reboot)"}, "", "not safe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.tmpl, tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Expand = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Expand = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// A command runs through sh with the node substituted; a failing one
// reports its exit status and output.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	a, err := Command("touch "+dir+"/{node}.down", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a(context.Background(), Node{ID: "node3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node3.down")); err != nil {
		t.Fatalf("the command did not run: %v", err)
	}
	fail, err := Command("echo cannot reach {node} >&2; exit 3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fail(context.Background(), Node{ID: "node1"}); err == nil || !strings.Contains(err.Error(), "exit status 3") ||
		!strings.Contains(err.Error(), "cannot reach node1") {
		t.Fatalf("failing command: %v", err)
	}
	if _, err := Command("reboot", nil); err == nil {
		t.Fatal("a template naming no node was accepted")
	}
}
