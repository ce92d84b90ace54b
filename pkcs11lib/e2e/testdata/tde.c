/* An Oracle TDE style client of libhsmbroker-pkcs11.so, as
 * ../shared/TDE.md section 1 describes Oracle's calls.
 *
 *   tde LIB set  DIR   open, login, find the master key by label (none),
 *                      read the token info, generate the master key, make
 *                      the two data objects, encrypt three 32-byte table
 *                      keys with CKM_AES_CBC_PAD, write DIR/wrapped.bin
 *   tde LIB open DIR   in a new process: find the key by label, decrypt
 *                      DIR/wrapped.bin, compare with the table keys
 *   tde LIB bad  DIR   bad input: every call must answer a CKR
 *   tde LIB fork DIR   fork; the child calls in and must get
 *                      CKR_CRYPTOKI_NOT_INITIALIZED, at once
 *   tde LIB loop FILE  find the master key and wrap and unwrap a table key
 *                      until FILE exists, then 20 more times; every call
 *                      must succeed (run across a broker failure)
 *
 * Output pointers are deliberately misaligned, as Oracle's are. The PIN
 * comes from HSMBROKER_PKCS11_PIN. Exit 0 means every check held. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p;
static const char *MK = "ORACLE.TDE.HSM.MK.0123456789ABCDEF0123456789ABCDEF";
static const char *DO1 = "ORACLE.SECURITY.KM.ENCRYPTION.30313233343536373839414243444546";
static const char *DO2 = "DATA_OBJECT_SUPPORTED_IDEN";

#define CHECK(call, want) do { CK_RV rv_ = (call); if (rv_ != (want)) { \
	fprintf(stderr, "%s:%d: %s = 0x%lx, want 0x%lx\n", __FILE__, __LINE__, #call, rv_, (CK_RV)(want)); exit(1); } } while (0)

/* misaligned storage for output integers */
static unsigned char scratch[64];
#define ODD(type) ((type *)(scratch + 1))

static CK_ULONG get_ulong(const void *q) { CK_ULONG v; memcpy(&v, q, sizeof v); return v; }

/* application mutex callbacks; the library never calls them */
static CK_RV mutex_new(CK_VOID_PTR_PTR m) { *m = NULL; return CKR_OK; }
static CK_RV mutex_op(CK_VOID_PTR m) { (void)m; return CKR_OK; }

static CK_SESSION_HANDLE open_login(void) {
	CHECK(p->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, ODD(CK_SESSION_HANDLE)), CKR_OK);
	CK_SESSION_HANDLE s = get_ulong(scratch + 1);
	const char *pin = getenv("HSMBROKER_PKCS11_PIN");
	if (!pin) { fprintf(stderr, "no HSMBROKER_PKCS11_PIN\n"); exit(1); }
	CHECK(p->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), CKR_OK);
	return s;
}

static CK_ULONG find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS *cls, const char *label, CK_OBJECT_HANDLE *out) {
	CK_ATTRIBUTE t[2] = {{CKA_LABEL, (void *)label, strlen(label)}, {CKA_CLASS, cls, sizeof *cls}};
	CHECK(p->C_FindObjectsInit(s, t, cls ? 2 : 1), CKR_OK);
	CHECK(p->C_FindObjects(s, ODD(CK_OBJECT_HANDLE), 1, (CK_ULONG_PTR)(scratch + 17)), CKR_OK);
	CK_ULONG n = get_ulong(scratch + 17);
	if (n == 1 && out) *out = get_ulong(scratch + 1);
	CHECK(p->C_FindObjectsFinal(s), CKR_OK);
	return n;
}

static void table_key(int i, CK_BYTE *k) { for (int j = 0; j < 32; j++) k[j] = (CK_BYTE)(i * 37 + j); }

