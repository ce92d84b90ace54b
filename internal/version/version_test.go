package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	got := String("hsmctl", "v1.2.3")
	if !strings.HasPrefix(got, "hsmctl v1.2.3") || !strings.HasSuffix(got, "("+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")") {
		t.Errorf("String(hsmctl, v1.2.3) = %q", got)
	}
	// A test binary has no module version: without a linked version the
	// build is "devel".
	if got := String("hsmbrokerd", ""); !strings.HasPrefix(got, "hsmbrokerd devel") {
		t.Errorf("String(hsmbrokerd, \"\") = %q, want it to start with hsmbrokerd devel", got)
	}
}
