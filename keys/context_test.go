package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestEncodeContextGolden(t *testing.T) {
	ctx := EncryptionContext{
		"tenant":  "acme",
		"Purpose": "",       // upper case sorts before lower case
		"été":     "summer", // non-ASCII sorts after ASCII
	}
	checkGolden(t, "context.hex", EncodeContext(ctx), [][2]string{
		{"00000003", "3 pairs"},
		{"00000007", "len(key)"}, {hexOf("Purpose"), `"Purpose"`},
		{"00000000", "len(value): empty"},
		{"00000006", "len(key)"}, {hexOf("tenant"), `"tenant"`},
		{"00000004", "len(value)"}, {hexOf("acme"), `"acme"`},
		{"00000005", "len(key): bytes, not characters"}, {hexOf("été"), `"été"`},
		{"00000006", "len(value)"}, {hexOf("summer"), `"summer"`},
	})
}

func TestEncodeContextEmpty(t *testing.T) {
	for _, ctx := range []EncryptionContext{nil, {}} {
		if b := EncodeContext(ctx); len(b) != 0 {
			t.Errorf("EncodeContext(%#v) = %x, want no bytes", ctx, b)
		}
	}
	ctx, err := DecodeContext(nil)
	if err != nil || ctx != nil {
		t.Errorf("DecodeContext(nil) = %#v, %v; want nil, nil", ctx, err)
	}
}

func TestContextRoundTrip(t *testing.T) {
	maxPairs := EncryptionContext{}
	for i := range MaxContextPairs {
		maxPairs[fmt.Sprint(i)] = fmt.Sprint(i)
	}
	// 4 + 8 + 1 + len(value) = 8192
	maxSize := EncryptionContext{"k": strings.Repeat("v", MaxContextSize-13)}
	tests := []EncryptionContext{
		{"a": "1"},
		{"a": ""},
		{"a": "bc", "ab": "c"},
		{"key": "value", "Key": "value", "KEY": "value"},
		{"\x00": "\x00", "\x7f": "\U0010ffff"},
		{"日本": "語", "z": "a=b;c,d"},
		maxPairs,
		maxSize,
	}
	for i, ctx := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if err := ValidateContext(ctx); err != nil {
				t.Fatal(err)
			}
			b := EncodeContext(ctx)
			if len(b) != encodedContextSize(ctx) {
				t.Errorf("encoded %d bytes, encodedContextSize says %d", len(b), encodedContextSize(ctx))
			}
			got, err := DecodeContext(b)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, ctx) {
				t.Errorf("round trip = %v, want %v", got, ctx)
			}
			if again := EncodeContext(got); !bytes.Equal(again, b) {
				t.Error("encoding is not stable")
			}
		})
	}
}

// Contexts that differ only in where a boundary falls must not encode alike,
// or one could stand in for the other in the AAD.
func TestEncodeContextIsInjective(t *testing.T) {
	pairs := []EncryptionContext{
		{"a": "bc"}, {"ab": "c"}, {"abc": ""},
		{"a": "", "b": ""}, {"a": "b"},
		{"a": "\x00\x00\x00\x01b"},
	}
	seen := map[string]int{}
	for i, ctx := range pairs {
		k := string(EncodeContext(ctx))
		if j, ok := seen[k]; ok {
			t.Errorf("contexts %v and %v share an encoding", pairs[j], ctx)
		}
		seen[k] = i
	}
}

// enc builds context bytes by hand: numbers become uint32 big-endian,
// strings are copied.
func enc(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case int:
			b = binary.BigEndian.AppendUint32(b, uint32(p))
		case string:
			b = append(b, p...)
		default:
			panic(fmt.Sprintf("enc: %T", p))
		}
	}
	return b
}

