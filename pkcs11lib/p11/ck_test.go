package p11

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const header = "/usr/include/p11-kit-1/p11-kit/pkcs11.h"

// TestConstantsMatchHeader checks every constant of ck.go against the
// PKCS#11 header the C layer is compiled with.
func TestConstantsMatchHeader(t *testing.T) {
	h, err := os.ReadFile(header)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing (apt-get install libp11-kit-dev): %v", header, err)
		}
		t.Skipf("%s missing (apt-get install libp11-kit-dev)", header)
	}
	src, err := os.ReadFile("ck.go")
	if err != nil {
		t.Fatal(err)
	}
	def := regexp.MustCompile(`(?m)^#define\s+(\w+)\s+\(?([0-9a-fA-Fx]+)UL\)?\s*$`)
	shift := regexp.MustCompile(`(?m)^#define\s+(\w+)\s+\(1UL << (\d+)\)`)
	want := map[string]uint64{}
	for _, m := range def.FindAllStringSubmatch(string(h), -1) {
		v, err := strconv.ParseUint(m[2], 0, 64)
		if err == nil {
			want[m[1]] = v
		}
	}
	for _, m := range shift.FindAllStringSubmatch(string(h), -1) {
		n, _ := strconv.Atoi(m[2])
		want[m[1]] = 1 << n
	}
	line := regexp.MustCompile(`(?m)^\t(CK\w+)\s+=\s+(.+)$`)
	n := 0
	for _, m := range line.FindAllStringSubmatch(string(src), -1) {
		expr := strings.Trim(strings.TrimSpace(m[2]), "()")
		var got uint64
		if a, b, ok := strings.Cut(expr, " << "); ok {
			x, _ := strconv.ParseUint(a, 0, 64)
			y, _ := strconv.Atoi(b)
			got = x << y
		} else if v, err := strconv.ParseUint(expr, 0, 64); err == nil {
			got = v
		} else {
			continue
		}
		w, ok := want[m[1]]
		if !ok {
			continue
		}
		n++
		if got != w {
			t.Errorf("%s = %#x, header says %#x", m[1], got, w)
		}
	}
	if n < 100 {
		t.Fatalf("only %d constants compared", n)
	}
}
