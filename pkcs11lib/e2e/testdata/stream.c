/* Multi-part AES through libhsmbroker-pkcs11.so, as a C host calls it.
 *
 *   stream LIB LABEL IN OUT   log in, find the secret key LABEL, encrypt IN
 *                             (at most 64 KiB) with CKM_AES_CBC_PAD and the
 *                             IV 000102...0f in one C_Encrypt and write the
 *                             ciphertext to OUT; encrypt IN again in parts of
 *                             1, 15, 16, 17, 1000 and 4096 bytes with
 *                             C_EncryptUpdate and check the parts' output is
 *                             the same; decrypt it in parts with
 *                             C_DecryptUpdate and check the plaintext is IN.
 *
 * Every Update and Final asks its output's length first (a NULL buffer),
 * then gives a buffer one byte short (CKR_BUFFER_TOO_SMALL, the operation
 * goes on), then the right one. The PIN comes from HSMBROKER_PKCS11_PIN.
 * Exit 0 means every check held. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p;

#define CHECK(call, want) do { CK_RV rv_ = (call); if (rv_ != (want)) { \
	fprintf(stderr, "%s:%d: %s = 0x%lx, want 0x%lx\n", __FILE__, __LINE__, #call, rv_, (CK_RV)(want)); exit(1); } } while (0)

#define MAX (64 * 1024 + 16)

typedef CK_RV (*update_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*final_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);

/* put runs one Update (in != NULL) or Final with the two-call convention
 * and appends its output to out at *at. */
static void put(CK_SESSION_HANDLE s, update_fn u, final_fn f, CK_BYTE *in, CK_ULONG inlen, CK_BYTE *out, CK_ULONG *at) {
	CK_ULONG n = 0;
	if (in) CHECK(u(s, in, inlen, NULL, &n), CKR_OK);
	else CHECK(f(s, NULL, &n), CKR_OK);
	if (*at + n > MAX) { fprintf(stderr, "output of %lu bytes at %lu\n", n, *at); exit(1); }
	if (n > 0) {
		CK_ULONG short_n = n - 1;
		if (in) CHECK(u(s, in, inlen, out + *at, &short_n), CKR_BUFFER_TOO_SMALL);
		else CHECK(f(s, out + *at, &short_n), CKR_BUFFER_TOO_SMALL);
		if (short_n != n) { fprintf(stderr, "CKR_BUFFER_TOO_SMALL gave %lu, the length was %lu\n", short_n, n); exit(1); }
	}
	CK_ULONG got = n;
	if (in) CHECK(u(s, in, inlen, out + *at, &got), CKR_OK);
	else CHECK(f(s, out + *at, &got), CKR_OK);
	if (got != n) { fprintf(stderr, "output of %lu bytes, announced %lu\n", got, n); exit(1); }
	*at += got;
}

static CK_ULONG parts(CK_SESSION_HANDLE s, update_fn u, final_fn f, CK_BYTE *in, CK_ULONG len, CK_BYTE *out) {
	static const CK_ULONG sizes[] = {1, 15, 16, 17, 1000, 4096};
	CK_ULONG at = 0, off = 0;
	for (int i = 0; off < len; i++) {
		CK_ULONG n = sizes[i % 6];
		if (n > len - off) n = len - off;
		put(s, u, f, in + off, n, out, &at);
		off += n;
	}
	put(s, u, f, NULL, 0, out, &at);
	return at;
}

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: stream LIB LABEL IN OUT\n"); return 2; }
	static CK_BYTE in[MAX], single[MAX], multi[MAX], back[MAX];
	FILE *fi = fopen(argv[3], "rb");
	if (!fi) { perror(argv[3]); return 1; }
	CK_ULONG len = fread(in, 1, 64 * 1024 + 1, fi);
	fclose(fi);
	if (len > 64 * 1024) { fprintf(stderr, "input over 64 KiB\n"); return 2; }

	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
	CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	if (!gfl) { fprintf(stderr, "no C_GetFunctionList\n"); return 1; }
	CHECK(gfl(&p), CKR_OK);
	CHECK(p->C_Initialize(NULL), CKR_OK);
	CK_SESSION_HANDLE s;
	CHECK(p->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
	const char *pin = getenv("HSMBROKER_PKCS11_PIN");
	if (!pin) { fprintf(stderr, "no HSMBROKER_PKCS11_PIN\n"); return 1; }
	CHECK(p->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), CKR_OK);
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
	CK_ATTRIBUTE t[2] = {{CKA_LABEL, argv[2], strlen(argv[2])}, {CKA_CLASS, &sk, sizeof sk}};
	CK_OBJECT_HANDLE key;
	CK_ULONG found = 0;
	CHECK(p->C_FindObjectsInit(s, t, 2), CKR_OK);
	CHECK(p->C_FindObjects(s, &key, 1, &found), CKR_OK);
	CHECK(p->C_FindObjectsFinal(s), CKR_OK);
	if (found != 1) { fprintf(stderr, "key %s not found\n", argv[2]); return 1; }

	CK_BYTE iv[16];
	for (int i = 0; i < 16; i++) iv[i] = (CK_BYTE)i;
	CK_MECHANISM mech = {CKM_AES_CBC_PAD, iv, sizeof iv};

	CK_ULONG n = sizeof single;
	CHECK(p->C_EncryptInit(s, &mech, key), CKR_OK);
	CHECK(p->C_Encrypt(s, in, len, single, &n), CKR_OK);
	if (n != len / 16 * 16 + 16) { fprintf(stderr, "C_Encrypt gave %lu bytes\n", n); return 1; }
	FILE *fo = fopen(argv[4], "wb");
	if (!fo || fwrite(single, 1, n, fo) != n || fclose(fo) != 0) { perror(argv[4]); return 1; }

	/* An error ends the operation (PKCS#11: "A call to C_EncryptUpdate
	 * which results in an error terminates the current encryption
	 * operation"), a NULL length pointer too. */
	CHECK(p->C_EncryptInit(s, &mech, key), CKR_OK);
	CHECK(p->C_EncryptUpdate(s, in, len, multi, NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_EncryptUpdate(s, in, len, NULL, &n), CKR_OPERATION_NOT_INITIALIZED);
	CHECK(p->C_EncryptInit(s, &mech, key), CKR_OK);
	CK_ULONG m = parts(s, p->C_EncryptUpdate, p->C_EncryptFinal, in, len, multi);
	if (m != n || memcmp(multi, single, n) != 0) { fprintf(stderr, "in parts: %lu bytes, not C_Encrypt's\n", m); return 1; }

	CHECK(p->C_DecryptInit(s, &mech, key), CKR_OK);
	CK_ULONG b = parts(s, p->C_DecryptUpdate, p->C_DecryptFinal, single, n, back);
	if (b != len || memcmp(back, in, len) != 0) { fprintf(stderr, "decrypted in parts: %lu bytes, not the input\n", b); return 1; }

	CHECK(p->C_CloseSession(s), CKR_OK);
	CHECK(p->C_Finalize(NULL), CKR_OK);
	printf("ok\n");
	return 0;
}
