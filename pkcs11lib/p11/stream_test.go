package p11

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// rawCalls counts the node's audited RawEncrypt and RawDecrypt calls.
func rawCalls(t *testing.T, c *hsmtest.Cluster) int {
	t.Helper()
	b, err := os.ReadFile(c.Nodes[0].AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte(`"operation":"kms:RawEncrypt"`)) + bytes.Count(b, []byte(`"operation":"kms:RawDecrypt"`))
}

// multiPart runs a whole multi-part encryption or decryption of in, in
// parts of the given sizes (the last repeated), each Update into a buffer
// of exactly the length its length query gave.
func (f *fixture) multiPart(h uint64, enc bool, mech Mechanism, key uint64, in []byte, parts ...int) []byte {
	f.t.Helper()
	init, update, final := f.m.DecryptInit, f.m.DecryptUpdate, f.m.DecryptFinal
	if enc {
		init, update, final = f.m.EncryptInit, f.m.EncryptUpdate, f.m.EncryptFinal
	}
	if rv := init(h, mech, key); rv != CKR_OK {
		f.t.Fatalf("Init %#x: %#x", mech.Type, rv)
	}
	var out []byte
	for i := 0; len(in) > 0; i++ {
		part := in[:min(len(in), parts[min(i, len(parts)-1)])]
		in = in[len(part):]
		_, n, rv := update(h, part, Out{Query: true})
		if rv != CKR_OK {
			f.t.Fatalf("Update %#x (length): %#x", mech.Type, rv)
		}
		res, got, rv := update(h, part, Out{Cap: n})
		if rv != CKR_OK || got != n || uint64(len(res)) != n {
			f.t.Fatalf("Update %#x of %d bytes: %#x, %d bytes, announced %d", mech.Type, len(part), rv, len(res), n)
		}
		out = append(out, res...)
	}
	res, rv := final(h, Out{Cap: 1 << 20})
	if rv != CKR_OK {
		f.t.Fatalf("Final %#x: %#x", mech.Type, rv)
	}
	return append(out, res...)
}

