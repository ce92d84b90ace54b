package client

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
)

// dataKeySize is the AES-256 data key length.
const dataKeySize = 32

// Envelope encrypts and decrypts streams of any length under a KMS key by
// envelope encryption: a fresh data key per file from GenerateDataKey, used
// locally for chunked AES-256-GCM and stored only encrypted, in the file
// header. Memory use is bounded by the chunk size, not the file size. The
// zero value of every field but Keys means its default. An Envelope is safe
// for concurrent use if Keys and Progress are.
type Envelope struct {
	// Keys makes and recovers data keys. Required.
	Keys DataKeyService
	// ChunkSize is the plaintext bytes per chunk Encrypt writes, 1 to
	// MaxChunkSize. Zero means DefaultChunkSize. Decrypt takes the size from
	// the file.
	ChunkSize int
	// Progress, if set, is called after each chunk with the number of bytes
	// read from the input so far.
	Progress func(n int64)
	// RequireContext, if not nil, makes Decrypt refuse (ErrContextMismatch) a
	// file whose encryption context is not exactly these pairs, before it
	// asks for the data key. The context of a file is chosen by whoever wrote
	// it; set this when the context is what entitles the reader.
	RequireContext map[string]string
}

// EncryptStream encrypts r to w under the KMS key keyID (a key reference:
// key id, key ARN, alias name or alias ARN, of a SYMMETRIC_DEFAULT key),
// binding encCtx to the data key. progress, if not nil, is called after
// each 64 KiB chunk with the bytes read so far. See Envelope.Encrypt.
func EncryptStream(ctx context.Context, c *Client, keyID string, encCtx map[string]string, r io.Reader, w io.Writer, progress func(n int64)) error {
	return Envelope{Keys: c.DataKeys(), Progress: progress}.Encrypt(ctx, keyID, encCtx, r, w)
}

// DecryptStream decrypts an envelope file made by EncryptStream from r to w.
// progress, if not nil, is called after each chunk with the bytes read so
// far. See Envelope.Decrypt.
func DecryptStream(ctx context.Context, c *Client, r io.Reader, w io.Writer, progress func(n int64)) error {
	return Envelope{Keys: c.DataKeys(), Progress: progress}.Decrypt(ctx, r, w)
}

// Encrypt writes the envelope encryption of everything r holds to w. On
// error, w may hold part of the output, which the caller should discard.
// The plaintext data key is erased from memory before Encrypt returns
// (beyond the copies gRPC and the AES key schedule keep, which Go cannot
// reach).
func (e Envelope) Encrypt(ctx context.Context, keyID string, encCtx map[string]string, r io.Reader, w io.Writer) error {
	chunk := e.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if chunk < 1 || chunk > MaxChunkSize {
		return fmt.Errorf("client: chunk size %d, want 1 to %d", chunk, MaxChunkSize)
	}
	if err := validateContext(encCtx); err != nil {
		return err
	}
	h := &Header{Version: EnvelopeVersion, EncryptionContext: encCtx, ChunkSize: uint32(chunk)}
	if _, err := rand.Read(h.NoncePrefix[:]); err != nil {
		return err
	}
	aead, err := func() (cipher.AEAD, error) {
		dk, blob, err := e.Keys.GenerateDataKey(ctx, keyID, encCtx)
		defer clear(dk)
		if err != nil {
			return nil, fmt.Errorf("client: generate data key: %w", err)
		}
		h.EncryptedDataKey = blob
		return newChunkAEAD(dk)
	}()
	if err != nil {
		return err
	}
	header, err := h.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}

	// One byte of lookahead past each chunk tells whether it is the last.
	pt := make([]byte, chunk+1)
	defer clear(pt)
	ct := make([]byte, 0, chunk+aead.Overhead())
	var nonce [12]byte
	copy(nonce[:], h.NoncePrefix[:])
	var read int64
	have := 0
	for i := uint64(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, pt[have:])
		have += n
		read += int64(n)
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return err
		}
		if i > 0xFFFF_FFFF || (i == 0xFFFF_FFFF && !last) {
			return fmt.Errorf("client: input too large for one envelope file (more than 2^32 chunks)")
		}
		size := min(have, chunk)
		setChunkNonce(&nonce, uint32(i), last)
		ct = aead.Seal(ct[:0], nonce[:], pt[:size], header)
		if _, err := w.Write(ct); err != nil {
			return err
		}
		if e.Progress != nil {
			e.Progress(read)
		}
		if last {
			return nil
		}
		pt[0], have = pt[chunk], 1
	}
}

