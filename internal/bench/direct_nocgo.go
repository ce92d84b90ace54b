//go:build !cgo

package bench

import (
	"context"
	"errors"
)

// directTarget needs cgo: the baseline loads a PKCS#11 library. Without
// it, a run that asks for the baseline is refused before anything starts.
type directTarget struct{}

// errNoBaseline refuses a run that asks for the baseline.
var errNoBaseline = errors.New("bench: this hsmctl was built without cgo; the direct PKCS#11 baseline (--baseline-direct) needs a cgo build")

func newDirectTarget(context.Context, Config, []byte) (*directTarget, error) {
	return nil, errNoBaseline
}

func (*directTarget) do(context.Context, int, Op, int) error { return nil }
func (*directTarget) close()                                 {}
