package client

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// memKeys is an in-memory DataKeyService: it wraps data keys under a
// master key with AES-GCM, binding the key id and the encryption context,
// as the broker does. It keeps every plaintext it hands out so tests can
// check that the caller erased them.
type memKeys struct {
	aead cipher.AEAD

	mu     sync.Mutex
	handed [][]byte
	fixed  []byte // if set, GenerateDataKey returns a copy of it
}

func newMemKeys(t testing.TB) *memKeys {
	t.Helper()
	master := make([]byte, 32)
	rand.Read(master)
	return newMemKeysWith(t, master)
}

// newMemKeysWith is newMemKeys under the given master key.
func newMemKeysWith(t testing.TB, master []byte) *memKeys {
	t.Helper()
	block, err := aes.NewCipher(master)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &memKeys{aead: aead}
}

func (m *memKeys) hand(p []byte) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handed = append(m.handed, p)
	return p
}

func (m *memKeys) GenerateDataKey(_ context.Context, keyID string, encCtx map[string]string) ([]byte, []byte, error) {
	if keyID == "" || strings.HasPrefix(keyID, "missing") {
		return nil, nil, fmt.Errorf("memKeys: key %q not found", keyID)
	}
	dk := make([]byte, 32)
	rand.Read(dk)
	if m.fixed != nil {
		copy(dk, m.fixed)
	}
	nonce := make([]byte, m.aead.NonceSize())
	rand.Read(nonce)
	blob := append([]byte(keyID+"\x00"), nonce...)
	blob = m.aead.Seal(blob, nonce, dk, appendContext([]byte(keyID), encCtx))
	return m.hand(dk), blob, nil
}

var errMemInvalidCiphertext = errors.New("memKeys: invalid ciphertext")

func (m *memKeys) Decrypt(_ context.Context, blob []byte, encCtx map[string]string) ([]byte, error) {
	keyID, rest, ok := bytes.Cut(blob, []byte{0})
	if !ok || len(rest) < m.aead.NonceSize() {
		return nil, errMemInvalidCiphertext
	}
	dk, err := m.aead.Open(nil, rest[:m.aead.NonceSize()], rest[m.aead.NonceSize():], appendContext(slices.Clone(keyID), encCtx))
	if err != nil {
		return nil, errMemInvalidCiphertext
	}
	return m.hand(dk), nil
}

// checkErased fails the test if any data key handed out is not all zeros.
func (m *memKeys) checkErased(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.handed) == 0 {
		t.Fatal("no data key was handed out")
	}
	for i, dk := range m.handed {
		if slices.ContainsFunc(dk, func(b byte) bool { return b != 0 }) {
			t.Errorf("data key %d not erased", i)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func seal(t *testing.T, env Envelope, encCtx map[string]string, plaintext []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := env.Encrypt(context.Background(), "key-1", encCtx, bytes.NewReader(plaintext), &out); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return out.Bytes()
}

func open(env Envelope, file []byte) ([]byte, error) {
	var out bytes.Buffer
	err := env.Decrypt(context.Background(), bytes.NewReader(file), &out)
	return out.Bytes(), err
}

func headerLen(t *testing.T, file []byte) int {
	t.Helper()
	_, raw, err := readHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatalf("readHeader: %v", err)
	}
	return len(raw)
}

func TestEnvelopeRoundTrip(t *testing.T) {
	const small = 100
	tests := []struct {
		name   string
		chunk  int
		size   int
		encCtx map[string]string
		chunks int
	}{
		{"empty", 0, 0, nil, 1},
		{"one byte", 0, 1, nil, 1},
		{"exactly one chunk", 0, DefaultChunkSize, nil, 1},
		{"one chunk and a byte", 0, DefaultChunkSize + 1, nil, 2},
		{"three default chunks and a bit", 0, 3*DefaultChunkSize + 5, map[string]string{"file": "a.txt"}, 4},
		{"exact multiple", small, 7 * small, nil, 7},
		{"many chunks", small, 250*small + 33, map[string]string{"b": "2", "a": "1", "empty": ""}, 251},
		{"chunk of one byte", 1, 40, nil, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := newMemKeys(t)
			env := Envelope{Keys: keys, ChunkSize: tt.chunk}
			plaintext := randomBytes(tt.size)
			file := seal(t, env, tt.encCtx, plaintext)

			chunk := tt.chunk
			if chunk == 0 {
				chunk = DefaultChunkSize
			}
			h, err := ReadHeader(bytes.NewReader(file))
			if err != nil {
				t.Fatal(err)
			}
			if int(h.ChunkSize) != chunk {
				t.Errorf("header chunk size %d, want %d", h.ChunkSize, chunk)
			}
			if len(tt.encCtx) > 0 && !equalContext(h.EncryptionContext, tt.encCtx) {
				t.Errorf("header context %v, want %v", h.EncryptionContext, tt.encCtx)
			}
			if want := headerLen(t, file) + tt.size + 16*tt.chunks; len(file) != want {
				t.Errorf("file is %d bytes, want %d (%d chunks)", len(file), want, tt.chunks)
			}

			got, err := open(Envelope{Keys: keys}, file)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, plaintext) {
				t.Fatalf("round trip changed the data (%d bytes in, %d out)", len(plaintext), len(got))
			}
			keys.checkErased(t)
		})
	}
}

