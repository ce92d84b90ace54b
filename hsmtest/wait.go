package hsmtest

import (
	"testing"
	"time"
)

// WaitUntil polls cond every few milliseconds until it holds, failing the
// test if it does not within the given time. what names the condition in
// the failure.
func WaitUntil(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}
