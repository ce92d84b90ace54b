// Package version says which build of a program is running, for the
// `version` commands of hsmbrokerd and hsmctl.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is "PROGRAM VERSION [REVISION] (GO OS/ARCH)". linked is the
// version set at link time (-ldflags "-X main.version=v1.2.3"); when it is
// empty the module version from the build info is used (go install
// ...@v1.2.3), and "devel" when there is none. REVISION is the first 12
// characters of the VCS revision the build info records, if any.
func String(program, linked string) string {
	v, rev := linked, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	if rev != "" {
		v += " " + rev
	}
	return fmt.Sprintf("%s %s (%s %s/%s)", program, v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
