package ttlv

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "\n", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The examples of section 9.1.2 of the KMIP 1.x specifications.
func TestSpecExamples(t *testing.T) {
	big1, _ := new(big.Int).SetString("1234567890000000000000000000", 10)
	cases := []struct {
		name string
		item Item
		hex  string
	}{
		{"Integer 8", Int(0x420020, 8), "420020 | 02 | 00000004 | 00000008 00000000"},
		{"Long Integer", Long(0x420020, 123456789000000000), "420020 | 03 | 00000008 | 01B69B4BA5749200"},
		{"Big Integer", BigInt(0x420020, big1), "420020 | 04 | 00000010 | 0000000003FD35EB 6BC2DF4618080000"},
		{"Enumeration 255", Enum(0x420020, 255), "420020 | 05 | 00000004 | 000000FF 00000000"},
		{"Boolean true", Bool(0x420020, true), "420020 | 06 | 00000008 | 0000000000000001"},
		{"Text String", Text(0x420020, "Hello World"), "420020 | 07 | 0000000B | 48656C6C6F20576F 726C640000000000"},
		{"Byte String", Bytes(0x420020, []byte{1, 2, 3}), "420020 | 08 | 00000003 | 0102030000000000"},
		{"Date-Time", DateTime(0x420020, time.Date(2008, 3, 14, 11, 56, 40, 0, time.UTC)), "420020 | 09 | 00000008 | 0000000047DA67F8"},
		{"Interval 10 days", Interval(0x420020, 864000), "420020 | 0A | 00000004 | 000D2F00 00000000"},
		{"Structure", Struct(0x420020, Enum(0x420004, 254), Int(0x420005, 255)),
			"420020 | 01 | 00000020 | 420004 | 05 | 00000004 | 000000FE 00000000 | 420005 | 02 | 00000004 | 000000FF 00000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got, err := c.item.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got %x\nwant %x", got, want)
			}
			dec, err := Decode(want)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			again, _ := dec.Encode()
			if !bytes.Equal(again, want) {
				t.Fatalf("decode then encode:\n got %x\nwant %x", again, want)
			}
			if c.item.Size() != len(want) {
				t.Fatalf("Size %d, encoding %d bytes", c.item.Size(), len(want))
			}
		})
	}
}

func TestNegativeBigInteger(t *testing.T) {
	for _, v := range []int64{-1, -128, -129, -1 << 40, 0, 127, 128} {
		b := twosComplement(big.NewInt(v))
		if len(b)%8 != 0 {
			t.Fatalf("%d: %d bytes", v, len(b))
		}
		got := new(big.Int).SetBytes(b)
		if b[0]&0x80 != 0 {
			got.Sub(got, new(big.Int).Lsh(big.NewInt(1), uint(len(b)*8)))
		}
		if got.Int64() != v {
			t.Fatalf("%d encodes to %x, which reads as %d", v, b, got)
		}
	}
}

// Every rule of the decoder, each broken once.
func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name, hex string
	}{
		{"empty", ""},
		{"short header", "4200200200"},
		{"integer length 8", "420020 02 00000008 0000000800000000"},
		{"enumeration length 2", "420020 05 00000002 0001000000000000"},
		{"boolean length 4", "420020 06 00000004 0000000100000000"},
		{"boolean value 2", "420020 06 00000008 0000000000000002"},
		{"long length 4", "420020 03 00000004 0000000100000000"},
		{"datetime length 4", "420020 09 00000004 0000000100000000"},
		{"interval length 8", "420020 0A 00000008 0000000000000001"},
		{"unknown type", "420020 0C 00000004 0000000100000000"},
		{"type zero", "420020 00 00000000"},
		{"text length past the end", "420020 07 00000010 4142434400000000"},
		{"100 MB text", "420020 07 05F5E100 4142434400000000"},
		{"missing padding", "420020 07 00000003 414243"},
		{"non-zero padding", "420020 07 00000003 4142430000000001"},
		{"structure length lies (long)", "420020 01 00000020 420004 05 00000004 000000FE00000000"},
		{"structure length lies (short)", "420020 01 00000008 420004 05 00000004 000000FE00000000"},
		{"structure length not 8-aligned", "420020 01 0000000C 420004 05 00000004 000000FE00000000"},
		{"trailing bytes", "420020 02 00000004 0000000800000000 00"},
		{"big integer length 3", "420020 04 00000003 0102030000000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(unhex(t, c.hex))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, want ErrMalformed", err)
			}
		})
	}
}

