// Package ttlv encodes and decodes KMIP's Tag-Type-Length-Value encoding
// (KMIP 1.0 to 2.0, section 9.1 of the specifications). It reads untrusted
// bytes: every length is checked against what remains before anything is
// allocated, nesting and item counts are bounded, and every fixed-size type
// must carry its exact length. A malformed input is an error, never a
// panic.
package ttlv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"
)

// Tag is a KMIP tag: three bytes, 0x42xxxx for the specification's tags,
// 0x54xxxx for extensions.
type Tag uint32

// Type is the item type byte.
type Type uint8

// Item types.
const (
	TypeStructure   Type = 0x01
	TypeInteger     Type = 0x02
	TypeLongInteger Type = 0x03
	TypeBigInteger  Type = 0x04
	TypeEnumeration Type = 0x05
	TypeBoolean     Type = 0x06
	TypeTextString  Type = 0x07
	TypeByteString  Type = 0x08
	TypeDateTime    Type = 0x09
	TypeInterval    Type = 0x0A
	// TypeDateTimeExtended is KMIP 2.0's microsecond date-time.
	TypeDateTimeExtended Type = 0x0B
)

var typeNames = [...]string{
	TypeStructure: "Structure", TypeInteger: "Integer", TypeLongInteger: "LongInteger",
	TypeBigInteger: "BigInteger", TypeEnumeration: "Enumeration", TypeBoolean: "Boolean",
	TypeTextString: "TextString", TypeByteString: "ByteString", TypeDateTime: "DateTime",
	TypeInterval: "Interval", TypeDateTimeExtended: "DateTimeExtended",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Limits on what Decode accepts.
const (
	// HeaderSize is the size of an item's tag, type and length.
	HeaderSize = 8
	// MaxMessage is the largest message, header included, that
	// ReadMessage reads.
	MaxMessage = 1 << 20
	// MaxDepth is the deepest nesting of structures (the message itself is
	// depth 1). KMIP requests nest about eight deep.
	MaxDepth = 24
	// MaxItems is the most items one message may hold in all.
	MaxItems = 20000
)

// Errors. Every decoding error wraps ErrMalformed.
var (
	ErrMalformed = errors.New("ttlv: malformed")
	ErrTooLarge  = errors.New("ttlv: message too large")
)

// Item is one TTLV item. Which value field holds the value depends on Type:
// Children for structures; Int for Integer, LongInteger, Enumeration,
// Interval, DateTime and DateTimeExtended (seconds, or microseconds, since
// the epoch); Bool for Boolean; Bytes for TextString (UTF-8 as sent),
// ByteString and BigInteger (two's complement, big-endian, as sent).
type Item struct {
	Tag      Tag
	Type     Type
	Int      int64
	Bool     bool
	Bytes    []byte
	Children []Item
}

// Struct makes a structure.
func Struct(tag Tag, children ...Item) Item {
	return Item{Tag: tag, Type: TypeStructure, Children: children}
}

// Int makes an Integer (32-bit).
func Int(tag Tag, v int32) Item { return Item{Tag: tag, Type: TypeInteger, Int: int64(v)} }

// Long makes a Long Integer.
func Long(tag Tag, v int64) Item { return Item{Tag: tag, Type: TypeLongInteger, Int: v} }

// Enum makes an Enumeration.
func Enum(tag Tag, v uint32) Item { return Item{Tag: tag, Type: TypeEnumeration, Int: int64(v)} }

// Bool makes a Boolean.
func Bool(tag Tag, v bool) Item { return Item{Tag: tag, Type: TypeBoolean, Bool: v} }

// Text makes a Text String.
func Text(tag Tag, s string) Item { return Item{Tag: tag, Type: TypeTextString, Bytes: []byte(s)} }

// Bytes makes a Byte String.
func Bytes(tag Tag, b []byte) Item { return Item{Tag: tag, Type: TypeByteString, Bytes: b} }

// DateTime makes a Date-Time (whole seconds).
func DateTime(tag Tag, t time.Time) Item {
	return Item{Tag: tag, Type: TypeDateTime, Int: t.Unix()}
}

// Interval makes an Interval (seconds, unsigned 32-bit).
func Interval(tag Tag, v uint32) Item { return Item{Tag: tag, Type: TypeInterval, Int: int64(v)} }

// BigInt makes a Big Integer from v.
func BigInt(tag Tag, v *big.Int) Item {
	return Item{Tag: tag, Type: TypeBigInteger, Bytes: twosComplement(v)}
}

// Text returns a Text String's value.
func (it Item) Text() string { return string(it.Bytes) }

// Time returns a Date-Time's value.
func (it Item) Time() time.Time {
	if it.Type == TypeDateTimeExtended {
		return time.UnixMicro(it.Int).UTC()
	}
	return time.Unix(it.Int, 0).UTC()
}

// Child returns the first child with tag, if any.
func (it Item) Child(tag Tag) (Item, bool) {
	for _, c := range it.Children {
		if c.Tag == tag {
			return c, true
		}
	}
	return Item{}, false
}

// ChildrenOf returns every child with tag.
func (it Item) ChildrenOf(tag Tag) []Item {
	var out []Item
	for _, c := range it.Children {
		if c.Tag == tag {
			out = append(out, c)
		}
	}
	return out
}

// fixedLength is the exact length of a fixed-size type, 0 for variable
// ones.
func fixedLength(t Type) (int, bool) {
	switch t {
	case TypeInteger, TypeEnumeration, TypeInterval:
		return 4, true
	case TypeLongInteger, TypeBoolean, TypeDateTime, TypeDateTimeExtended:
		return 8, true
	case TypeStructure, TypeTextString, TypeByteString, TypeBigInteger:
		return 0, true
	}
	return 0, false
}

func padded(n int) int { return (n + 7) &^ 7 }

// Header is the first eight bytes of an item.
type Header struct {
	Tag    Tag
	Type   Type
	Length uint32
}

// ParseHeader reads an item header from b (at least HeaderSize bytes).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes is less than an item header", ErrMalformed, len(b))
	}
	return Header{
		Tag:    Tag(uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])),
		Type:   Type(b[3]),
		Length: binary.BigEndian.Uint32(b[4:8]),
	}, nil
}

