package cluster

import "slices"

// firstSorted returns the k smallest of ids in order (all of them when k
// <= 0 or k >= len(ids)), reusing and reordering ids. A page of k out of n
// ids costs n comparisons and a few heap updates for each id that enters
// the page (about k·ln(n/k) of them for ids in map order), instead of a
// sort of all n: with 100,000 keys, pages of 1,000 are about ten times
// cheaper than sorting every id.
func firstSorted(ids []string, k int) []string {
	if k <= 0 || k >= len(ids) {
		slices.Sort(ids)
		return ids
	}
	h := ids[:k] // a max-heap of the k smallest seen so far
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for _, id := range ids[k:] {
		if id < h[0] {
			h[0] = id
			siftDown(h, 0)
		}
	}
	slices.Sort(h)
	return h
}

// siftDown restores the max-heap order of h below i.
func siftDown(h []string, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h[c+1] > h[c] {
			c++
		}
		if h[i] >= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
