package cluster

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// firstSorted agrees with a full sort cut to k, for every k around the
// edges and in between, on ids in random order, with repeats and without.
func TestFirstSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 7, 64, 1000} {
		for _, distinct := range []int{n + 1, 3} {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("id-%05d", r.IntN(max(distinct, 1)))
			}
			want := slices.Sorted(slices.Values(ids))
			for _, k := range []int{-1, 0, 1, 2, n / 3, n - 1, n, n + 1} {
				got := firstSorted(slices.Clone(ids), k)
				w := want
				if k > 0 && k < n {
					w = want[:k]
				}
				if !slices.Equal(got, w) {
					t.Fatalf("n %d, %d distinct, k %d: %v, want %v", n, distinct, k, got, w)
				}
			}
		}
	}
}
