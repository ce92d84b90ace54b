package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestBenchLibraryVsGRPC measures, in one run and against one broker, the
// library's throughput and the Go SDK's over gRPC for the same operation
// and concurrency, the two sides taking turns in short windows (as
// internal/bench does for hsmctl bench), so that load from other work on
// the machine falls on both alike; it logs their ratio. It asserts nothing
// about time (figures belong in docs/PKCS11.md); it runs only with
// HSMBROKER_BENCH=1.
//
//	HSMBROKER_BENCH=1 go test -run TestBenchLibraryVsGRPC -v ./pkcs11lib/e2e
//
// HSMBROKER_BENCH_CONCURRENCY (default 8) and HSMBROKER_BENCH_SECONDS
// (per side, default 10) change the run; windows are 500 ms.
func TestBenchLibraryVsGRPC(t *testing.T) {
	if os.Getenv("HSMBROKER_BENCH") != "1" {
		t.Skip("set HSMBROKER_BENCH=1")
	}
	requireTool(t, cc, "gcc")
	e := newEnv(t, 1)
	src, _ := filepath.Abs("testdata/bench.c")
	bin := e.path("bench")
	e.run(cc, "-O2", "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", bin, src, "-ldl", "-lpthread")
	ctx := context.Background()
	ids := map[string]string{}
	for _, k := range []struct {
		alias string
		spec  pb.KeySpec
		usage pb.KeyUsage
	}{
		{"lib-rsa", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{"lib-p256", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{"lib-aes", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT},
		{"grpc-aes", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT},
	} {
		resp, err := e.cl.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/" + k.alias, KeySpec: k.spec, KeyUsage: k.usage})
		if err != nil {
			t.Fatal(err)
		}
		ids[k.alias] = resp.GetKeyMetadata().GetKeyId()
	}
	conc, seconds := 8, 10
	if v, err := strconv.Atoi(os.Getenv("HSMBROKER_BENCH_CONCURRENCY")); err == nil && v > 0 {
		conc = v
	}
	if v, err := strconv.Atoi(os.Getenv("HSMBROKER_BENCH_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	const window = 500 * time.Millisecond
	windows := seconds * int(time.Second/window)

	// The gRPC side: conc clients of the Go SDK, a connection each, the
	// requests of internal/bench (hsmctl bench).
	vars := map[string]string{}
	for _, v := range e.vars {
		k, val, _ := strings.Cut(v, "=")
		vars[k] = val
	}
	var clients []*client.Client
	for range conc {
		c, err := client.Dial(ctx, client.Config{Endpoints: client.SplitEndpoints(vars[client.EnvAddr]),
			CAFile: vars[client.EnvCA], CertFile: vars[client.EnvCert], KeyFile: vars[client.EnvKey]})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	digest := sha256.Sum256([]byte("bench"))
	plain := make([]byte, 4096)

	for _, c := range []struct {
		libOp, label string
		grpc         func(*client.Client) error
	}{
		{"sign-rsa", "lib-rsa", func(cl *client.Client) error {
			_, err := cl.Crypto.Sign(ctx, &pb.SignRequest{KeyId: ids["lib-rsa"], Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
				SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256})
			return err
		}},
		{"sign-p256", "lib-p256", func(cl *client.Client) error {
			_, err := cl.Crypto.Sign(ctx, &pb.SignRequest{KeyId: ids["lib-p256"], Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST,
				SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
			return err
		}},
		{"aes-cbc", "lib-aes", func(cl *client.Client) error {
			_, err := cl.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: ids["grpc-aes"], Plaintext: plain})
			return err
		}},
	} {
		lib := startLibBench(t, e, bin, c.libOp, c.label, conc)
		grpcWindow := func(d time.Duration) (int64, int64) {
			var ops, errs int64
			var mu sync.Mutex
			var wg sync.WaitGroup
			end := time.Now().Add(d)
			for _, cl := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var n, bad int64
					for time.Now().Before(end) {
						if err := c.grpc(cl); err != nil {
							bad++
						} else {
							n++
						}
					}
					mu.Lock()
					ops, errs = ops+n, errs+bad
					mu.Unlock()
				}()
			}
			wg.Wait()
			return ops, errs
		}
		// Warm up both, then alternate.
		lib.window(2 * window)
		grpcWindow(2 * window)
		var libOps, grpcOps int64
		for range windows {
			n, bad := lib.window(window)
			if bad != 0 {
				t.Fatalf("library bench: %d errors in a window", bad)
			}
			libOps += n
			n, bad = grpcWindow(window)
			if bad != 0 {
				t.Fatalf("gRPC bench: %d errors in a window", bad)
			}
			grpcOps += n
		}
		lib.close()
		measured := float64(windows) * window.Seconds()
		l, g := float64(libOps)/measured, float64(grpcOps)/measured
		t.Logf("%-9s concurrency %d, %d x %v windows per side: library %.0f ops/s, gRPC (Go SDK) %.0f ops/s, ratio %.2f",
			c.libOp, conc, windows, window, l, g, l/g)
	}
}

// libBench is testdata/bench.c in window mode.
type libBench struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startLibBench(t *testing.T, e *env, bin, op, label string, conc int) *libBench {
	t.Helper()
	cmd := exec.Command(bin, e.lib, op, label, strconv.Itoa(conc), "0")
	cmd.Env = append(os.Environ(), e.vars...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &libBench{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	if line, err := b.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("library bench did not start: %q %v", line, err)
	}
	return b
}

// window runs the library's threads for d and returns their ops and errors.
func (b *libBench) window(d time.Duration) (int64, int64) {
	b.t.Helper()
	if _, err := fmt.Fprintf(b.in, "%d\n", d.Milliseconds()); err != nil {
		b.t.Fatal(err)
	}
	line, err := b.out.ReadString('\n')
	var ops, errs int64
	if err != nil {
		b.t.Fatalf("library bench: %v", err)
	}
	if _, err := fmt.Sscanf(line, "ops %d errors %d", &ops, &errs); err != nil {
		b.t.Fatalf("library bench said %q: %v", line, err)
	}
	return ops, errs
}

func (b *libBench) close() {
	b.t.Helper()
	_ = b.in.Close()
	if err := b.cmd.Wait(); err != nil {
		b.t.Fatalf("library bench: %v", err)
	}
}
