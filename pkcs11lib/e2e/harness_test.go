// Package e2e tests libhsmbroker-pkcs11.so with real PKCS#11 clients
// (pkcs11-tool, OpenSSL's pkcs11 engine, C programs) against a real
// in-process broker. The library is built once per run with
// -buildmode=c-shared; the clients load it in their own processes.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/pkcs11lib/p11"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// repoRoot is the module's root, from this file's place in it.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// artifacts builds libhsmbroker-pkcs11.so and hsmctl once per test run.
func artifacts(t *testing.T) (lib, hsmctl string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "hsmbroker-p11-e2e-")
		if buildErr != nil {
			return
		}
		for _, args := range [][]string{
			{"build", "-buildmode=c-shared", "-o", filepath.Join(buildDir, "libhsmbroker-pkcs11.so"), "./pkcs11lib"},
			{"build", "-o", filepath.Join(buildDir, "hsmctl"), "./cmd/hsmctl"},
		} {
			cmd := exec.Command("go", args...)
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{args, out, err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "libhsmbroker-pkcs11.so"), filepath.Join(buildDir, "hsmctl")
}

type buildError struct {
	args []string
	out  []byte
	err  error
}

func (e *buildError) Error() string {
	return "go " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + string(e.out)
}

// requireTool finds an external client; without it the test is skipped,
// except under CI=true, where a missing dependency fails.
func requireTool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (apt-get install %s): %v", path, pkg, err)
		}
		t.Skipf("%s is missing (apt-get install %s)", path, pkg)
	}
	return path
}

// env is a one-node broker and the environment a PKCS#11 host needs to
// use the library on it, with the client key sealed under a PIN.
type env struct {
	t      *testing.T
	lib    string
	hsmctl string
	dir    string
	vars   []string // HSMBROKER_* for child processes
	pin    string
	cl     *client.Client
	c      *hsmtest.Cluster
}

func newEnv(t *testing.T, nodes int) *env {
	t.Helper()
	lib, hsmctl := artifacts(t)
	c := hsmtest.NewCluster(t, nodes)
	ca, cert, key := c.TLSFiles("pkcs11-e2e", authz.RoleAdmin)
	e := &env{t: t, lib: lib, hsmctl: hsmctl, dir: t.TempDir(), pin: hsmtest.RandomPIN(), c: c}
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := p11.SealKey(keyPEM, e.pin)
	if err != nil {
		t.Fatal(err)
	}
	sealedFile := filepath.Join(e.dir, "sealed-key.pem")
	if err := os.WriteFile(sealedFile, sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.GRPCAddr)
	}
	e.vars = []string{
		client.EnvAddr + "=" + strings.Join(addrs, ","), client.EnvCA + "=" + ca, client.EnvCert + "=" + cert,
		client.EnvKey + "=" + key, p11.EnvSealedKey + "=" + sealedFile, p11.EnvPIN + "=" + e.pin,
	}
	e.cl, err = client.Dial(context.Background(), client.Config{Endpoints: addrs, CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cl.Close() })
	return e
}

// run runs a command with the library's environment and returns its
// combined output; it fails the test if the command fails.
func (e *env) run(name string, args ...string) string {
	e.t.Helper()
	out, err := e.try(name, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(name string, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), e.vars...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) write(name string, data []byte) string {
	e.t.Helper()
	p := e.path(name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}
