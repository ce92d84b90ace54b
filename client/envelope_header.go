package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hsmbroker/hsmbroker/keys"
)

// The envelope file header. docs/FILE_FORMAT.md describes it byte by byte.
const (
	// EnvelopeMagic opens every envelope file.
	EnvelopeMagic = "HSMBENV1"
	// EnvelopeVersion is the header version this package writes and reads.
	EnvelopeVersion uint16 = 1
	// NoncePrefixSize is the length of the random part of each chunk nonce.
	NoncePrefixSize = 7

	// DefaultChunkSize is the plaintext bytes per chunk that Encrypt writes.
	DefaultChunkSize = 64 << 10
	// MaxChunkSize bounds the chunk size a header may declare, and so the
	// memory Decrypt needs (about twice the chunk size).
	MaxChunkSize = 16 << 20

	// MaxContextPairs and MaxContextSize bound an encryption context: the
	// broker's own limits (keys.MaxContextPairs, keys.MaxContextSize).
	MaxContextPairs = keys.MaxContextPairs
	MaxContextSize  = keys.MaxContextSize
	// MaxDataKeyBlobSize is the largest ciphertext blob Decrypt accepts.
	MaxDataKeyBlobSize = 6144
)

// Errors of the envelope format. Every error Decrypt returns for a bad file
// wraps one of them.
var (
	// ErrNotEnvelope: the input does not start with EnvelopeMagic.
	ErrNotEnvelope = errors.New("client: not an envelope-encrypted file (bad magic)")
	// ErrUnsupportedVersion: the header version is not EnvelopeVersion.
	ErrUnsupportedVersion = errors.New("client: unsupported envelope header version")
	// ErrMalformedHeader: a header field is out of range or not canonical.
	ErrMalformedHeader = errors.New("client: malformed envelope header")
	// ErrTruncated: the file ends early, at a chunk boundary or inside the
	// header.
	ErrTruncated = errors.New("client: envelope file is truncated")
	// ErrTrailingData: bytes follow the final chunk.
	ErrTrailingData = errors.New("client: envelope file has data after its final chunk")
	// ErrTampered: a chunk failed authentication. The file was altered
	// (header or chunk), cut or extended inside a chunk, or its chunks were
	// reordered or taken from another file.
	ErrTampered = errors.New("client: envelope file failed authentication")
	// ErrContextMismatch: the file's encryption context is not the one the
	// caller required.
	ErrContextMismatch = errors.New("client: envelope file's encryption context differs from the one required")
)

// Header is the header of an envelope-encrypted file.
type Header struct {
	// Version is the header version, EnvelopeVersion.
	Version uint16
	// EncryptionContext is the context the data key was generated with and
	// must be decrypted with. It is stored in the clear.
	EncryptionContext map[string]string
	// EncryptedDataKey is the data key's KMS ciphertext blob.
	EncryptedDataKey []byte
	// ChunkSize is the plaintext bytes in every chunk but the last.
	ChunkSize uint32
	// NoncePrefix is the random first part of every chunk's nonce.
	NoncePrefix [NoncePrefixSize]byte
}

// MarshalBinary returns the header's encoding, which is also the AAD of
// every chunk. It fails for a header that ReadHeader would reject.
func (h *Header) MarshalBinary() ([]byte, error) {
	if h.Version != EnvelopeVersion {
		return nil, fmt.Errorf("%w %d", ErrUnsupportedVersion, h.Version)
	}
	if err := validateContext(h.EncryptionContext); err != nil {
		return nil, err
	}
	encCtx := appendContext(nil, h.EncryptionContext)
	if n := len(h.EncryptedDataKey); n == 0 || n > MaxDataKeyBlobSize {
		return nil, fmt.Errorf("%w: data key blob of %d bytes, want 1 to %d", ErrMalformedHeader, n, MaxDataKeyBlobSize)
	}
	if h.ChunkSize == 0 || h.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("%w: chunk size %d, want 1 to %d", ErrMalformedHeader, h.ChunkSize, MaxChunkSize)
	}
	b := make([]byte, 0, 8+2+len(encCtx)+2+len(h.EncryptedDataKey)+4+NoncePrefixSize)
	b = append(b, EnvelopeMagic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = append(b, encCtx...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.EncryptedDataKey)))
	b = append(b, h.EncryptedDataKey...)
	b = binary.BigEndian.AppendUint32(b, h.ChunkSize)
	b = append(b, h.NoncePrefix[:]...)
	return b, nil
}

