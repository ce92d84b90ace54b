/* Throughput of libhsmbroker-pkcs11.so: THREADS threads, each with a
 * session of its own, run one operation on the key labelled LABEL for
 * SECONDS and the total is printed as "ops N errors E".
 *
 *   bench LIB sign-rsa|sign-p256|aes-cbc LABEL THREADS SECONDS
 *
 * With SECONDS 0 it runs in windows: after setup (login, a session and the
 * key's handle per thread) it prints "ready", then for each line "MS" on
 * its standard input the threads run for MS milliseconds and it prints
 * "ops N errors E" for that window; end of input ends it. A caller can so
 * alternate it with another load in one run.
 *
 * sign-rsa: CKM_RSA_PKCS over a SHA-256 DigestInfo; sign-p256: CKM_ECDSA
 * over a 32-byte digest; aes-cbc: CKM_AES_CBC_PAD over 4096 bytes. The PIN
 * comes from HSMBROKER_PKCS11_PIN. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p;
static const char *op, *label;
static double seconds;
static long total, errors;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Window mode. */
static int windowed, quit;
static double window_end;
static pthread_barrier_t start_b, end_b;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void *worker(void *arg) {
	(void)arg;
	CK_SESSION_HANDLE s;
	if (p->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) { fprintf(stderr, "open\n"); exit(1); }
	CK_OBJECT_CLASS cls = strcmp(op, "aes-cbc") ? CKO_PRIVATE_KEY : CKO_SECRET_KEY;
	CK_ATTRIBUTE t[2] = {{CKA_LABEL, (void *)label, strlen(label)}, {CKA_CLASS, &cls, sizeof cls}};
	CK_OBJECT_HANDLE k; CK_ULONG n = 0;
	if (p->C_FindObjectsInit(s, t, 2) != CKR_OK || p->C_FindObjects(s, &k, 1, &n) != CKR_OK || n != 1) { fprintf(stderr, "find %s\n", label); exit(1); }
	p->C_FindObjectsFinal(s);
	static const CK_BYTE di[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
	CK_BYTE in[4096], out[4200], iv[16] = {0};
	memset(in, 0x42, sizeof in);
	memcpy(in, di, sizeof di);
	CK_MECHANISM m;
	CK_ULONG inlen;
	if (!strcmp(op, "sign-rsa")) { m = (CK_MECHANISM){CKM_RSA_PKCS, NULL, 0}; inlen = 51; }
	else if (!strcmp(op, "sign-p256")) { m = (CK_MECHANISM){CKM_ECDSA, NULL, 0}; inlen = 32; }
	else { m = (CK_MECHANISM){CKM_AES_CBC_PAD, iv, 16}; inlen = 4096; }
	for (;;) {
		if (windowed) {
			pthread_barrier_wait(&start_b);
			if (quit) break;
		}
		long ok = 0, bad = 0;
		double end = windowed ? window_end : now() + seconds;
		while (now() < end) {
			CK_ULONG outlen = sizeof out;
			CK_RV rv;
			if (m.mechanism == CKM_AES_CBC_PAD) {
				rv = p->C_EncryptInit(s, &m, k);
				if (rv == CKR_OK) rv = p->C_Encrypt(s, in, inlen, out, &outlen);
			} else {
				rv = p->C_SignInit(s, &m, k);
				if (rv == CKR_OK) rv = p->C_Sign(s, in, inlen, out, &outlen);
			}
			if (rv == CKR_OK) ok++; else bad++;
		}
		pthread_mutex_lock(&mu);
		total += ok; errors += bad;
		pthread_mutex_unlock(&mu);
		if (!windowed) break;
		pthread_barrier_wait(&end_b);
	}
	p->C_CloseSession(s);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 6) { fprintf(stderr, "usage: bench LIB OP LABEL THREADS SECONDS\n"); return 2; }
	op = argv[2]; label = argv[3];
	int threads = atoi(argv[4]);
	seconds = atof(argv[5]);
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
	CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	if (!gfl || gfl(&p) != CKR_OK || p->C_Initialize(NULL) != CKR_OK) { fprintf(stderr, "init\n"); return 1; }
	CK_SESSION_HANDLE s;
	const char *pin = getenv("HSMBROKER_PKCS11_PIN");
	if (p->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK || !pin ||
	    p->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK) { fprintf(stderr, "login\n"); return 1; }
	windowed = seconds == 0;
	if (threads < 1) { fprintf(stderr, "threads\n"); return 2; }
	pthread_barrier_init(&start_b, NULL, threads + 1);
	pthread_barrier_init(&end_b, NULL, threads + 1);
	pthread_t *ts = calloc(threads, sizeof *ts);
	for (int i = 0; i < threads; i++) pthread_create(&ts[i], NULL, worker, NULL);
	if (windowed) {
		char line[64];
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof line, stdin)) {
			double ms = atof(line);
			pthread_mutex_lock(&mu);
			total = errors = 0;
			pthread_mutex_unlock(&mu);
			window_end = now() + ms / 1000;
			pthread_barrier_wait(&start_b);
			pthread_barrier_wait(&end_b);
			printf("ops %ld errors %ld\n", total, errors);
			fflush(stdout);
		}
		quit = 1;
		pthread_barrier_wait(&start_b);
	}
	for (int i = 0; i < threads; i++) pthread_join(ts[i], NULL);
	if (!windowed) printf("ops %ld errors %ld\n", total, errors);
	p->C_Finalize(NULL);
	return 0;
}
