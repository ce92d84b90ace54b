package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
	"time"
)

// digestVersion starts every digest so that a change to the encoding below
// can never collide with the old one.
const digestVersion = "hsmbroker/cluster/state-digest/v1"

// Digest returns a SHA-256 hash of a canonical encoding of d: fields in a
// fixed order, every variable-length value length-prefixed, maps in sorted
// key order, times as UTC seconds and nanoseconds. Nil and empty maps, slices
// and byte strings encode the same.
//
// Adding a field to any of the state types means adding it here; a test
// counts the fields to catch omissions.
func (d *Data) Digest() [32]byte {
	e := digestEncoder{h: sha256.New()}
	e.str(digestVersion)
	e.str(d.DomainKeyID)
	e.bytes(d.DomainKeyCheck)

	e.uint(uint64(len(d.Keys)))
	for _, id := range sortedKeys(d.Keys) {
		e.str(id)
		e.key(d.Keys[id])
	}
	e.uint(uint64(len(d.Aliases)))
	for _, name := range sortedKeys(d.Aliases) {
		a := d.Aliases[name]
		e.str(name)
		e.str(a.Name)
		e.str(a.KeyID)
		e.time(a.CreatedAt)
		e.time(a.UpdatedAt)
	}
	e.uint(uint64(len(d.Nodes)))
	for _, id := range sortedKeys(d.Nodes) {
		n := d.Nodes[id]
		e.str(id)
		e.str(n.ID)
		e.str(n.RaftAddr)
		e.str(n.GRPCAddr)
		p := n.Partition
		e.str(p.Model)
		e.str(p.Manufacturer)
		e.str(p.Serial)
		e.str(p.TokenLabel)
		e.str(p.Library)
		e.str(p.Firmware)
		e.uint(uint64(len(p.Mechanisms)))
		for _, m := range p.Mechanisms {
			e.str(m)
		}
		e.bool(p.DomainKeyPresent)
		e.str(p.Health)
		e.time(n.LastSeen)
	}
	e.uint(uint64(len(d.JoinTokens)))
	for _, h := range sortedKeys(d.JoinTokens) {
		t := d.JoinTokens[h]
		e.str(h)
		e.bytes(t.Hash)
		e.time(t.Expires)
		e.str(t.NodeID)
		e.time(t.CreatedAt)
	}
	e.uint(uint64(len(d.Grants)))
	for _, id := range sortedKeys(d.Grants) {
		e.str(id)
		e.grant(d.Grants[id])
	}
	e.uint(uint64(len(d.Principals)))
	for _, name := range sortedKeys(d.Principals) {
		p := d.Principals[name]
		e.str(name)
		e.str(p.Name)
		e.str(string(p.Role))
		e.time(p.UpdatedAt)
	}
	e.tde(&d.TDE)
	e.auditHeads(d.AuditHeads)
	e.dataObjects(d)
	e.kmip(d.KMIP)
	e.removedNodes(d)

	var sum [32]byte
	e.h.Sum(sum[:0])
	return sum
}

type digestEncoder struct {
	h   hash.Hash
	buf [binary.MaxVarintLen64]byte
}

func (e *digestEncoder) key(k *Key) {
	e.str(k.ID)
	e.str(string(k.Spec))
	e.str(string(k.Usage))
	e.str(string(k.State))
	e.str(k.Description)
	e.uint(uint64(len(k.Tags)))
	for _, tk := range sortedKeys(k.Tags) {
		e.str(tk)
		e.str(k.Tags[tk])
	}
	e.str(k.Creator)
	e.time(k.CreatedAt)
	e.time(k.DeletionDate)
	e.int(int64(k.PendingWindowDays))
	e.bool(k.RotationEnabled)
	e.uint(uint64(len(k.Versions)))
	for _, v := range k.Versions {
		e.uint(uint64(v.Number))
		e.bytes(v.Wrapped)
		e.bytes(v.PublicKey)
		e.time(v.CreatedAt)
	}
	e.uint(uint64(k.CurrentVersion))
	e.bytes(k.Policy)
}

func (e *digestEncoder) grant(g *Grant) {
	e.str(g.ID)
	e.str(g.KeyID)
	e.str(g.Name)
	e.str(g.Grantee)
	e.str(g.RetiringPrincipal)
	e.uint(uint64(len(g.Operations)))
	for _, op := range g.Operations {
		e.str(op)
	}
	for _, m := range []map[string]string{g.ContextEquals, g.ContextSubset} {
		e.uint(uint64(len(m)))
		for _, k := range sortedKeys(m) {
			e.str(k)
			e.str(m[k])
		}
	}
	e.str(g.Issuer)
	e.time(g.CreatedAt)
}

func (e *digestEncoder) uint(v uint64) {
	n := binary.PutUvarint(e.buf[:], v)
	e.h.Write(e.buf[:n])
}

func (e *digestEncoder) int(v int64) {
	n := binary.PutVarint(e.buf[:], v)
	e.h.Write(e.buf[:n])
}

func (e *digestEncoder) bool(v bool) {
	if v {
		e.uint(1)
	} else {
		e.uint(0)
	}
}

func (e *digestEncoder) bytes(b []byte) {
	e.uint(uint64(len(b)))
	e.h.Write(b)
}

func (e *digestEncoder) str(s string) {
	e.uint(uint64(len(s)))
	e.h.Write([]byte(s))
}

// time encodes the instant only; the location does not matter.
func (e *digestEncoder) time(t time.Time) {
	e.int(t.Unix())
	e.int(int64(t.Nanosecond()))
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
