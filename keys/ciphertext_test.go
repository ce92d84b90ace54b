package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"math"
	"testing"
)

const testKeyID = "1234abcd-12ab-34cd-56ef-1234567890ab"

func testCiphertext(sealedLen int) Ciphertext {
	return Ciphertext{
		KeyID:   testKeyID,
		Version: 3,
		IV:      bytes.Repeat([]byte{0xa5}, IVSize),
		Sealed:  bytes.Repeat([]byte{0x5a}, sealedLen),
	}
}

func TestCiphertextGolden(t *testing.T) {
	c := Ciphertext{
		KeyID:   testKeyID,
		Version: 0x01020304,
		IV:      []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
		Sealed:  append([]byte("sealed"), bytes.Repeat([]byte{0xee}, TagSize)...),
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "ciphertext.hex", b, [][2]string{
		{"01", "offset 0: format"},
		{"1234abcd12ab34cd56ef1234567890ab", "offset 1: key id 1234abcd-12ab-34cd-56ef-1234567890ab"},
		{"01020304", "offset 17: key version, big-endian"},
		{"000102030405060708090a0b", "offset 21: IV"},
		{hexOf("sealed"), "offset 33: AES-GCM ciphertext"},
		{"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "offset 39: GCM tag"},
	})
	h, err := c.Header()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != HeaderSize || HeaderSize != 33 || !bytes.Equal(h, b[:HeaderSize]) {
		t.Errorf("Header() = %x, want the first 33 bytes of %x", h, b)
	}
}

func TestCiphertextRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Ciphertext
	}{
		{"tag only", testCiphertext(TagSize)},
		{"one byte", testCiphertext(TagSize + 1)},
		{"max plaintext", testCiphertext(MaxPlaintext + TagSize)},
		{"max blob", testCiphertext(MaxCiphertextBlob - HeaderSize)},
		{"max version", func() Ciphertext { c := testCiphertext(20); c.Version = math.MaxUint32; return c }()},
		{"nil key id", func() Ciphertext { c := testCiphertext(20); c.KeyID = "00000000-0000-0000-0000-000000000000"; return c }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != HeaderSize+len(tt.c.Sealed) {
				t.Errorf("blob is %d bytes, want %d", len(b), HeaderSize+len(tt.c.Sealed))
			}
			got, err := ParseCiphertext(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.KeyID != tt.c.KeyID || got.Version != tt.c.Version ||
				!bytes.Equal(got.IV, tt.c.IV) || !bytes.Equal(got.Sealed, tt.c.Sealed) {
				t.Errorf("round trip = %+v, want %+v", got, tt.c)
			}
		})
	}
}

// ParseCiphertext names the key canonically whatever case Marshal was given.
func TestCiphertextKeyIDIsCanonical(t *testing.T) {
	c := testCiphertext(TagSize)
	c.KeyID = "1234ABCD-12AB-34CD-56EF-1234567890AB"
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCiphertext(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyID != testKeyID {
		t.Errorf("KeyID = %q, want %q", got.KeyID, testKeyID)
	}
}

func TestParseCiphertextRejects(t *testing.T) {
	good, err := testCiphertext(TagSize + 5).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	maxBlob, err := testCiphertext(MaxCiphertextBlob - HeaderSize).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"format only", []byte{CiphertextFormat}},
		{"header only", good[:HeaderSize]},
		{"sealed shorter than tag", good[:MinCiphertextBlob-1]},
		{"format 0", with(func(b []byte) []byte { b[0] = 0; return b })},
		{"format 2", with(func(b []byte) []byte { b[0] = 2; return b })},
		{"version 0", with(func(b []byte) []byte { copy(b[17:21], []byte{0, 0, 0, 0}); return b })},
		{"too long", append(bytes.Clone(maxBlob), 0)},
		{"AWS-sized junk", bytes.Repeat([]byte{1}, 8192)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCiphertext(tt.b)
			// The very same error for every cause: nothing tells a caller which check failed.
			if err != ErrInvalidCiphertext { // identity, not errors.Is: one value for every cause
				t.Fatalf("error %v, want ErrInvalidCiphertext itself", err)
			}
			if !errors.Is(err, ErrInvalidCiphertext) || errors.Is(err, ErrInvalidArgument) {
				t.Fatal("error matches the wrong sentinels")
			}
			if c.KeyID != "" || c.Version != 0 || c.IV != nil || c.Sealed != nil {
				t.Errorf("got %+v with the error", c)
			}
		})
	}
	for _, b := range [][]byte{good[:MinCiphertextBlob], maxBlob} {
		if _, err := ParseCiphertext(b); err != nil {
			t.Errorf("ParseCiphertext of a %d-byte blob: %v", len(b), err)
		}
	}
}

