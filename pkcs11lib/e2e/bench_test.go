package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestBenchLibraryVsGRPC measures, in one run and against one broker, the
// library's throughput and hsmctl bench's over gRPC for the same
// operation and concurrency, and logs their ratio. It asserts nothing
// about time (figures belong in docs/PKCS11.md); it runs only with
// HSMBROKER_BENCH=1.
//
//	HSMBROKER_BENCH=1 go test -run TestBenchLibraryVsGRPC -v ./pkcs11lib/e2e
func TestBenchLibraryVsGRPC(t *testing.T) {
	if os.Getenv("HSMBROKER_BENCH") != "1" {
		t.Skip("set HSMBROKER_BENCH=1")
	}
	e := newEnv(t, 1)
	src, _ := filepath.Abs("testdata/bench.c")
	bin := e.path("bench")
	e.run(cc, "-O2", "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o", bin, src, "-ldl", "-lpthread")
	ctx := context.Background()
	for _, k := range []struct {
		alias string
		spec  pb.KeySpec
		usage pb.KeyUsage
	}{
		{"lib-rsa", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{"lib-p256", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{"lib-aes", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_RAW_ENCRYPT_DECRYPT},
	} {
		if _, err := e.cl.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/" + k.alias, KeySpec: k.spec, KeyUsage: k.usage}); err != nil {
			t.Fatal(err)
		}
	}
	conc := os.Getenv("HSMBROKER_BENCH_CONCURRENCY")
	if conc == "" {
		conc = "8"
	}
	const seconds = 10
	for _, c := range []struct{ libOp, label, ctlOp, size string }{
		{"sign-rsa", "lib-rsa", "sign-rsa", "32"},
		{"sign-p256", "lib-p256", "sign-p256", "32"},
		{"aes-cbc", "lib-aes", "encrypt", "4096"},
	} {
		var ctl struct {
			Broker struct {
				OpsPerSecond float64 `json:"opsPerSecond"`
				Errors       int64   `json:"errors"`
			} `json:"broker"`
		}
		out := e.run(e.hsmctl, "bench", "--op", c.ctlOp, "--size", c.size, "--keys", "1", "--concurrency", conc,
			"--duration", strconv.Itoa(seconds)+"s", "-o", "json")
		// Its progress lines (stderr) come before the JSON document.
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{\n"):]), &ctl); err != nil {
			t.Fatalf("hsmctl bench: %v\n%s", err, out)
		}
		var ops, errs int64
		out = e.run(bin, e.lib, c.libOp, c.label, conc, strconv.Itoa(seconds))
		if _, err := fmt.Sscanf(out, "ops %d errors %d", &ops, &errs); err != nil || errs != 0 {
			t.Fatalf("library bench: %v\n%s", err, out)
		}
		lib := float64(ops) / seconds
		t.Logf("%-9s concurrency %s: library %.0f ops/s, hsmctl bench (gRPC) %.0f ops/s, ratio %.2f",
			c.libOp, conc, lib, ctl.Broker.OpsPerSecond, lib/ctl.Broker.OpsPerSecond)
	}
}