// TestRawAESMultiPart: C_EncryptUpdate and C_DecryptUpdate return output
// as it comes, as SoftHSM and HSM libraries do: CBC, CBC_PAD and CTR every
// whole block (CBC_PAD decryption holding back the last block for the
// padding), chained from part to part, so that any split of the input
// gives the single-part result; inputs longer than one broker call (64
// KiB); the two-call convention of Update; and the broker calls made.
func TestRawAESMultiPart(t *testing.T) {
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	f := newFixtureOn(t, c, "")
	h := f.open()
	key, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("stream")}})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey: %#x", rv)
	}
	data := make([]byte, 70000)
	for i := range data {
		data[i] = byte(i*131 + i>>8)
	}
	iv := []byte("0123456789abcdef")
	nearWrap := append(bytes.Repeat([]byte{9}, 14), 0xff, 0xf0) // a 16-bit counter wraps after 16 blocks
	mechs := []Mechanism{
		{Type: CKM_AES_CBC_PAD, Param: iv},
		{Type: CKM_AES_CBC, Param: iv},
		{Type: CKM_AES_CTR, HasParam: true, IV: iv, CounterBits: 128},
		{Type: CKM_AES_CTR, HasParam: true, IV: nearWrap, CounterBits: 16},
	}
	for _, mech := range mechs {
		for _, size := range []int{0, 1, 15, 16, 17, 48, 1000, 4096, 65535, 70000} {
			if mech.Type == CKM_AES_CBC {
				size -= size % 16
			}
			in := data[:size]
			splits := [][]int{{1024}, {65536 + 3}, {size + 1}}
			if size <= 4096 {
				splits = append(splits, []int{1}, []int{7, 9, 16}, []int{15, 17, 33}, []int{16})
			}
			var single []byte
			if size <= 64<<10 {
				var rv uint64
				if single, rv = f.crypt(h, true, mech, key, in); rv != CKR_OK {
					t.Fatalf("C_Encrypt %#x of %d bytes: %#x", mech.Type, size, rv)
				}
			}
			for _, split := range splits {
				name := fmt.Sprintf("mechanism %#x, %d bytes in parts of %v", mech.Type, size, split)
				ct := f.multiPart(h, true, mech, key, in, split...)
				if single != nil && !bytes.Equal(ct, single) {
					t.Fatalf("%s: the parts' ciphertext differs from C_Encrypt's", name)
				}
				if mech.Type == CKM_AES_CBC_PAD && len(ct) != size/16*16+16 || mech.Type != CKM_AES_CBC_PAD && len(ct) != size {
					t.Fatalf("%s: %d bytes of ciphertext", name, len(ct))
				}
				if pt := f.multiPart(h, false, mech, key, ct, split...); !bytes.Equal(pt, in) {
					t.Fatalf("%s: decrypted in parts, %d bytes differ", name, len(pt))
				}
				if single != nil {
					if pt, rv := f.crypt(h, false, mech, key, ct); rv != CKR_OK || !bytes.Equal(pt, in) {
						t.Fatalf("%s: C_Decrypt: %#x", name, rv)
					}
				}
			}
		}
	}

	// The two-call convention, and the broker calls: an Update of less
	// than a block, a length query and a short buffer make none.
	cbcPad := Mechanism{Type: CKM_AES_CBC_PAD, Param: iv}
	want, _ := f.crypt(h, true, cbcPad, key, data[:20])
	if rv := f.m.EncryptInit(h, cbcPad, key); rv != CKR_OK {
		t.Fatal(rv)
	}
	calls := rawCalls(t, c)
	for i := 0; i < 3; i++ {
		if res, n, rv := f.m.EncryptUpdate(h, data[i:i+1], Out{Cap: 0}); rv != CKR_OK || n != 0 || len(res) != 0 {
			t.Fatalf("Update of a byte: %#x, %d bytes", rv, n)
		}
	}
	if _, n, rv := f.m.EncryptUpdate(h, data[3:20], Out{Query: true}); rv != CKR_OK || n != 16 {
		t.Fatalf("length query: %#x, %d", rv, n)
	}
	if _, n, rv := f.m.EncryptUpdate(h, data[3:20], Out{Cap: 15}); rv != CKR_BUFFER_TOO_SMALL || n != 16 {
		t.Fatalf("short buffer: %#x, %d", rv, n)
	}
	if got := rawCalls(t, c); got != calls {
		t.Fatalf("%d broker calls for Updates of less than a block, a length query and a short buffer", got-calls)
	}
	if rv := f.m.EncryptInit(h, cbcPad, key); rv != CKR_OPERATION_ACTIVE {
		t.Fatalf("EncryptInit after CKR_BUFFER_TOO_SMALL: %#x", rv)
	}
	ct, n, rv := f.m.EncryptUpdate(h, data[3:20], Out{Cap: 16})
	if rv != CKR_OK || n != 16 || !bytes.Equal(ct, want[:16]) {
		t.Fatalf("Update: %#x, %d bytes", rv, n)
	}
	last, rv := f.m.EncryptFinal(h, Out{Query: true})
	if rv != CKR_OK || len(last) != 16 {
		t.Fatalf("Final's length: %#x %d", rv, len(last))
	}
	if last, rv = f.m.EncryptFinal(h, Out{Cap: 16}); rv != CKR_OK || !bytes.Equal(last, want[16:]) {
		t.Fatalf("Final: %#x", rv)
	}
	if got := rawCalls(t, c); got != calls+2 {
		t.Fatalf("%d broker calls for a block and a Final, want 2", got-calls)
	}

	// A CBC_PAD decryption releases all but the last block, which Final
	// checks; a ciphertext that is not whole blocks fails at Final.
	if rv := f.m.DecryptInit(h, cbcPad, key); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, n, rv := f.m.DecryptUpdate(h, want, Out{Cap: 32}); rv != CKR_OK || n != 16 {
		t.Fatalf("DecryptUpdate of two blocks: %#x, %d bytes", rv, n)
	}
	if pt, rv := f.m.DecryptFinal(h, Out{Cap: 16}); rv != CKR_OK || !bytes.Equal(pt, data[16:20]) {
		t.Fatalf("DecryptFinal: %#x %x", rv, pt)
	}
	if rv := f.m.DecryptInit(h, cbcPad, key); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, _, rv := f.m.DecryptUpdate(h, want[:31], Out{Cap: 32}); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := f.m.DecryptFinal(h, Out{Cap: 32}); rv != CKR_ENCRYPTED_DATA_LEN_RANGE {
		t.Fatalf("DecryptFinal of 31 bytes: %#x", rv)
	}
	if rv := f.m.EncryptInit(h, Mechanism{Type: CKM_AES_CBC, Param: iv}, key); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, _, rv := f.m.EncryptUpdate(h, data[:20], Out{Cap: 32}); rv != CKR_OK {
		t.Fatal(rv)
	}
	if _, rv := f.m.EncryptFinal(h, Out{Cap: 32}); rv != CKR_DATA_LEN_RANGE {
		t.Fatalf("CBC EncryptFinal with 4 bytes left: %#x", rv)
	}

	// GCM buffers: its Updates return nothing, Final all of it.
	gcm := Mechanism{Type: CKM_AES_GCM, HasParam: true, IV: iv[:12], TagBits: 128}
	gcmCT, _ := f.crypt(h, true, gcm, key, data[:100])
	if got := f.multiPart(h, true, gcm, key, data[:100], 30); !bytes.Equal(got, gcmCT) {
		t.Fatal("GCM in parts differs")
	}
	if got := f.multiPart(h, false, gcm, key, gcmCT, 30); !bytes.Equal(got, data[:100]) {
		t.Fatal("GCM decryption in parts differs")
	}
}

