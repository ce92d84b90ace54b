package hsm

import (
	"bytes"
	"container/list"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// handleCache is a bounded LRU of loaded key objects, keyed by key id and
// version. An entry also remembers the wrapped blob it came from, so a
// different blob under the same id and version (a restored backup, say)
// is never served from a stale handle.
type handleCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // front: most recently used; values *cacheEntry
	entries map[cacheKey]*list.Element

	hits, misses atomic.Uint64
}

type cacheKey struct {
	id      string
	version uint32
}

type cacheEntry struct {
	key     cacheKey
	wrapped []byte
	h       pkcs11.ObjectHandle
}

func newHandleCache(max int) *handleCache {
	return &handleCache{max: max, order: list.New(), entries: map[cacheKey]*list.Element{}}
}

// get looks k up and counts the use as a hit or a miss.
func (c *handleCache) get(k KeyRef) (pkcs11.ObjectHandle, bool) {
	h, ok := c.lookup(k)
	if ok {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
	return h, ok
}

// lookup is get without counting, for a second look within one use.
func (c *handleCache) lookup(k KeyRef) (pkcs11.ObjectHandle, bool) { return c.find(k, true) }

// peek is lookup without marking the entry used.
func (c *handleCache) peek(k KeyRef) (pkcs11.ObjectHandle, bool) { return c.find(k, false) }

func (c *handleCache) find(k KeyRef, use bool) (pkcs11.ObjectHandle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[cacheKey{k.ID, k.Version}]
	if !ok || !bytes.Equal(el.Value.(*cacheEntry).wrapped, k.Wrapped) {
		return 0, false
	}
	if use {
		c.order.MoveToFront(el)
	}
	return el.Value.(*cacheEntry).h, true
}

// put adds a handle and returns the handles it displaced (an older entry
// for the same key, least recently used entries beyond the bound); the
// caller destroys them.
func (c *handleCache) put(k KeyRef, h pkcs11.ObjectHandle) []pkcs11.ObjectHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pkcs11.ObjectHandle
	key := cacheKey{k.ID, k.Version}
	if el, ok := c.entries[key]; ok {
		out = append(out, el.Value.(*cacheEntry).h)
		c.order.Remove(el)
	}
	c.entries[key] = c.order.PushFront(&cacheEntry{key: key, wrapped: append([]byte(nil), k.Wrapped...), h: h})
	for c.order.Len() > c.max {
		el := c.order.Back()
		e := el.Value.(*cacheEntry)
		c.order.Remove(el)
		delete(c.entries, e.key)
		out = append(out, e.h)
	}
	return out
}

// drop forgets the entry for k if it still holds handle h.
func (c *handleCache) drop(k KeyRef, h pkcs11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := cacheKey{k.ID, k.Version}
	if el, ok := c.entries[key]; ok && el.Value.(*cacheEntry).h == h {
		c.order.Remove(el)
		delete(c.entries, key)
	}
}

// evictKey forgets every version of key id, returning their handles.
func (c *handleCache) evictKey(id string) []pkcs11.ObjectHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pkcs11.ObjectHandle
	for key, el := range c.entries {
		if key.id == id {
			out = append(out, el.Value.(*cacheEntry).h)
			c.order.Remove(el)
			delete(c.entries, key)
		}
	}
	return out
}

// evictAll forgets everything and returns the handles to destroy.
func (c *handleCache) evictAll() []pkcs11.ObjectHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]pkcs11.ObjectHandle, 0, c.order.Len())
	for el := c.order.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*cacheEntry).h)
	}
	c.order.Init()
	c.entries = map[cacheKey]*list.Element{}
	return out
}

// purge forgets everything (the objects died with their session).
func (c *handleCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	c.entries = map[cacheKey]*list.Element{}
}

func (c *handleCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
