package hsm

import (
	"bytes"
	"encoding/asn1"
	"math/big"
	"testing"
)

// asn1RawToDER is the reference ecdsaRawToDER must match byte for byte:
// the encoding/asn1 form it replaced.
func asn1RawToDER(raw []byte) ([]byte, error) {
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}

func checkRawToDER(t *testing.T, raw []byte) {
	t.Helper()
	got, err := ecdsaRawToDER(raw)
	if len(raw) == 0 || len(raw)%2 != 0 || len(raw) > 132 {
		if err == nil {
			t.Fatalf("%x: accepted a %d-byte signature", raw, len(raw))
		}
		return
	}
	if err != nil {
		t.Fatalf("%x: %v", raw, err)
	}
	want, err := asn1RawToDER(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%x:\n got %x\nwant %x", raw, got, want)
	}
	var back struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(got, &back); err != nil || len(rest) != 0 {
		t.Fatalf("%x: DER does not parse back: %v (%d bytes left)", raw, err, len(rest))
	}
}

func TestECDSARawToDER(t *testing.T) {
	ff := func(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }
	zero := func(n int) []byte { return make([]byte, n) }
	cat := func(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }
	for _, raw := range [][]byte{
		nil, {1}, {1, 2, 3}, make([]byte, 134), // refused
		cat(ff(32), ff(32)),     // P-256, both need a sign byte
		cat(zero(32), zero(32)), // zero integers
		cat(append(zero(31), 0x80), append(zero(5), ff(27)...)),
		cat(append([]byte{0, 0x7f}, ff(30)...), ff(32)), // leading zero dropped, no sign byte
		cat(ff(48), append([]byte{0}, ff(47)...)),       // P-384
		cat(ff(66), ff(66)),                             // P-521 at its longest: a long-form length
		cat(append([]byte{1}, ff(65)...), append([]byte{0, 0, 0x01}, ff(63)...)),
	} {
		checkRawToDER(t, raw)
	}
}

func FuzzECDSARawToDER(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Add(bytes.Repeat([]byte{0x00}, 132))
	f.Fuzz(func(t *testing.T, raw []byte) { checkRawToDER(t, raw) })
}