func nest(depth int) Item {
	it := Int(0x420005, 1)
	for range depth - 1 {
		it = Struct(0x420004, it)
	}
	return it
}

func TestDepthAndItemLimits(t *testing.T) {
	ok, _ := nest(MaxDepth).Encode()
	if _, err := Decode(ok); err != nil {
		t.Fatalf("depth %d: %v", MaxDepth, err)
	}
	deep, _ := nest(MaxDepth + 1).Encode()
	if _, err := Decode(deep); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "deeper") {
		t.Fatalf("depth %d: %v", MaxDepth+1, err)
	}
	many := Struct(0x420004)
	for range MaxItems {
		many.Children = append(many.Children, Bool(0x420006, true))
	}
	b, _ := many.Encode()
	if _, err := Decode(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "items") {
		t.Fatalf("%d items: %v", MaxItems+1, err)
	}
}

func TestReadMessage(t *testing.T) {
	msg, _ := Struct(0x420078, Int(0x420005, 7)).Encode()
	got, err := ReadMessage(bytes.NewReader(append(msg, msg...)), 0)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("ReadMessage = %x, %v", got, err)
	}
	// A 100 MB length is refused from the header, before any body is read:
	// the reader holds only the header.
	huge := unhex(t, "420078 01 05F5E100")
	if _, err := ReadMessage(bytes.NewReader(huge), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("100 MB: %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader(msg), len(msg)-8); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the caller's limit: %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader(msg[:len(msg)-3]), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	notStruct, _ := Int(0x420078, 1).Encode()
	if _, err := ReadMessage(bytes.NewReader(notStruct), 0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("not a structure: %v", err)
	}
}

// pykmipGolden is a script that encodes one message per line with PyKMIP's
// own encoder and prints it in hex.
const pykmipGolden = `
import binascii
from kmip.core import enums, objects, primitives, utils
from kmip.core.messages import contents, messages, payloads
from kmip.core.factories import attributes as af
from kmip.core import secrets
from kmip.core.enums import Tags

def out(o):
    s = utils.BytearrayStream()
    o.write(s, kmip_version=enums.KMIPVersion.KMIP_1_4)
    print(binascii.hexlify(s.buffer).decode())

out(primitives.Integer(-7, Tags.CRYPTOGRAPHIC_LENGTH))
out(primitives.LongInteger(-2, Tags.DEFAULT))
out(primitives.BigInteger(-1234567890123456789012345, Tags.DEFAULT))
out(primitives.Enumeration(enums.State, enums.State.ACTIVE, Tags.STATE))
out(primitives.Boolean(False, Tags.DEFAULT))
out(primitives.TextString("key-name-123", Tags.NAME_VALUE))
out(primitives.ByteString(b"\x00" * 32, Tags.KEY_MATERIAL))
out(primitives.DateTime(1700000000, Tags.ACTIVATION_DATE))
out(primitives.Interval(86400, Tags.DEFAULT))
f = af.AttributeFactory()
tmpl = objects.TemplateAttribute(attributes=[
    f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
    f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, 256),
    f.create_attribute(enums.AttributeType.NAME, "golden"),
])
payload = payloads.CreateRequestPayload(object_type=enums.ObjectType.SYMMETRIC_KEY, template_attribute=tmpl)
batch = messages.RequestBatchItem(operation=primitives.Enumeration(enums.Operation, enums.Operation.CREATE, Tags.OPERATION), request_payload=payload)
hdr = messages.RequestHeader(protocol_version=contents.ProtocolVersion(1, 4), batch_count=contents.BatchCount(1))
out(messages.RequestMessage(request_header=hdr, batch_items=[batch]))
`

// PyKMIP's encoder is the reference: every item it writes decodes, and
// encodes back to the same bytes.
func TestPyKMIPGolden(t *testing.T) {
	py := hsmtest.RequirePyKMIP(t)
	out, err := exec.Command(py, "-c", pykmipGolden).CombinedOutput()
	if err != nil {
		t.Fatalf("PyKMIP: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	big2, _ := new(big.Int).SetString("-1234567890123456789012345", 10)
	want := []Item{
		Int(0x42002A, -7),
		Long(0x420000, -2),
		BigInt(0x420000, big2),
		Enum(0x42008D, 2),
		Bool(0x420000, false),
		Text(0x420055, "key-name-123"),
		Bytes(0x420043, make([]byte, 32)),
		DateTime(0x420001, time.Unix(1700000000, 0)),
		Interval(0x420000, 86400),
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("PyKMIP printed %d lines, want %d", len(lines), len(want)+1)
	}
	for i, w := range want {
		mine, err := w.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(mine); got != lines[i] {
			t.Errorf("item %d (%s):\n mine   %s\n PyKMIP %s", i, w.Type, got, lines[i])
		}
	}
	msg, _ := hex.DecodeString(lines[len(want)])
	it, err := Decode(msg)
	if err != nil {
		t.Fatalf("decode PyKMIP's Create request: %v", err)
	}
	again, _ := it.Encode()
	if !bytes.Equal(again, msg) {
		t.Fatalf("re-encoded Create request differs:\n mine   %x\n PyKMIP %x", again, msg)
	}
	if it.Tag != 0x420078 || len(it.ChildrenOf(0x42000F)) != 1 {
		t.Fatalf("decoded %06x with %d batch items", uint32(it.Tag), len(it.ChildrenOf(0x42000F)))
	}
}

func FuzzDecode(f *testing.F) {
	for _, it := range []Item{nest(4), Text(1, "abc"), Struct(0x420078, Int(1, 2), Bool(3, true), Bytes(4, []byte{9}))} {
		b, _ := it.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes: one encoding per item.
		again, err := it.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x -> %x (%v)", b, again, err)
		}
		if it.Size() != len(b) {
			t.Fatalf("Size %d of an item that encodes to %d bytes", it.Size(), len(b))
		}
	})
}

func FuzzReadMessage(f *testing.F) {
	b, _ := Struct(0x420078, Int(1, 2)).Encode()
	f.Add(b)
	f.Add(unhex(&testing.T{}, "42007801FFFFFFF8"))
	f.Add(unhex(&testing.T{}, "4200780100000FF8"))
	f.Add(unhex(&testing.T{}, "4200780100001000"))
	// ReadMessage takes exactly the messages whose header announces a
	// structure of at most the limit, header included, whose body is all
	// there: such a message is read whole and nothing past it, any other
	// input is refused with an error that says why.
	const limit = 4096
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := ReadMessage(bytes.NewReader(b), limit)
		var h Header
		if len(b) >= HeaderSize {
			h, _ = ParseHeader(b)
		}
		size := int64(HeaderSize) + int64(h.Length)
		whole := len(b) >= HeaderSize && h.Type == TypeStructure && h.Length%8 == 0 && size <= limit && int64(len(b)) >= size
		if err != nil {
			if msg != nil {
				t.Fatalf("%d bytes returned with the error %v", len(msg), err)
			}
			if whole {
				t.Fatalf("refused a whole message of %d bytes: %v", size, err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("error %v says neither malformed, too large nor cut short", err)
			}
			return
		}
		if !whole {
			t.Fatalf("read %d bytes from an input that holds no whole message of at most %d bytes", len(msg), limit)
		}
		if int64(len(msg)) != size || !bytes.Equal(msg, b[:len(msg)]) {
			t.Fatalf("ReadMessage returned %d bytes not read as given (header says %d)", len(msg), size)
		}
	})
}
