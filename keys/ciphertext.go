package keys

import (
	"encoding/binary"
	"errors"
)

// The symmetric ciphertext blob, as Encrypt returns it and Decrypt takes it.
// It names its own key and key version, so Decrypt needs no key id:
//
//	offset  size  field
//	     0     1  format, CiphertextFormat (0x01)
//	     1    16  key id, the UUID in binary (RFC 9562 byte order)
//	    17     4  key version, uint32 big-endian, 1 or more
//	    21    12  IV, the AES-GCM nonce
//	    33   n+16 AES-256-GCM ciphertext of the n-byte plaintext, then the 16-byte tag
//
// The header is bytes 0 to 32. AES-GCM authenticates AAD(header, context),
// so changing any header byte, or decrypting with a different encryption
// context, fails authentication. The whole blob is at most MaxCiphertextBlob
// bytes, as in AWS KMS.
const (
	CiphertextFormat  byte = 0x01
	IVSize                 = 12
	TagSize                = 16
	HeaderSize             = 1 + KeyIDSize + 4 + IVSize // 33
	MinCiphertextBlob      = HeaderSize + TagSize       // empty plaintext
	MaxCiphertextBlob      = 6144
)

// ErrInvalidCiphertext is the one error ParseCiphertext returns, whatever is
// wrong with the blob, so that it reveals nothing about the format (no
// format oracle). Decrypt should answer with it for authentication failures
// too.
var ErrInvalidCiphertext = errors.New("keys: invalid ciphertext")

// InvalidCiphertextMessage is what callers are told for every symmetric
// decryption failure, whatever its cause.
const InvalidCiphertextMessage = "the ciphertext is invalid, was not made by this key service, or its encryption context does not match"

// Ciphertext is a parsed symmetric ciphertext blob.
type Ciphertext struct {
	KeyID   string // canonical lowercase UUID text
	Version uint32 // key version, 1 or more
	IV      []byte // IVSize bytes
	Sealed  []byte // AES-GCM ciphertext || tag, at least TagSize bytes
}

// Header returns the HeaderSize bytes that start the blob, which are part of
// the AAD. It fails if c's key id, version or IV cannot be encoded.
func (c Ciphertext) Header() ([]byte, error) {
	return c.appendHeader(make([]byte, 0, HeaderSize))
}

func (c Ciphertext) appendHeader(b []byte) ([]byte, error) {
	id, err := ParseKeyID(c.KeyID)
	if err != nil {
		return nil, errors.New("keys: ciphertext key id is not a key id")
	}
	if c.Version == 0 {
		return nil, errors.New("keys: ciphertext key version must be 1 or more")
	}
	if len(c.IV) != IVSize {
		return nil, errors.New("keys: ciphertext IV must be 12 bytes")
	}
	b = append(b, CiphertextFormat)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint32(b, c.Version)
	return append(b, c.IV...), nil
}

// Marshal returns the blob. Its errors describe a blob the broker should not
// have built, so they are not ErrInvalidCiphertext.
func (c Ciphertext) Marshal() ([]byte, error) {
	if len(c.Sealed) < TagSize {
		return nil, errors.New("keys: ciphertext shorter than the GCM tag")
	}
	if HeaderSize+len(c.Sealed) > MaxCiphertextBlob {
		return nil, errors.New("keys: ciphertext longer than MaxCiphertextBlob")
	}
	b, err := c.appendHeader(make([]byte, 0, HeaderSize+len(c.Sealed)))
	if err != nil {
		return nil, err
	}
	return append(b, c.Sealed...), nil
}

// ParseCiphertext parses a blob made by Marshal. Any malformation gives
// ErrInvalidCiphertext itself. The result shares no memory with b.
func ParseCiphertext(b []byte) (Ciphertext, error) {
	if len(b) < MinCiphertextBlob || len(b) > MaxCiphertextBlob || b[0] != CiphertextFormat {
		return Ciphertext{}, ErrInvalidCiphertext
	}
	version := binary.BigEndian.Uint32(b[1+KeyIDSize:])
	if version == 0 {
		return Ciphertext{}, ErrInvalidCiphertext
	}
	return Ciphertext{
		KeyID:   FormatKeyID([KeyIDSize]byte(b[1 : 1+KeyIDSize])),
		Version: version,
		IV:      append([]byte(nil), b[HeaderSize-IVSize:HeaderSize]...),
		Sealed:  append([]byte(nil), b[HeaderSize:]...),
	}, nil
}

// AAD is the additional authenticated data of AES-GCM for a blob: its header
// followed by EncodeContext(ctx). The header has a fixed size, so the split
// is unambiguous, and an empty context adds nothing.
func AAD(header []byte, ctx EncryptionContext) []byte {
	enc := EncodeContext(ctx)
	aad := make([]byte, 0, len(header)+len(enc))
	return append(append(aad, header...), enc...)
}