static void set(const char *dir) {
	CK_SESSION_HANDLE s = open_login();
	if (find(s, NULL, MK, NULL) != 0) { fprintf(stderr, "master key exists before SET KEY\n"); exit(1); }
	CK_TOKEN_INFO ti;
	CHECK(p->C_GetTokenInfo(0, &ti), CKR_OK);
	if (memcmp(ti.label, "hsmbroker ", 10) != 0 || (ti.flags & CKF_WRITE_PROTECTED)) { fprintf(stderr, "token info\n"); exit(1); }
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY; CK_KEY_TYPE aes = CKK_AES; CK_ULONG len = 32; CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE kt[] = {{CKA_CLASS, &sk, sizeof sk}, {CKA_KEY_TYPE, &aes, sizeof aes}, {CKA_VALUE_LEN, &len, sizeof len},
		{CKA_LABEL, (void *)MK, strlen(MK)}, {CKA_TOKEN, &yes, 1}, {CKA_SENSITIVE, &yes, 1}, {CKA_EXTRACTABLE, &no, 1},
		{CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1}, {CKA_PRIVATE, &yes, 1}};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	CHECK(p->C_GenerateKey(s, &gen, kt, sizeof kt / sizeof kt[0], ODD(CK_OBJECT_HANDLE)), CKR_OK);
	CK_OBJECT_HANDLE mk = get_ulong(scratch + 1);
	CK_OBJECT_CLASS data = CKO_DATA;
	const char *dos[2] = {DO1, DO2};
	for (int i = 0; i < 2; i++) {
		CK_ATTRIBUTE dt[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1}, {CKA_PRIVATE, &yes, 1},
			{CKA_LABEL, (void *)dos[i], strlen(dos[i])}, {CKA_VALUE, (void *)"oracle", 6}};
		CHECK(p->C_CreateObject(s, dt, 5, ODD(CK_OBJECT_HANDLE)), CKR_OK);
	}
	CK_BYTE iv[16] = "0123456789abcdef";
	CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
	FILE *f = fopen(dir, "wb");
	if (!f) { perror(dir); exit(1); }
	for (int i = 0; i < 3; i++) {
		CK_BYTE k[32], out[64];
		table_key(i, k);
		CHECK(p->C_EncryptInit(s, &cbc, mk), CKR_OK);
		CHECK(p->C_Encrypt(s, k, 32, NULL, (CK_ULONG_PTR)(scratch + 33)), CKR_OK); /* length query */
		CK_ULONG n = get_ulong(scratch + 33);
		if (n != 48) { fprintf(stderr, "length %lu\n", n); exit(1); }
		CHECK(p->C_Encrypt(s, k, 32, out, (CK_ULONG_PTR)(scratch + 33)), CKR_OK);
		fwrite(out, 1, 48, f);
	}
	fclose(f);
	CHECK(p->C_Logout(s), CKR_OK);
	CHECK(p->C_CloseSession(s), CKR_OK);
}

static void openks(const char *dir) {
	CK_SESSION_HANDLE s = open_login();
	CK_OBJECT_HANDLE mk;
	CK_OBJECT_CLASS data = CKO_DATA;
	if (find(s, NULL, MK, &mk) != 1) { fprintf(stderr, "master key not found by label\n"); exit(1); }
	if (find(s, &data, DO1, NULL) != 1 || find(s, &data, DO2, NULL) != 1) { fprintf(stderr, "data objects not found\n"); exit(1); }
	FILE *f = fopen(dir, "rb");
	if (!f) { perror(dir); exit(1); }
	CK_BYTE iv[16] = "0123456789abcdef";
	CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
	for (int i = 0; i < 3; i++) {
		CK_BYTE ct[48], pt[64], want[32];
		if (fread(ct, 1, 48, f) != 48) { fprintf(stderr, "short file\n"); exit(1); }
		CHECK(p->C_DecryptInit(s, &cbc, mk), CKR_OK);
		CK_ULONG n = 16;
		CHECK(p->C_Decrypt(s, ct, 48, pt, &n), CKR_BUFFER_TOO_SMALL);
		CHECK(p->C_DecryptInit(s, &cbc, mk), CKR_OPERATION_ACTIVE);
		n = sizeof pt;
		CHECK(p->C_Decrypt(s, ct, 48, pt, &n), CKR_OK);
		table_key(i, want);
		if (n != 32 || memcmp(pt, want, 32) != 0) { fprintf(stderr, "table key %d differs\n", i); exit(1); }
	}
	fclose(f);
	/* The key's value is never given. */
	CK_BYTE v[64];
	CK_ATTRIBUTE a[] = {{CKA_VALUE, v, sizeof v}, {CKA_SENSITIVE, v + 40, 1}};
	CHECK(p->C_GetAttributeValue(s, mk, a, 2), CKR_ATTRIBUTE_SENSITIVE);
	if (a[0].ulValueLen != CK_UNAVAILABLE_INFORMATION || v[40] != CK_TRUE) { fprintf(stderr, "attributes\n"); exit(1); }
	CHECK(p->C_CloseSession(s), CKR_OK);
}