func equalContext(a, b map[string]string) bool {
	return string(appendContext(nil, a)) == string(appendContext(nil, b))
}

// TestEnvelopeTamper checks that every kind of damage fails with the
// expected error and that no unauthenticated plaintext is written.
func TestEnvelopeTamper(t *testing.T) {
	const chunk = 64
	keys := newMemKeys(t)
	env := Envelope{Keys: keys, ChunkSize: chunk}
	plaintext := randomBytes(5*chunk + 10) // chunks 0-4 full, chunk 5 short and last
	encCtx := map[string]string{"purpose": "test"}
	file := seal(t, env, encCtx, plaintext)
	hl := headerLen(t, file)
	full := chunk + 16
	chunkAt := func(i int) (int, int) { return hl + i*full, min(hl+(i+1)*full, len(file)) }

	swap := func(b []byte, i, j int) []byte {
		b = slices.Clone(b)
		si, ei := chunkAt(i)
		sj, ej := chunkAt(j)
		ci, cj := slices.Clone(b[si:ei]), slices.Clone(b[sj:ej])
		copy(b[si:], cj)
		copy(b[sj:], ci)
		return b
	}
	flip := func(b []byte, at int) []byte {
		b = slices.Clone(b)
		b[at] ^= 0x01
		return b
	}
	withHeader := func(mut func(h *Header)) []byte {
		h, raw, err := readHeader(bytes.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		mut(h)
		nh, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return append(nh, file[len(raw):]...)
	}
	// A second file under the same key, for splicing.
	other := seal(t, env, encCtx, randomBytes(5*chunk+10))

	tests := []struct {
		name string
		file []byte
		// want is the error the result must wrap; nil means any error.
		want error
		// wantChunks is how many leading chunks' plaintext may be written.
		wantChunks int
	}{
		{"empty input", nil, ErrTruncated, 0},
		{"cut inside the magic", file[:5], ErrTruncated, 0},
		{"cut inside the header", file[:hl-3], ErrTruncated, 0},
		{"header only", file[:hl], ErrTruncated, 0},
		{"cut at a chunk boundary", file[:hl+3*full], ErrTruncated, 2},
		{"cut before the last chunk", file[:hl+5*full], ErrTruncated, 4},
		{"cut inside a chunk", file[:hl+2*full+10], ErrTampered, 2},
		{"cut inside the last tag", file[:len(file)-1], ErrTampered, 5},
		{"trailing data after a short final chunk", append(slices.Clone(file), 'x'), ErrTampered, 5},
		{"trailing chunk after a full final chunk", func() []byte {
			f := seal(t, env, nil, randomBytes(3*chunk))
			return append(f, make([]byte, full)...)
		}(), ErrTrailingData, 2},
		{"trailing byte after a full final chunk", func() []byte {
			f := seal(t, env, nil, randomBytes(3*chunk))
			return append(f, 0)
		}(), ErrTrailingData, 2},
		{"chunks swapped", swap(file, 1, 2), ErrTampered, 1},
		{"first two chunks swapped", swap(file, 0, 1), ErrTampered, 0},
		{"chunk dropped", append(slices.Clone(file[:hl+full]), file[hl+2*full:]...), ErrTampered, 1},
		{"chunk duplicated", append(slices.Clone(file[:hl+2*full]), file[hl+full:]...), ErrTampered, 2},
		{"chunk from another file", func() []byte {
			f := slices.Clone(file)
			copy(f[hl+2*full:hl+3*full], other[hl+2*full:hl+3*full])
			return f
		}(), ErrTampered, 2},
		{"ciphertext bit flipped", flip(file, hl+3*full+7), ErrTampered, 3},
		{"tag bit flipped", flip(file, hl+full-1), ErrTampered, 0},
		{"last chunk bit flipped", flip(file, len(file)-20), ErrTampered, 5},
		{"magic changed", flip(file, 0), ErrNotEnvelope, 0},
		{"version changed", flip(file, 9), ErrUnsupportedVersion, 0},
		{"nonce prefix changed", flip(file, hl-1), ErrTampered, 0},
		{"chunk size changed", withHeader(func(h *Header) { h.ChunkSize = chunk + 1 }), ErrTampered, 0},
		{"context changed", withHeader(func(h *Header) { h.EncryptionContext = map[string]string{"purpose": "other"} }), errMemInvalidCiphertext, 0},
		{"context removed", withHeader(func(h *Header) { h.EncryptionContext = nil }), errMemInvalidCiphertext, 0},
		{"data key blob changed", withHeader(func(h *Header) { h.EncryptedDataKey[len(h.EncryptedDataKey)-1] ^= 1 }), errMemInvalidCiphertext, 0},
		{"header from another file", append(slices.Clone(other[:hl]), file[hl:]...), ErrTampered, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := open(Envelope{Keys: keys}, tt.file)
			if err == nil {
				t.Fatal("Decrypt succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt: %v, want %v", err, tt.want)
			}
			if want := plaintext[:min(tt.wantChunks*chunk, len(plaintext))]; tt.file != nil && bytes.HasPrefix(tt.file, file[:hl]) && !bytes.Equal(got, want) {
				t.Fatalf("wrote %d bytes, want the %d bytes of the %d chunks before the damage", len(got), len(want), tt.wantChunks)
			}
			if len(got) > tt.wantChunks*chunk {
				t.Fatalf("wrote %d bytes, more than the %d chunks before the damage", len(got), tt.wantChunks)
			}
		})
	}
	keys.checkErased(t)
}