// Decrypt reads an envelope file from r, recovers its data key with the
// encryption context stored in its header, and writes the plaintext to w
// one chunk at a time, each only after it has authenticated: w never
// receives a byte that failed authentication. On error, w may hold the
// plaintext of the chunks before the failure, which the caller should
// discard. Errors for a bad file wrap ErrNotEnvelope,
// ErrUnsupportedVersion, ErrMalformedHeader, ErrTruncated, ErrTrailingData,
// ErrTampered or ErrContextMismatch; a data key the KMS refuses to decrypt
// (tampered header, wrong key service) gives its error, wrapped.
func (e Envelope) Decrypt(ctx context.Context, r io.Reader, w io.Writer) error {
	h, header, err := readHeader(r)
	if err != nil {
		return err
	}
	if e.RequireContext != nil && !maps.Equal(e.RequireContext, h.EncryptionContext) {
		return ErrContextMismatch
	}
	aead, err := func() (cipher.AEAD, error) {
		dk, err := e.Keys.Decrypt(ctx, h.EncryptedDataKey, h.EncryptionContext)
		defer clear(dk)
		if err != nil {
			return nil, fmt.Errorf("client: decrypt data key: %w", err)
		}
		return newChunkAEAD(dk)
	}()
	if err != nil {
		return err
	}

	chunk := int(h.ChunkSize)
	full := chunk + aead.Overhead()
	// One byte of lookahead past each chunk tells whether it is the last.
	ct := make([]byte, full+1)
	pt := make([]byte, 0, chunk)
	defer clear(pt[:cap(pt)])
	var nonce [12]byte
	copy(nonce[:], h.NoncePrefix[:])
	read := int64(len(header))
	have := 0
	for i := uint64(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, ct[have:])
		have += n
		read += int64(n)
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return err
		}
		if i > 0xFFFF_FFFF {
			return fmt.Errorf("%w: more than 2^32 chunks", ErrTampered)
		}
		size := min(have, full)
		if size < aead.Overhead() {
			if i == 0 && size == 0 {
				return fmt.Errorf("%w: it has no chunks", ErrTruncated)
			}
			return fmt.Errorf("%w at chunk %d: %d bytes, shorter than a tag (the file was cut or altered)", ErrTampered, i, size)
		}
		pt, err = openChunk(aead, &nonce, uint32(i), last, pt[:0], ct[:size], header, size == full)
		if err != nil {
			return err
		}
		if _, err := w.Write(pt); err != nil {
			return err
		}
		if e.Progress != nil {
			e.Progress(read)
		}
		if last {
			return nil
		}
		ct[0], have = ct[full], 1
	}
}

// openChunk authenticates and decrypts chunk i. When it fails and the
// chunk is full-sized, it tries the other value of the last-chunk flag to
// tell truncation (the file ends on a chunk sealed as not last) and
// trailing data (a chunk sealed as last is followed by more) from other
// tampering; a chunk that opens only with the wrong flag is never
// returned.
func openChunk(aead cipher.AEAD, nonce *[12]byte, i uint32, last bool, dst, chunk, header []byte, fullSize bool) ([]byte, error) {
	setChunkNonce(nonce, i, last)
	pt, err := aead.Open(dst, nonce[:], chunk, header)
	if err == nil {
		return pt, nil
	}
	if fullSize {
		setChunkNonce(nonce, i, !last)
		if _, err := aead.Open(dst, nonce[:], chunk, header); err == nil {
			clear(dst[:cap(dst)])
			if last {
				return nil, fmt.Errorf("%w: it ends after chunk %d, which is not the final chunk", ErrTruncated, i)
			}
			return nil, fmt.Errorf("%w (chunk %d)", ErrTrailingData, i)
		}
	}
	return nil, fmt.Errorf("%w at chunk %d (the file was altered, cut, extended or reordered)", ErrTampered, i)
}

// setChunkNonce makes the nonce of chunk i: the 7-byte prefix (already in
// place), the big-endian chunk counter, and 1 for the last chunk, else 0.
func setChunkNonce(nonce *[12]byte, i uint32, last bool) {
	binary.BigEndian.PutUint32(nonce[NoncePrefixSize:], i)
	nonce[11] = 0
	if last {
		nonce[11] = 1
	}
}

// newChunkAEAD makes the AES-256-GCM of the chunks. It keeps no reference
// to dk, which the caller erases.
func newChunkAEAD(dk []byte) (cipher.AEAD, error) {
	if len(dk) != dataKeySize {
		return nil, fmt.Errorf("client: data key of %d bytes, want %d (AES-256)", len(dk), dataKeySize)
	}
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