func TestParseCiphertextDoesNotAlias(t *testing.T) {
	b, err := testCiphertext(TagSize + 3).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCiphertext(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if c.IV[0] != 0xa5 || c.Sealed[0] != 0x5a {
		t.Error("parsed ciphertext shares memory with the input")
	}
}

func TestCiphertextMarshalRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Ciphertext)
		header bool // whether Header fails too
	}{
		{"empty key id", func(c *Ciphertext) { c.KeyID = "" }, true},
		{"alias as key id", func(c *Ciphertext) { c.KeyID = "alias/x" }, true},
		{"version 0", func(c *Ciphertext) { c.Version = 0 }, true},
		{"no IV", func(c *Ciphertext) { c.IV = nil }, true},
		{"short IV", func(c *Ciphertext) { c.IV = make([]byte, 11) }, true},
		{"long IV", func(c *Ciphertext) { c.IV = make([]byte, 16) }, true},
		{"no sealed", func(c *Ciphertext) { c.Sealed = nil }, false},
		{"sealed shorter than tag", func(c *Ciphertext) { c.Sealed = make([]byte, TagSize-1) }, false},
		{"too long", func(c *Ciphertext) { c.Sealed = make([]byte, MaxCiphertextBlob-HeaderSize+1) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCiphertext(TagSize)
			tt.change(&c)
			b, err := c.Marshal()
			if err == nil || b != nil {
				t.Fatalf("Marshal = %x, %v; want an error", b, err)
			}
			// A blob the broker built wrongly is its own bug, not a bad request.
			if errors.Is(err, ErrInvalidCiphertext) || errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Marshal error %v matches a client-error sentinel", err)
			}
			h, err := c.Header()
			if tt.header != (err != nil) || (err != nil && h != nil) {
				t.Errorf("Header = %x, %v; want error: %v", h, err, tt.header)
			}
		})
	}
}

func TestAAD(t *testing.T) {
	h, err := testCiphertext(TagSize).Header()
	if err != nil {
		t.Fatal(err)
	}
	ctx := EncryptionContext{"purpose": "test"}
	if got, want := AAD(h, ctx), append(bytes.Clone(h), EncodeContext(ctx)...); !bytes.Equal(got, want) {
		t.Errorf("AAD = %x, want %x", got, want)
	}
	for _, empty := range []EncryptionContext{nil, {}} {
		if got := AAD(h, empty); !bytes.Equal(got, h) {
			t.Errorf("AAD with context %#v = %x, want the header alone", empty, got)
		}
	}
	hc := bytes.Clone(h)
	AAD(h, nil)[0] ^= 0xff
	if !bytes.Equal(h, hc) {
		t.Error("AAD result aliases the header")
	}
}

// TestSealAndOpen uses the blob as Encrypt and Decrypt do, with a local
// AES-GCM key standing in for the HSM: the header and the context are both
// authenticated.
func TestSealAndOpen(t *testing.T) {
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	ctx := EncryptionContext{"tenant": "acme"}

	c := Ciphertext{KeyID: NewKeyID(), Version: 2, IV: bytes.Repeat([]byte{1}, IVSize)}
	h, err := c.Header()
	if err != nil {
		t.Fatal(err)
	}
	c.Sealed = gcm.Seal(nil, c.IV, []byte("attack at dawn"), AAD(h, ctx))
	blob, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}

	open := func(blob []byte, ctx EncryptionContext) ([]byte, error) {
		c, err := ParseCiphertext(blob)
		if err != nil {
			return nil, err
		}
		h, err := c.Header()
		if err != nil {
			return nil, err
		}
		return gcm.Open(nil, c.IV, c.Sealed, AAD(h, ctx))
	}
	if pt, err := open(blob, ctx); err != nil || string(pt) != "attack at dawn" {
		t.Fatalf("open = %q, %v", pt, err)
	}
	if _, err := open(blob, EncryptionContext{"tenant": "other"}); err == nil {
		t.Error("opened with a different context")
	}
	if _, err := open(blob, nil); err == nil {
		t.Error("opened without the context")
	}
	for i := 1; i < HeaderSize; i++ { // byte 0 changes fail to parse
		tampered := bytes.Clone(blob)
		tampered[i] ^= 0x80
		if _, err := open(tampered, ctx); err == nil {
			t.Errorf("opened with header byte %d changed", i)
		}
	}
}

func FuzzParseCiphertext(f *testing.F) {
	for _, n := range []int{TagSize, TagSize + 1, 100, MaxCiphertextBlob - HeaderSize} {
		b, err := testCiphertext(n).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{CiphertextFormat})
	f.Add(bytes.Repeat([]byte{CiphertextFormat}, MinCiphertextBlob))
	f.Add(make([]byte, MinCiphertextBlob))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCiphertext(b)
		if err != nil {
			if err != ErrInvalidCiphertext { // identity, not errors.Is: one value for every cause
				t.Fatalf("error %v, want ErrInvalidCiphertext itself", err)
			}
			return
		}
		got, err := c.Marshal()
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", c, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("re-marshal = %x, want %x", got, b)
		}
		h, err := c.Header()
		if err != nil || !bytes.Equal(h, b[:HeaderSize]) {
			t.Fatalf("Header = %x, %v; want %x", h, err, b[:HeaderSize])
		}
		if id, err := ParseKeyID(c.KeyID); err != nil || FormatKeyID(id) != c.KeyID {
			t.Fatalf("KeyID %q is not canonical", c.KeyID)
		}
	})
}