// ReadMessage reads one message (a top-level item) from r. The header is
// read and checked first: a message whose declared size exceeds max (at
// most MaxMessage) or that is not a structure is refused before any of its
// body is read, so a length field cannot make the reader allocate.
func ReadMessage(r io.Reader, max int) ([]byte, error) {
	if max <= 0 || max > MaxMessage {
		max = MaxMessage
	}
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h, _ := ParseHeader(hb[:])
	if h.Type != TypeStructure {
		return nil, fmt.Errorf("%w: a message must be a structure, got %s", ErrMalformed, h.Type)
	}
	if h.Length%8 != 0 {
		return nil, fmt.Errorf("%w: structure length %d is not a multiple of 8", ErrMalformed, h.Length)
	}
	if int64(h.Length) > int64(max-HeaderSize) {
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrTooLarge, int64(h.Length)+HeaderSize, max)
	}
	msg := make([]byte, HeaderSize+int(h.Length))
	copy(msg, hb[:])
	if _, err := io.ReadFull(r, msg[HeaderSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}

// Decode decodes exactly one item that fills b.
func Decode(b []byte) (Item, error) {
	d := decoder{}
	it, n, err := d.item(b, 1)
	if err != nil {
		return Item{}, err
	}
	if n != len(b) {
		return Item{}, fmt.Errorf("%w: %d bytes after the item", ErrMalformed, len(b)-n)
	}
	return it, nil
}

type decoder struct{ items int }

// item decodes one item at the start of b and returns it and the bytes it
// took, padding included.
func (d *decoder) item(b []byte, depth int) (Item, int, error) {
	if depth > MaxDepth {
		return Item{}, 0, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, MaxDepth)
	}
	d.items++
	if d.items > MaxItems {
		return Item{}, 0, fmt.Errorf("%w: more than %d items", ErrMalformed, MaxItems)
	}
	h, err := ParseHeader(b)
	if err != nil {
		return Item{}, 0, err
	}
	want, known := fixedLength(h.Type)
	if !known {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x has unknown type 0x%02x", ErrMalformed, uint32(h.Tag), uint8(h.Type))
	}
	if want != 0 && int(h.Length) != want {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: %s must be %d bytes long, got %d", ErrMalformed, uint32(h.Tag), h.Type, want, h.Length)
	}
	rest := b[HeaderSize:]
	if int64(h.Length) > int64(len(rest)) {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: length %d exceeds the %d bytes left", ErrMalformed, uint32(h.Tag), h.Length, len(rest))
	}
	n := int(h.Length)
	total := padded(n)
	if total > len(rest) {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: padding runs past the end", ErrMalformed, uint32(h.Tag))
	}
	for _, p := range rest[n:total] {
		if p != 0 {
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: non-zero padding", ErrMalformed, uint32(h.Tag))
		}
	}
	v := rest[:n]
	it := Item{Tag: h.Tag, Type: h.Type}
	switch h.Type {
	case TypeStructure:
		if n%8 != 0 {
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: structure length %d is not a multiple of 8", ErrMalformed, uint32(h.Tag), n)
		}
		for len(v) > 0 {
			c, m, err := d.item(v, depth+1)
			if err != nil {
				return Item{}, 0, err
			}
			it.Children = append(it.Children, c)
			v = v[m:]
		}
	case TypeInteger:
		it.Int = int64(int32(binary.BigEndian.Uint32(v)))
	case TypeEnumeration, TypeInterval:
		it.Int = int64(binary.BigEndian.Uint32(v))
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended:
		it.Int = int64(binary.BigEndian.Uint64(v))
	case TypeBoolean:
		switch binary.BigEndian.Uint64(v) {
		case 0:
		case 1:
			it.Bool = true
		default:
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: Boolean must be 0 or 1", ErrMalformed, uint32(h.Tag))
		}
	case TypeBigInteger:
		if n%8 != 0 {
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x: Big Integer length %d is not a multiple of 8", ErrMalformed, uint32(h.Tag), n)
		}
		it.Bytes = append([]byte(nil), v...)
	case TypeTextString, TypeByteString:
		it.Bytes = append([]byte(nil), v...)
	}
	return it, HeaderSize + total, nil
}