// ReadHeader reads an envelope header from r and leaves r at the first
// chunk. It reads at most about 14 KiB, whatever r holds, and accepts only
// canonical headers: whatever it accepts, MarshalBinary encodes to the same
// bytes.
func ReadHeader(r io.Reader) (*Header, error) {
	h, _, err := readHeader(r)
	return h, err
}

// readHeader is ReadHeader that also returns the header's bytes.
func readHeader(r io.Reader) (*Header, []byte, error) {
	hr := &headerReader{r: r}
	magic := hr.next(len(EnvelopeMagic))
	if hr.err != nil {
		if string(hr.raw) != EnvelopeMagic[:len(hr.raw)] {
			return nil, nil, ErrNotEnvelope
		}
		return nil, nil, hr.err
	}
	if string(magic) != EnvelopeMagic {
		return nil, nil, ErrNotEnvelope
	}
	h := &Header{Version: hr.uint16()}
	if hr.err == nil && h.Version != EnvelopeVersion {
		return nil, nil, fmt.Errorf("%w %d (this program reads version %d)", ErrUnsupportedVersion, h.Version, EnvelopeVersion)
	}
	h.EncryptionContext = hr.context()
	if n := hr.uint16(); hr.err == nil {
		if n == 0 || n > MaxDataKeyBlobSize {
			hr.fail("data key blob of %d bytes, want 1 to %d", n, MaxDataKeyBlobSize)
		}
		h.EncryptedDataKey = slices.Clone(hr.next(int(n)))
	}
	if h.ChunkSize = hr.uint32(); hr.err == nil && (h.ChunkSize == 0 || h.ChunkSize > MaxChunkSize) {
		hr.fail("chunk size %d, want 1 to %d", h.ChunkSize, MaxChunkSize)
	}
	copy(h.NoncePrefix[:], hr.next(NoncePrefixSize))
	if hr.err != nil {
		return nil, nil, hr.err
	}
	return h, hr.raw, nil
}

// headerReader reads header fields, keeping the bytes read and the first
// error; after an error every read returns zero values.
type headerReader struct {
	r   io.Reader
	raw []byte
	err error
}

func (hr *headerReader) next(n int) []byte {
	if hr.err != nil {
		return nil
	}
	start := len(hr.raw)
	hr.raw = slices.Grow(hr.raw, n)[:start+n]
	if got, err := io.ReadFull(hr.r, hr.raw[start:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: it ends inside the header", ErrTruncated)
		}
		hr.raw = hr.raw[:start+got]
		hr.err = err
		return nil
	}
	return hr.raw[start:]
}

func (hr *headerReader) fail(format string, args ...any) {
	if hr.err == nil {
		hr.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformedHeader}, args...)...)
	}
}

func (hr *headerReader) uint16() uint16 {
	if b := hr.next(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (hr *headerReader) uint32() uint32 {
	if b := hr.next(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// context reads an encryption context as appendContext writes it. It
// reads field by field so that a length that lies costs at most
// MaxContextSize bytes, then leaves the rules (order, UTF-8, limits) to
// keys.DecodeContext, so that the broker and the envelope format accept
// exactly the same contexts.
func (hr *headerReader) context() map[string]string {
	start := len(hr.raw)
	n := hr.uint32()
	if hr.err != nil {
		return nil
	}
	if n > MaxContextPairs {
		hr.fail("encryption context of %d pairs, at most %d allowed", n, MaxContextPairs)
		return nil
	}
	if n == 0 {
		return nil
	}
	size := 4
	for range 2 * int(n) {
		l := hr.uint32()
		if hr.err != nil {
			return nil
		}
		if size += 4 + int(min(l, MaxContextSize+1)); size > MaxContextSize {
			hr.fail("encryption context longer than %d bytes", MaxContextSize)
			return nil
		}
		hr.next(int(l))
	}
	if hr.err != nil {
		return nil
	}
	ctx, err := keys.DecodeContext(hr.raw[start:])
	if err != nil {
		hr.fail("%v", err)
		return nil
	}
	return ctx
}

// appendContext appends the encoding of ctx: a uint32 pair count of zero
// for an empty context, else the broker's canonical encoding
// (keys.EncodeContext: the pair count, then each pair in increasing byte
// order of key as length-prefixed key and value, all big-endian).
func appendContext(b []byte, ctx map[string]string) []byte {
	if len(ctx) == 0 {
		return binary.BigEndian.AppendUint32(b, 0)
	}
	return append(b, keys.EncodeContext(ctx)...)
}

// validateContext applies the broker's rules for encryption contexts.
func validateContext(ctx map[string]string) error {
	if err := keys.ValidateContext(ctx); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}