// TestRawAESCTRCounter: the counter is the low ulCounterBits bits of the
// counter block and counts modulo 2^ulCounterBits, the bits above it
// unchanged; with 128 bits the block after ff..ff is 00..00. Each
// keystream block is checked against the encryption of its counter block
// alone (CBC with a zero IV). An input longer than 2^ulCounterBits blocks
// would repeat the keystream: CKR_DATA_LEN_RANGE.
func TestRawAESCTRCounter(t *testing.T) {
	f := newFixture(t, "")
	h := f.open()
	key, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte("ctr")}})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey: %#x", rv)
	}
	block := func(cb []byte) []byte {
		t.Helper()
		ks, rv := f.crypt(h, true, Mechanism{Type: CKM_AES_CBC, Param: make([]byte, 16)}, key, cb)
		if rv != CKR_OK {
			t.Fatalf("CBC of %x: %#x", cb, rv)
		}
		return ks
	}
	cb := func(prefix byte, tail ...byte) []byte {
		return append(bytes.Repeat([]byte{prefix}, 16-len(tail)), tail...)
	}
	for _, tc := range []struct {
		bits     uint64
		iv       []byte
		n        int
		counters [][]byte
	}{
		{128, cb(0xff), 17, [][]byte{cb(0xff), cb(0)}},
		{128, cb(0xff), 32, [][]byte{cb(0xff), cb(0)}},
		{128, cb(0xff, 0xfe), 48, [][]byte{cb(0xff, 0xfe), cb(0xff), cb(0)}},
		{128, cb(0xff, 0xff, 0xff), 40, [][]byte{cb(0xff), cb(0), cb(0, 1)}},
		{64, cb(0xff), 33, [][]byte{cb(0xff), cb(0xff, 0, 0, 0, 0, 0, 0, 0, 0), cb(0xff, 0, 0, 0, 0, 0, 0, 0, 1)}},
		{8, cb(0x0a, 0xff), 40, [][]byte{cb(0x0a, 0xff), cb(0x0a, 0x00), cb(0x0a, 0x01)}},
		{4, cb(0x0a, 0xae), 48, [][]byte{cb(0x0a, 0xae), cb(0x0a, 0xaf), cb(0x0a, 0xa0)}},
		{1, cb(0x0a, 0x01), 32, [][]byte{cb(0x0a, 0x01), cb(0x0a, 0x00)}},
	} {
		name := fmt.Sprintf("%d-bit counter from %x over %d bytes", tc.bits, tc.iv, tc.n)
		mech := Mechanism{Type: CKM_AES_CTR, HasParam: true, IV: tc.iv, CounterBits: tc.bits}
		pt := make([]byte, tc.n)
		for i := range pt {
			pt[i] = byte(i * 7)
		}
		ct, rv := f.crypt(h, true, mech, key, pt)
		if rv != CKR_OK {
			t.Fatalf("%s: %#x", name, rv)
		}
		var stream []byte
		for _, c := range tc.counters {
			stream = append(stream, block(c)...)
		}
		for i := range pt {
			if ct[i] != pt[i]^stream[i] {
				t.Fatalf("%s: byte %d is not of the keystream of counter block %x", name, i, tc.counters[i/16])
			}
		}
		if back, rv := f.crypt(h, false, mech, key, ct); rv != CKR_OK || !bytes.Equal(back, pt) {
			t.Fatalf("%s: decrypt: %#x", name, rv)
		}
		for _, split := range [][]int{{1}, {5, 20, 15}, {16}} {
			if got := f.multiPart(h, true, mech, key, pt, split...); !bytes.Equal(got, ct) {
				t.Fatalf("%s: in parts of %v, the ciphertext differs", name, split)
			}
		}
	}
	for _, tc := range []struct {
		bits uint64
		n    int
	}{{1, 33}, {4, 16*16 + 1}, {8, 257 * 16}} {
		mech := Mechanism{Type: CKM_AES_CTR, HasParam: true, IV: cb(3), CounterBits: tc.bits}
		if _, rv := f.crypt(h, true, mech, key, make([]byte, tc.n)); rv != CKR_DATA_LEN_RANGE {
			t.Fatalf("%d bytes with a %d-bit counter: %#x, want CKR_DATA_LEN_RANGE", tc.n, tc.bits, rv)
		}
		// In parts, the part that would reuse a counter block fails.
		if rv := f.m.EncryptInit(h, mech, key); rv != CKR_OK {
			t.Fatal(rv)
		}
		in := make([]byte, tc.n)
		if _, _, rv := f.m.EncryptUpdate(h, in[:tc.n-17], Out{Cap: uint64(tc.n)}); rv != CKR_OK {
			t.Fatalf("%d-bit counter, first part: %#x", tc.bits, rv)
		}
		_, _, rv1 := f.m.EncryptUpdate(h, in[tc.n-17:], Out{Cap: uint64(tc.n)})
		_, rv2 := f.m.EncryptFinal(h, Out{Cap: uint64(tc.n)})
		if rv1 != CKR_DATA_LEN_RANGE && rv2 != CKR_DATA_LEN_RANGE {
			t.Fatalf("%d bytes in parts with a %d-bit counter: %#x, %#x", tc.n, tc.bits, rv1, rv2)
		}
	}
}