static void bad(void) {
	CK_SESSION_HANDLE s = open_login();
	CHECK(p->C_GetSlotList(CK_TRUE, NULL, NULL), CKR_ARGUMENTS_BAD);
	CK_SLOT_ID slots[1]; CK_ULONG n = 0;
	CHECK(p->C_GetSlotList(CK_TRUE, slots, &n), CKR_BUFFER_TOO_SMALL);
	CHECK(p->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_OpenSession(7, CKF_SERIAL_SESSION, NULL, NULL, ODD(CK_SESSION_HANDLE)), CKR_SLOT_ID_INVALID);
	CHECK(p->C_CloseSession(999999), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_FindObjectsInit(s, NULL, 3), CKR_ARGUMENTS_BAD);
	CHECK(p->C_FindObjects(s, NULL, 0, NULL), CKR_ARGUMENTS_BAD);
	CK_BYTE buf[8];
	CK_ATTRIBUTE a = {CKA_CLASS, buf, sizeof buf};
	CHECK(p->C_GetAttributeValue(s, 424242, &a, 1), CKR_OBJECT_HANDLE_INVALID);
	/* No attributes: the session and the object are still checked. */
	CHECK(p->C_GetAttributeValue(s, 424242, NULL, 0), CKR_OBJECT_HANDLE_INVALID);
	CHECK(p->C_GetAttributeValue(999999, 424242, NULL, 0), CKR_SESSION_HANDLE_INVALID);
	/* A bad pointer on a session that is not open: the session's error
	 * comes first. */
	CHECK(p->C_GetAttributeValue(999999, 424242, NULL, 1), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_FindObjectsInit(999999, NULL, 1), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_FindObjects(999999, NULL, 1, NULL), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_GetSessionInfo(999999, NULL), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_SignInit(999999, NULL, 424242), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_Sign(999999, buf, 8, NULL, NULL), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_Encrypt(999999, NULL, 8, NULL, NULL), CKR_SESSION_HANDLE_INVALID);
	CHECK(p->C_GenerateRandom(999999, NULL, 8), CKR_SESSION_HANDLE_INVALID);
	CK_MECHANISM unknown = {0x7fff1234, NULL, 0};
	CHECK(p->C_SignInit(s, &unknown, 424242), CKR_KEY_HANDLE_INVALID);
	CHECK(p->C_Sign(s, buf, 8, NULL, NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_Sign(s, buf, 8, buf, (CK_ULONG_PTR)(scratch + 3)), CKR_OPERATION_NOT_INITIALIZED);
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE ext[] = {{CKA_LABEL, "x", 1}, {CKA_EXTRACTABLE, &yes, 1}};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	CHECK(p->C_GenerateKey(s, &gen, ext, 2, ODD(CK_OBJECT_HANDLE)), CKR_ATTRIBUTE_VALUE_INVALID);
	CK_ATTRIBUTE weird = {0x7ffffff0, buf, 1};
	CHECK(p->C_GenerateKey(s, &gen, &weird, 1, ODD(CK_OBJECT_HANDLE)), CKR_ATTRIBUTE_TYPE_INVALID);
	CHECK(p->C_GenerateKey(s, &unknown, NULL, 0, ODD(CK_OBJECT_HANDLE)), CKR_MECHANISM_INVALID);
	CK_ATTRIBUTE nullval = {CKA_LABEL, NULL, 5};
	CHECK(p->C_GenerateKey(s, &gen, &nullval, 1, ODD(CK_OBJECT_HANDLE)), CKR_ATTRIBUTE_VALUE_INVALID);
	CHECK(p->C_DigestInit(s, &gen), CKR_FUNCTION_NOT_SUPPORTED);
	CHECK(p->C_GenerateRandom(s, buf, 8), CKR_OK);
	CHECK(p->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_ALREADY_LOGGED_IN);

	/* Every error of C_Encrypt, C_Decrypt and their Update and Final but
	 * CKR_BUFFER_TOO_SMALL ends the operation, also one refused before it
	 * reached the operation: the next Init must succeed. */
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY; CK_KEY_TYPE aes = CKK_AES; CK_ULONG len = 32; CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE kt[] = {{CKA_CLASS, &sk, sizeof sk}, {CKA_KEY_TYPE, &aes, sizeof aes}, {CKA_VALUE_LEN, &len, sizeof len},
		{CKA_LABEL, "bad-input", 9}, {CKA_TOKEN, &yes, 1}, {CKA_SENSITIVE, &yes, 1}, {CKA_EXTRACTABLE, &no, 1},
		{CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1}};
	CHECK(p->C_GenerateKey(s, &gen, kt, sizeof kt / sizeof kt[0], ODD(CK_OBJECT_HANDLE)), CKR_OK);
	CK_OBJECT_HANDLE k = get_ulong(scratch + 1);
	CK_BYTE iv[16] = "0123456789abcdef", big[64] = {0};
	CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
	CK_ULONG_PTR outlen = (CK_ULONG_PTR)(scratch + 33);
	CK_ULONG cap = sizeof big;
	memcpy(scratch + 33, &cap, sizeof cap);
	CHECK(p->C_EncryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_Encrypt(s, big, (CK_ULONG)1 << 40, big, outlen), CKR_DATA_LEN_RANGE);
	CHECK(p->C_EncryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_EncryptUpdate(s, NULL, 16, big, outlen), CKR_ARGUMENTS_BAD);
	CHECK(p->C_EncryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_EncryptFinal(s, big, NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_EncryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_Encrypt(s, big, 16, big, NULL), CKR_ARGUMENTS_BAD);
	CHECK(p->C_DecryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_DecryptUpdate(s, big, (CK_ULONG)1 << 40, big, outlen), CKR_ENCRYPTED_DATA_LEN_RANGE);
	CHECK(p->C_DecryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_Decrypt(s, big, (CK_ULONG)1 << 40, big, outlen), CKR_ENCRYPTED_DATA_LEN_RANGE);
	CHECK(p->C_DecryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_Decrypt(s, NULL, 32, big, outlen), CKR_ARGUMENTS_BAD);
	CHECK(p->C_DecryptInit(s, &cbc, k), CKR_OK);
	CHECK(p->C_CloseSession(s), CKR_OK);
}

static void forked(void) {
	pid_t pid = fork();
	if (pid < 0) { perror("fork"); exit(1); }
	if (pid == 0) {
		CK_INFO info;
		if (p->C_GetInfo(&info) != CKR_CRYPTOKI_NOT_INITIALIZED) _exit(2);
		if (p->C_Initialize(NULL) != CKR_CRYPTOKI_NOT_INITIALIZED) _exit(3);
		if (p->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, ODD(CK_SESSION_HANDLE)) != CKR_CRYPTOKI_NOT_INITIALIZED) _exit(4);
		CK_FUNCTION_LIST_PTR again;
		CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (void *)p->C_GetFunctionList;
		if (gfl(&again) != CKR_OK || again != p) _exit(5);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "child: status %d\n", st); exit(1);
	}
	/* The parent still works. */
	CK_INFO info;
	CHECK(p->C_GetInfo(&info), CKR_OK);
}