func TestDecodeContextRejects(t *testing.T) {
	tooBig := enc(1, 1, "k", MaxContextSize-12, strings.Repeat("v", MaxContextSize-12))
	tests := []struct {
		name string
		b    []byte
		want string // a word the problem must contain
	}{
		{"zero pairs", enc(0), "zero pairs"},
		{"truncated count", []byte{0, 0, 1}, "truncated"},
		{"too many pairs", enc(65), "65 pairs"},
		{"huge count", enc(0xffffffff), "pairs"},
		{"missing pair", enc(2, 1, "a", 1, "1"), "pair 1"},
		{"key past end", enc(1, 5, "abc"), "key runs past"},
		{"huge key length", enc(1, 0xffffffff, "abc"), "key runs past"},
		{"truncated key length", append(enc(1), 0, 0), "key runs past"},
		{"value past end", enc(1, 1, "a", 9, "12"), "value runs past"},
		{"missing value", enc(1, 1, "a"), "value runs past"},
		{"trailing bytes", append(enc(1, 1, "a", 1, "1"), 0), "after the last pair"},
		{"unsorted", enc(2, 1, "b", 0, 1, "a", 0), "increasing"},
		{"duplicate", enc(2, 1, "a", 1, "1", 1, "a", 1, "2"), "increasing"},
		{"prefix after longer key", enc(2, 2, "ab", 0, 1, "a", 0), "increasing"},
		{"empty key", enc(1, 0, 1, "v"), "empty"},
		{"invalid UTF-8 key", enc(1, 1, "\xff", 0), "UTF-8"},
		{"invalid UTF-8 value", enc(1, 1, "k", 2, "\xc3("), "UTF-8"},
		{"surrogate in value", enc(1, 1, "k", 3, "\xed\xa0\x80"), "UTF-8"},
		{"over the size limit", tooBig, "more than 8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, err := DecodeContext(tt.b)
			checkErr(t, err, ErrInvalidArgument, "EncryptionContext")
			if ctx != nil {
				t.Errorf("got %v with the error", ctx)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestValidateContext(t *testing.T) {
	pairs := func(n int) EncryptionContext {
		ctx := EncryptionContext{}
		for i := range n {
			ctx[fmt.Sprint("k", i)] = "v"
		}
		return ctx
	}
	tests := []struct {
		name    string
		ctx     EncryptionContext
		wantErr string // "" means valid; else a word the problem must contain
	}{
		{"nil", nil, ""},
		{"empty", EncryptionContext{}, ""},
		{"one", EncryptionContext{"purpose": "backup"}, ""},
		{"empty value", EncryptionContext{"purpose": ""}, ""},
		{"64 pairs", pairs(64), ""},
		{"max size", EncryptionContext{"k": strings.Repeat("v", 8192-13)}, ""},
		{"65 pairs", pairs(65), "at most 64 pairs, got 65"},
		{"over size", EncryptionContext{"k": strings.Repeat("v", 8192-12)}, "at most 8192 bytes encoded, got 8193"},
		{"empty key", EncryptionContext{"": "v"}, "empty"},
		{"invalid UTF-8 key", EncryptionContext{"\xff": "v"}, "UTF-8"},
		{"invalid UTF-8 value", EncryptionContext{"k": "\xff"}, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateContext(tt.ctx)
			if tt.wantErr == "" {
				checkErr(t, err, nil, "")
				return
			}
			checkErr(t, err, ErrInvalidArgument, "EncryptionContext")
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzDecodeContext(f *testing.F) {
	f.Add([]byte{})
	f.Add(EncodeContext(EncryptionContext{"a": "1"}))
	f.Add(EncodeContext(EncryptionContext{"tenant": "acme", "Purpose": "", "été": "summer"}))
	f.Add(enc(0))
	f.Add(enc(2, 1, "b", 0, 1, "a", 0))
	f.Add(enc(1, 0xffffffff, "abc"))
	f.Add(append(enc(1, 1, "a", 1, "1"), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, err := DecodeContext(b)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "EncryptionContext" || !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v (%T) is not a FieldError for EncryptionContext", err, err)
			}
			if ctx != nil {
				t.Fatalf("got %v with the error", ctx)
			}
			return
		}
		if got := EncodeContext(ctx); !bytes.Equal(got, b) {
			t.Fatalf("decoded %v re-encodes to %x, not %x", ctx, got, b)
		}
		if err := ValidateContext(ctx); err != nil {
			t.Fatalf("decoded a context that fails validation: %v", err)
		}
	})
}

// FuzzContextRoundTrip checks the other direction: every valid context
// survives encoding, and DecodeContext rejects the encoding of every invalid
// one, so the decoder and ValidateContext agree.
func FuzzContextRoundTrip(f *testing.F) {
	f.Add("a", "1", "b", "2", 0)
	f.Add("ab", "c", "a", "bc", 0)
	f.Add("", "v", "k", "\xff", 0)
	f.Add("k", "", "k", "x", 64)
	f.Add("k", strings.Repeat("v", 100), "x", "y", 80)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, extra int) {
		ctx := EncryptionContext{k1: v1, k2: v2}
		for i := range min(max(extra, 0), 100) {
			ctx[fmt.Sprint("x", i)] = v1
		}
		b := EncodeContext(ctx)
		got, err := DecodeContext(b)
		if verr := ValidateContext(ctx); verr != nil {
			if err == nil {
				t.Fatalf("context failing validation (%v) decoded from its encoding", verr)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid context did not decode: %v", err)
		}
		if !maps.Equal(got, ctx) {
			t.Fatalf("round trip = %v, want %v", got, ctx)
		}
	})
}