// TestLogoutInvalidatesPrivateHandles: on C_Logout the handles of private
// objects (secret and private keys, private data objects) become invalid in
// every session, and stay so after a new login; public objects keep theirs.
// Closing the token's last session logs out as well.
func TestLogoutInvalidatesPrivateHandles(t *testing.T) {
	f := newFixture(t, "1234-pin")
	f.createKey("logout-rsa", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	h, h2 := f.open(), f.open()
	login := func() {
		t.Helper()
		if rv := f.m.Login(h, CKU_USER, []byte("1234-pin")); rv != CKR_OK {
			t.Fatalf("Login: %#x", rv)
		}
	}
	login()
	label := "ORACLE.TDE.HSM.MK.LOGOUT"
	aes, rv := f.m.GenerateKey(h, Mechanism{Type: CKM_AES_KEY_GEN}, []Attribute{{CKA_LABEL, []byte(label)}})
	if rv != CKR_OK {
		t.Fatalf("GenerateKey: %#x", rv)
	}
	priv, pub := f.one(h, CKO_PRIVATE_KEY, "logout-rsa"), f.one(h, CKO_PUBLIC_KEY, "logout-rsa")
	data := func(label string, private byte) uint64 {
		t.Helper()
		o, rv := f.m.CreateObject(h, []Attribute{{CKA_CLASS, ulong(CKO_DATA)}, {CKA_LABEL, []byte(label)}, {CKA_PRIVATE, []byte{private}}, {CKA_VALUE, []byte("v")}})
		if rv != CKR_OK {
			t.Fatalf("CreateObject: %#x", rv)
		}
		return o
	}
	privData, pubData := data("private-data", 1), data("public-data", 0)
	cbc := Mechanism{Type: CKM_AES_CBC_PAD, Param: make([]byte, 16)}
	sha := Mechanism{Type: CKM_SHA256_RSA_PKCS}
	if rv := f.m.EncryptInit(h2, cbc, aes); rv != CKR_OK {
		t.Fatalf("EncryptInit before logout: %#x", rv)
	}
	if _, rv := f.m.Encrypt(h2, []byte("x"), Out{Cap: 16}); rv != CKR_OK {
		t.Fatalf("Encrypt before logout: %#x", rv)
	}
	// A search started before the logout, in the other session, over
	// every object: what it returns after the logout is only what still
	// has a handle.
	if rv := f.m.FindObjectsInit(h2, nil); rv != CKR_OK {
		t.Fatalf("FindObjectsInit before logout: %#x", rv)
	}
	if first, rv := f.m.FindObjects(h2, 1); rv != CKR_OK || len(first) != 1 {
		t.Fatalf("FindObjects before logout: %v %#x", first, rv)
	}
	if rv := f.m.Logout(h); rv != CKR_OK {
		t.Fatalf("Logout: %#x", rv)
	}
	rest, rv := f.m.FindObjects(h2, 100)
	if rv != CKR_OK {
		t.Fatalf("FindObjects after logout: %#x", rv)
	}
	if rv := f.m.FindObjectsFinal(h2); rv != CKR_OK {
		t.Fatalf("FindObjectsFinal: %#x", rv)
	}
	for _, o := range rest {
		if o == aes || o == priv || o == privData {
			t.Fatalf("a search begun before C_Logout returned private object %d after it (all: %v)", o, rest)
		}
	}
	invalid := func(when string) {
		t.Helper()
		for _, s := range []uint64{h, h2} {
			for name, rv := range map[string]uint64{
				"EncryptInit": f.m.EncryptInit(s, cbc, aes),
				"DecryptInit": f.m.DecryptInit(s, cbc, aes),
				"SignInit":    f.m.SignInit(s, sha, priv),
				"VerifyInit":  f.m.VerifyInit(s, sha, priv),
			} {
				if rv != CKR_KEY_HANDLE_INVALID {
					t.Fatalf("%s: %s with a private key's handle: %#x, want CKR_KEY_HANDLE_INVALID", when, name, rv)
				}
			}
			for _, o := range []uint64{aes, priv, privData} {
				if _, rv := f.m.GetAttribute(s, o, CKA_CLASS); rv != CKR_OBJECT_HANDLE_INVALID {
					t.Fatalf("%s: C_GetAttributeValue of private object %d: %#x", when, o, rv)
				}
			}
			if rv := f.m.DestroyObject(s, privData); rv != CKR_OBJECT_HANDLE_INVALID {
				t.Fatalf("%s: C_DestroyObject of a private data object: %#x", when, rv)
			}
			for _, o := range []uint64{pub, pubData} {
				if _, rv := f.m.GetAttribute(s, o, CKA_CLASS); rv != CKR_OK {
					t.Fatalf("%s: C_GetAttributeValue of public object %d: %#x", when, o, rv)
				}
			}
		}
	}
	invalid("after C_Logout")
	login()
	invalid("after a new login")
	aes2 := f.one(h, CKO_SECRET_KEY, label)
	if aes2 == aes {
		t.Fatal("a search after logout gave the private key its old handle")
	}
	if got := f.one(h, CKO_PUBLIC_KEY, "logout-rsa"); got != pub {
		t.Fatalf("the public key's handle changed: %d, was %d", got, pub)
	}
	if _, rv := f.crypt(h, true, cbc, aes2, []byte("table key")); rv != CKR_OK {
		t.Fatalf("encrypt with the key found again: %#x", rv)
	}
	if rv := f.m.DestroyObject(h, f.one(h, CKO_DATA, "private-data")); rv != CKR_OK {
		t.Fatalf("DestroyObject of the data object found again: %#x", rv)
	}
	// The last session's close logs out.
	for _, s := range []uint64{h, h2} {
		if rv := f.m.CloseSession(s); rv != CKR_OK {
			t.Fatal(rv)
		}
	}
	h = f.open()
	login()
	if rv := f.m.EncryptInit(h, cbc, aes2); rv != CKR_KEY_HANDLE_INVALID {
		t.Fatalf("EncryptInit with a handle from before the last session closed: %#x", rv)
	}
}
