package hsm

import (
	"crypto"
	"crypto/subtle"
	"encoding/binary"
	"hash"
)

// oaepDecode removes EME-OAEP encoding (RFC 8017 section 7.1.2, steps 3a-3g)
// from em, the k-byte output of the raw RSA private-key operation, with
// MGF1 over hash and an empty label. It runs in time independent of where
// or whether the encoding is malformed, and reports success only for a
// well-formed encoding; callers answer every failure with the same error.
func oaepDecode(h crypto.Hash, k int, em []byte) ([]byte, bool) {
	hLen := h.Size()
	if k < 2*hLen+2 || len(em) != k {
		return nil, false
	}
	hf := h.New()
	hf.Write(nil)
	lHash := hf.Sum(nil)

	firstByteIsZero := subtle.ConstantTimeByteEq(em[0], 0)
	seed := make([]byte, hLen)
	db := make([]byte, k-hLen-1)
	copy(seed, em[1:1+hLen])
	copy(db, em[1+hLen:])
	defer clear(db)
	mgf1XOR(seed, h.New(), db)
	mgf1XOR(db, h.New(), seed)

	lHash2Good := subtle.ConstantTimeCompare(lHash, db[:hLen])

	// The rest of db must be: zero or more 0x00, then 0x01, then the
	// message. lookingForIndex is 1 until the 0x01 is found.
	var lookingForIndex, index, invalid int
	lookingForIndex = 1
	rest := db[hLen:]
	for i := 0; i < len(rest); i++ {
		equals0 := subtle.ConstantTimeByteEq(rest[i], 0)
		equals1 := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(lookingForIndex&equals1, i, index)
		lookingForIndex = subtle.ConstantTimeSelect(equals1, 0, lookingForIndex)
		invalid = subtle.ConstantTimeSelect(lookingForIndex&^equals0, 1, invalid)
	}
	if firstByteIsZero&lHash2Good&^invalid&^lookingForIndex != 1 {
		return nil, false
	}
	return append([]byte(nil), rest[index+1:]...), true
}

// mgf1XOR XORs out with MGF1(seed) using hash h (RFC 8017 appendix B.2.1).
func mgf1XOR(out []byte, h hash.Hash, seed []byte) {
	var counter [4]byte
	done := 0
	for done < len(out) {
		h.Reset()
		h.Write(seed)
		h.Write(counter[:])
		digest := h.Sum(nil)
		for i := 0; i < len(digest) && done < len(out); i++ {
			out[done] ^= digest[i]
			done++
		}
		binary.BigEndian.PutUint32(counter[:], binary.BigEndian.Uint32(counter[:])+1)
	}
}
