package keys

import (
	"crypto/rand"
	"encoding/hex"
)

// KeyIDSize is the size of a key id in binary: a UUID.
const KeyIDSize = 16

// NewKeyID returns a random (version 4) key id in canonical form.
func NewKeyID() string {
	var id [KeyIDSize]byte
	_, _ = rand.Read(id[:]) // never fails: crypto/rand crashes the program instead
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return FormatKeyID(id)
}

// FormatKeyID writes a key id in canonical form: 8-4-4-4-12 lowercase hex.
func FormatKeyID(id [KeyIDSize]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], id[10:16])
	return string(s[:])
}

// ParseKeyID parses a key id in 8-4-4-4-12 hex form. Upper-case digits are
// accepted, as UUID parsers generally do; FormatKeyID of the result gives the
// canonical form used everywhere else. Any UUID version is accepted, so keys
// keep ids made elsewhere.
func ParseKeyID(s string) ([KeyIDSize]byte, error) {
	var id [KeyIDSize]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, errKeyIDForm()
	}
	j := 0
	for _, g := range [...]struct{ from, to int }{{0, 8}, {9, 13}, {14, 18}, {19, 23}, {24, 36}} {
		for i := g.from; i < g.to; i += 2 {
			hi, ok1 := fromHex(s[i])
			lo, ok2 := fromHex(s[i+1])
			if !ok1 || !ok2 {
				return [KeyIDSize]byte{}, errKeyIDForm()
			}
			id[j] = hi<<4 | lo
			j++
		}
	}
	return id, nil
}

func errKeyIDForm() error {
	return fieldError("KeyId", "must be a UUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