static void loop(const char *stop) {
	CK_SESSION_HANDLE s = open_login();
	CK_OBJECT_HANDLE mk;
	if (find(s, NULL, MK, &mk) != 1) { fprintf(stderr, "master key not found by label\n"); exit(1); }
	CK_BYTE iv[16] = "0123456789abcdef";
	CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
	int after = -1;
	long n = 0;
	while (after != 0) {
		CK_BYTE k[32], ct[64], pt[64];
		CK_ULONG cl = sizeof ct, pl = sizeof pt;
		table_key((int)(n % 7), k);
		CHECK(p->C_EncryptInit(s, &cbc, mk), CKR_OK);
		CHECK(p->C_Encrypt(s, k, 32, ct, &cl), CKR_OK);
		CHECK(p->C_DecryptInit(s, &cbc, mk), CKR_OK);
		CHECK(p->C_Decrypt(s, ct, cl, pt, &pl), CKR_OK);
		if (pl != 32 || memcmp(pt, k, 32) != 0) { fprintf(stderr, "round trip %ld differs\n", n); exit(1); }
		n++;
		if (after > 0) after--;
		else if (after < 0 && access(stop, F_OK) == 0) after = 20;
		usleep(20000);
	}
	printf("%ld round trips\n", n);
	CHECK(p->C_CloseSession(s), CKR_OK);
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: tde LIB set|open|bad|fork FILE\n"); return 2; }
	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
	CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	if (!gfl) { fprintf(stderr, "no C_GetFunctionList\n"); return 1; }
	CHECK(gfl((CK_FUNCTION_LIST_PTR_PTR)(scratch + 5)), CKR_OK);
	memcpy(&p, scratch + 5, sizeof p);
	/* Before C_Initialize every function but C_GetFunctionList and
	 * C_Initialize answers CKR_CRYPTOKI_NOT_INITIALIZED, also those the
	 * library does not support. */
	CK_INFO info;
	CHECK(p->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_GetAttributeValue(1, 1, NULL, 0), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_GetAttributeValue(1, 1, NULL, 1), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_Sign(1, NULL, 8, NULL, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_DigestInit(1, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_SeedRandom(1, NULL, 0), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_CancelFunction(1), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(p->C_WaitForSlotEvent(0, NULL, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK_C_INITIALIZE_ARGS ia = {0};
	/* Some but not all of the four mutex functions: CKR_ARGUMENTS_BAD
	 * (PKCS#11 v2.40, C_Initialize); all four without CKF_OS_LOCKING_OK:
	 * CKR_CANT_LOCK. */
	ia.CreateMutex = mutex_new;
	CHECK(p->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
	ia.flags = CKF_OS_LOCKING_OK;
	ia.LockMutex = mutex_op; ia.UnlockMutex = mutex_op;
	CHECK(p->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
	ia.flags = 0;
	ia.DestroyMutex = mutex_op;
	CHECK(p->C_Initialize(&ia), CKR_CANT_LOCK);
	memset(&ia, 0, sizeof ia);
	ia.flags = CKF_LIBRARY_CANT_CREATE_OS_THREADS;
	CHECK(p->C_Initialize(&ia), CKR_NEED_TO_CREATE_THREADS);
	ia.flags = CKF_OS_LOCKING_OK;
	CHECK(p->C_Initialize(&ia), CKR_OK);
	CHECK(p->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
	if (!strcmp(argv[2], "set")) set(argv[3]);
	else if (!strcmp(argv[2], "open")) openks(argv[3]);
	else if (!strcmp(argv[2], "bad")) bad();
	else if (!strcmp(argv[2], "fork")) forked();
	else if (!strcmp(argv[2], "loop")) loop(argv[3]);
	else return 2;
	CHECK(p->C_Finalize(NULL), CKR_OK);
	CHECK(p->C_Initialize(NULL), CKR_OK); /* again after C_Finalize */
	CHECK(p->C_Finalize(NULL), CKR_OK);
	printf("ok\n");
	return 0;
}