// TestEnvelopeEveryHeaderByte flips each header byte in turn: no change
// may go unnoticed.
func TestEnvelopeEveryHeaderByte(t *testing.T) {
	keys := newMemKeys(t)
	env := Envelope{Keys: keys, ChunkSize: 16}
	file := seal(t, env, map[string]string{"k": "v"}, []byte("attack at dawn, attack at dawn!"))
	for i := range headerLen(t, file) {
		f := slices.Clone(file)
		f[i] ^= 0x80
		if got, err := open(Envelope{Keys: keys}, f); err == nil || len(got) > 0 {
			t.Errorf("header byte %d flipped: err %v, %d bytes written", i, err, len(got))
		}
	}
}

func TestEnvelopeRequireContext(t *testing.T) {
	keys := newMemKeys(t)
	encCtx := map[string]string{"tenant": "a", "file": "x"}
	file := seal(t, Envelope{Keys: keys}, encCtx, []byte("hello"))
	tests := []struct {
		name    string
		require map[string]string
		want    error
	}{
		{"not required", nil, nil},
		{"same", map[string]string{"file": "x", "tenant": "a"}, nil},
		{"other value", map[string]string{"tenant": "b", "file": "x"}, ErrContextMismatch},
		{"subset", map[string]string{"tenant": "a"}, ErrContextMismatch},
		{"superset", map[string]string{"tenant": "a", "file": "x", "more": ""}, ErrContextMismatch},
		{"empty but set", map[string]string{}, ErrContextMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := open(Envelope{Keys: keys, RequireContext: tt.require}, file)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("Decrypt: %v, want %v", err, tt.want)
			}
			if tt.want == nil && string(got) != "hello" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestEnvelopeEncryptErrors(t *testing.T) {
	keys := newMemKeys(t)
	tests := []struct {
		name   string
		env    Envelope
		keyID  string
		encCtx map[string]string
		w      io.Writer
	}{
		{"unknown key", Envelope{Keys: keys}, "missing-key", nil, io.Discard},
		{"chunk size too large", Envelope{Keys: keys, ChunkSize: MaxChunkSize + 1}, "k", nil, io.Discard},
		{"negative chunk size", Envelope{Keys: keys, ChunkSize: -1}, "k", nil, io.Discard},
		{"empty context key", Envelope{Keys: keys}, "k", map[string]string{"": "v"}, io.Discard},
		{"context not UTF-8", Envelope{Keys: keys}, "k", map[string]string{"k": "\xff"}, io.Discard},
		{"writer fails", Envelope{Keys: keys}, "k", nil, failingWriter{}},
		{"data key of the wrong size", Envelope{Keys: shortKeys{keys}}, "k", nil, io.Discard},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.env.Encrypt(context.Background(), tt.keyID, tt.encCtx, strings.NewReader("data"), tt.w); err == nil {
				t.Fatal("Encrypt succeeded")
			}
		})
	}
	keys.checkErased(t) // the writer and short-key cases handed out keys
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// shortKeys hands out 16-byte data keys, which Encrypt must refuse.
type shortKeys struct{ *memKeys }

func (s shortKeys) GenerateDataKey(ctx context.Context, keyID string, encCtx map[string]string) ([]byte, []byte, error) {
	dk, blob, err := s.memKeys.GenerateDataKey(ctx, keyID, encCtx)
	short := s.hand(slices.Clone(dk[:16]))
	clear(dk)
	return short, blob, err
}

func TestEnvelopeReadError(t *testing.T) {
	keys := newMemKeys(t)
	file := seal(t, Envelope{Keys: keys, ChunkSize: 10}, nil, randomBytes(100))
	boom := errors.New("read failed")
	r := io.MultiReader(bytes.NewReader(file[:60]), errReader{boom})
	if err := (Envelope{Keys: keys}).Decrypt(context.Background(), r, io.Discard); !errors.Is(err, boom) {
		t.Fatalf("Decrypt: %v, want %v", err, boom)
	}
	if err := (Envelope{Keys: keys}).Encrypt(context.Background(), "k", nil, errReader{boom}, io.Discard); !errors.Is(err, boom) {
		t.Fatalf("Encrypt: %v, want %v", err, boom)
	}
	keys.checkErased(t)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestEnvelopeCancel(t *testing.T) {
	keys := newMemKeys(t)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	env := Envelope{Keys: keys, ChunkSize: 10, Progress: func(int64) {
		if n++; n == 3 {
			cancel()
		}
	}}
	err := env.Encrypt(ctx, "k", nil, bytes.NewReader(make([]byte, 1000)), io.Discard)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Encrypt: %v, want context.Canceled", err)
	}
}

func TestEnvelopeProgress(t *testing.T) {
	keys := newMemKeys(t)
	plaintext := randomBytes(10*1000 + 1)
	var seen []int64
	progress := func(n int64) { seen = append(seen, n) }
	var file bytes.Buffer
	if err := (Envelope{Keys: keys, ChunkSize: 1000, Progress: progress}).Encrypt(context.Background(), "k", nil, bytes.NewReader(plaintext), &file); err != nil {
		t.Fatal(err)
	}
	check := func(what string, total int64) {
		t.Helper()
		if len(seen) != 11 {
			t.Fatalf("%s: %d progress calls, want 11", what, len(seen))
		}
		if !slices.IsSorted(seen) || seen[len(seen)-1] != total {
			t.Fatalf("%s: progress %v, want increasing to %d", what, seen, total)
		}
	}
	check("encrypt", int64(len(plaintext)))
	seen = nil
	if err := (Envelope{Keys: keys, Progress: progress}).Decrypt(context.Background(), bytes.NewReader(file.Bytes()), io.Discard); err != nil {
		t.Fatal(err)
	}
	check("decrypt", int64(file.Len()))
}

// TestEnvelopeBoundedMemory encrypts and decrypts 64 MiB through pipes and
// checks that the bytes allocated stay far below the data size.
func TestEnvelopeBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB")
	}
	const size = 64 << 20
	keys := newMemKeys(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := (Envelope{Keys: keys}).Encrypt(context.Background(), "k", nil, io.LimitReader(zeroReader{}, size), pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	counter := &countingWriter{}
	if err := (Envelope{Keys: keys}).Decrypt(context.Background(), pr, counter); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if counter.n != size {
		t.Fatalf("decrypted %d bytes, want %d", counter.n, size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("allocated %d bytes to move %d", alloc, size)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// goldenKeys decrypts the golden file's data key: it is fixed so that the
// file, made once, stays readable by every later version of the package.
type goldenKeys struct{}

var (
	goldenDataKey = []byte("0123456789abcdef0123456789abcdef")
	goldenBlob    = []byte("golden-data-key-blob")
	goldenContext = map[string]string{"purpose": "golden", "app": "hsmctl"}
	goldenText    = bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog.\n"), 100) // 4500 bytes
)

func (goldenKeys) GenerateDataKey(context.Context, string, map[string]string) ([]byte, []byte, error) {
	return slices.Clone(goldenDataKey), goldenBlob, nil
}

func (goldenKeys) Decrypt(_ context.Context, blob []byte, encCtx map[string]string) ([]byte, error) {
	if !bytes.Equal(blob, goldenBlob) || !equalContext(encCtx, goldenContext) {
		return nil, errMemInvalidCiphertext
	}
	return slices.Clone(goldenDataKey), nil
}

// TestEnvelopeGolden reads a file written by the first version of the
// format (1000-byte chunks). Run with -update to rewrite it, which is only
// right when the format version changes.
func TestEnvelopeGolden(t *testing.T) {
	path := filepath.Join("testdata", "golden-v1.hsmbenv")
	if *update {
		var out bytes.Buffer
		if err := (Envelope{Keys: goldenKeys{}, ChunkSize: 1000}).Encrypt(context.Background(), "k", goldenContext, bytes.NewReader(goldenText), &out); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := open(Envelope{Keys: goldenKeys{}}, file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goldenText) {
		t.Fatal("golden file decrypts to other text")
	}
	h, err := ReadHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if h.ChunkSize != 1000 || !equalContext(h.EncryptionContext, goldenContext) || !bytes.Equal(h.EncryptedDataKey, goldenBlob) {
		t.Fatalf("golden header %+v", h)
	}
	// 5 chunks: 4 of 1000 bytes and one of 500.
	if want := headerLen(t, file) + len(goldenText) + 5*16; len(file) != want {
		t.Fatalf("golden file is %d bytes, want %d", len(file), want)
	}
}

// TestHeaderEncoding pins the header bytes of docs/FILE_FORMAT.md's example.
func TestHeaderEncoding(t *testing.T) {
	h := &Header{
		Version:           1,
		EncryptionContext: map[string]string{"b": "2", "a": "1"},
		EncryptedDataKey:  []byte{0xAA, 0xBB, 0xCC},
		ChunkSize:         65536,
		NoncePrefix:       [7]byte{1, 2, 3, 4, 5, 6, 7},
	}
	got, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("HSMBENV1")
	want = append(want, 0, 1) // version
	want = append(want, 0, 0, 0, 2)
	want = append(want, 0, 0, 0, 1, 'a', 0, 0, 0, 1, '1')
	want = append(want, 0, 0, 0, 1, 'b', 0, 0, 0, 1, '2')
	want = append(want, 0, 3, 0xAA, 0xBB, 0xCC)
	want = append(want, 0, 1, 0, 0)
	want = append(want, 1, 2, 3, 4, 5, 6, 7)
	if !bytes.Equal(got, want) {
		t.Fatalf("header\n got % x\nwant % x", got, want)
	}
	back, raw, err := readHeader(bytes.NewReader(append(slices.Clone(got), "chunks"...)))
	if err != nil || !bytes.Equal(raw, got) || !equalContext(back.EncryptionContext, h.EncryptionContext) {
		t.Fatalf("readHeader: %v, %+v", err, back)
	}
}

func TestReadHeaderRejects(t *testing.T) {
	valid := func() *Header {
		return &Header{Version: 1, EncryptedDataKey: []byte{1}, ChunkSize: 1}
	}
	encode := func(mut func(b []byte) []byte) []byte {
		b, err := valid().MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return mut(b)
	}
	ctxHeader := func(pairs ...string) []byte {
		b := append([]byte(EnvelopeMagic), 0, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(pairs)/2))
		for _, s := range pairs {
			b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
		b = append(b, 0, 1, 9)
		b = binary.BigEndian.AppendUint32(b, 100)
		return append(b, make([]byte, 7)...)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"other magic", []byte("HSMBENV2\x00\x01"), ErrNotEnvelope},
		{"text file", []byte("hello"), ErrNotEnvelope},
		{"version 0", encode(func(b []byte) []byte { b[9] = 0; return b }), ErrUnsupportedVersion},
		{"version 2", encode(func(b []byte) []byte { b[9] = 2; return b }), ErrUnsupportedVersion},
		{"65 pairs", encode(func(b []byte) []byte { b[13] = 65; return b }), ErrMalformedHeader},
		{"huge pair count", encode(func(b []byte) []byte { b[10] = 0xFF; return b }), ErrMalformedHeader},
		{"blob of 0 bytes", append([]byte(EnvelopeMagic), 0, 1, 0, 0, 0, 0, 0, 0), ErrMalformedHeader},
		{"blob too long", append([]byte(EnvelopeMagic), 0, 1, 0, 0, 0, 0, 0xFF, 0xFF), ErrMalformedHeader},
		{"chunk size 0", encode(func(b []byte) []byte { copy(b[len(b)-11:], []byte{0, 0, 0, 0}); return b }), ErrMalformedHeader},
		{"chunk size too big", encode(func(b []byte) []byte { copy(b[len(b)-11:], []byte{1, 0, 0, 1}); return b }), ErrMalformedHeader},
		{"valid context", ctxHeader("a", "1", "b", "2"), nil},
		{"keys out of order", ctxHeader("b", "1", "a", "2"), ErrMalformedHeader},
		{"duplicate keys", ctxHeader("a", "1", "a", "2"), ErrMalformedHeader},
		{"empty key", ctxHeader("", "1"), ErrMalformedHeader},
		{"key not UTF-8", ctxHeader("\xff", "1"), ErrMalformedHeader},
		{"value not UTF-8", ctxHeader("a", "\xc3"), ErrMalformedHeader},
		{"context too long", ctxHeader("a", strings.Repeat("v", MaxContextSize)), ErrMalformedHeader},
		{"huge key length", append(append([]byte(EnvelopeMagic), 0, 1, 0, 0, 0, 1), 0xFF, 0xFF, 0xFF, 0xFF), ErrMalformedHeader},
		{"truncated context", ctxHeader("a", "1")[:20], ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tt.b))
			if (err == nil) != (tt.want == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("ReadHeader: %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, h := range []*Header{
		{Version: 1, EncryptedDataKey: []byte{1}, ChunkSize: DefaultChunkSize},
		{Version: 1, EncryptionContext: map[string]string{"a": "1", "bb": ""}, EncryptedDataKey: bytes.Repeat([]byte{7}, 100), ChunkSize: 1},
		{Version: 1, EncryptionContext: map[string]string{"ключ": "значение"}, EncryptedDataKey: make([]byte, MaxDataKeyBlobSize), ChunkSize: MaxChunkSize},
	} {
		b, err := h.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b, 0xFF))
	}
	f.Add([]byte("HSMBENV1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, raw, err := readHeader(bytes.NewReader(data))
		if err != nil {
			if h != nil || raw != nil {
				t.Fatal("error with a header")
			}
			return
		}
		if !bytes.HasPrefix(data, raw) {
			t.Fatal("header bytes are not the input's prefix")
		}
		again, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted header does not encode: %v", err)
		}
		if !bytes.Equal(again, raw) {
			t.Fatalf("header not canonical:\n read % x\n  enc % x", raw, again)
		}
	})
}

// FuzzDecrypt feeds arbitrary files to Decrypt: it must fail cleanly, with
// one of the errors it documents, and never write plaintext for a file it
// did not make, not even before it fails (every file it made holds zeros,
// so any other byte written is one that did not authenticate); and the data
// key it recovers is erased whatever happens.
//
// The master key is fixed: the fuzzing engine calls FuzzDecrypt again in
// each worker process, and under a random master key the seeds the
// coordinator made would not decrypt in any worker, so that no input would
// ever reach a chunk.
func FuzzDecrypt(f *testing.F) {
	keys := newMemKeysWith(f, bytes.Repeat([]byte{0x5a}, 32))
	for _, size := range []int{0, 1, 50, 100} {
		var out bytes.Buffer
		if err := (Envelope{Keys: keys, ChunkSize: 16}).Encrypt(context.Background(), "k", map[string]string{"a": "b"}, bytes.NewReader(make([]byte, size)), &out); err != nil {
			f.Fatal(err)
		}
		f.Add(out.Bytes())
	}
	documented := []error{ErrNotEnvelope, ErrUnsupportedVersion, ErrMalformedHeader, ErrTruncated, ErrTrailingData, ErrTampered, errMemInvalidCiphertext}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys.mu.Lock()
		keys.handed = nil
		keys.mu.Unlock()
		var out bytes.Buffer
		err := (Envelope{Keys: keys}).Decrypt(context.Background(), bytes.NewReader(data), &out)
		if slices.ContainsFunc(out.Bytes(), func(b byte) bool { return b != 0 }) {
			t.Fatalf("wrote bytes of a file the test did not make (error %v)", err)
		}
		if err != nil && !slices.ContainsFunc(documented, func(e error) bool { return errors.Is(err, e) }) {
			t.Fatalf("error %v wraps none of the documented errors", err)
		}
		keys.mu.Lock()
		defer keys.mu.Unlock()
		for _, dk := range keys.handed {
			if slices.ContainsFunc(dk, func(b byte) bool { return b != 0 }) {
				t.Fatal("data key not erased")
			}
		}
	})
}