// Size is the length of it's encoding, in bytes, without encoding it.
func (it Item) Size() int {
	switch it.Type {
	case TypeStructure:
		n := HeaderSize
		for _, c := range it.Children {
			n += c.Size()
		}
		return n
	case TypeTextString, TypeByteString, TypeBigInteger:
		return HeaderSize + padded(len(it.Bytes))
	}
	return HeaderSize + 8
}

// Encode returns the encoding of it.
func (it Item) Encode() ([]byte, error) { return it.AppendTo(nil) }

// AppendTo appends the encoding of it to b.
func (it Item) AppendTo(b []byte) ([]byte, error) {
	var tmp [8]byte
	start := len(b)
	b = append(b, byte(it.Tag>>16), byte(it.Tag>>8), byte(it.Tag), byte(it.Type), 0, 0, 0, 0)
	var n int
	switch it.Type {
	case TypeStructure:
		for _, c := range it.Children {
			var err error
			if b, err = c.AppendTo(b); err != nil {
				return nil, err
			}
		}
		n = len(b) - start - HeaderSize
	case TypeInteger, TypeEnumeration, TypeInterval:
		binary.BigEndian.PutUint32(tmp[:4], uint32(it.Int))
		b, n = append(b, tmp[:4]...), 4
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended:
		binary.BigEndian.PutUint64(tmp[:], uint64(it.Int))
		b, n = append(b, tmp[:]...), 8
	case TypeBoolean:
		if it.Bool {
			tmp[7] = 1
		}
		b, n = append(b, tmp[:]...), 8
	case TypeTextString, TypeByteString, TypeBigInteger:
		b, n = append(b, it.Bytes...), len(it.Bytes)
	default:
		return nil, fmt.Errorf("ttlv: cannot encode type %s", it.Type)
	}
	if n > 0xFFFFFFFF-8 || len(b)-start > MaxMessage*64 {
		return nil, ErrTooLarge
	}
	binary.BigEndian.PutUint32(b[start+4:start+8], uint32(n))
	for range padded(n) - n {
		b = append(b, 0)
	}
	return b, nil
}

// twosComplement is v as a big-endian two's complement number, padded to
// a multiple of 8 bytes with its sign, as KMIP encodes a Big Integer.
func twosComplement(v *big.Int) []byte {
	if v.Sign() >= 0 {
		b := v.Bytes()
		// A leading 1 bit would read as negative: add a zero byte.
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return padLeft(b, 0)
	}
	// -v = 2^k - |v| for k a multiple of 8 bits large enough.
	abs := new(big.Int).Neg(v)
	k := padded(len(abs.Bytes())+1) * 8
	m := new(big.Int).Lsh(big.NewInt(1), uint(k))
	b := m.Sub(m, abs).Bytes()
	return padLeft(b, 0xff)
}

func padLeft(b []byte, fill byte) []byte {
	n := padded(len(b))
	out := make([]byte, n)
	for i := range n - len(b) {
		out[i] = fill
	}
	copy(out[n-len(b):], b)
	return out
}
