package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/hsmtest/gate"
)

// The README's walkthrough, as a new user types it: `make run` (here the
// same `hsmbrokerd dev`), then in another shell `source dev.env`, create a
// key with hsmctl, envelope-encrypt a 1 GiB file and decrypt it back in
// bounded memory, fetch a public key that openssl reads, issue a client
// certificate from the dev CA that dev.env names, and list the services
// with grpcurl through reflection.

var hsmctlOnce = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(binPath), "hsmctl")
	out, err := exec.Command("go", "build", "-o", bin, "../hsmctl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build hsmctl: %v\n%s", err, out)
	}
	return bin, nil
})

// runTool runs a command with the dev.env variables set and returns its
// stdout; it fails the test on a non-zero exit.
func runTool(t *testing.T, env map[string]string, name string, args ...string) (string, *syscall.Rusage) {
	t.Helper()
	return runToolIn(t, "", env, name, args...)
}

// runToolIn is runTool in the working directory dir.
func runToolIn(t *testing.T, dir string, env map[string]string, name string, args ...string) (string, *syscall.Rusage) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	var peak int64
	if err == nil {
		stop, polled := make(chan struct{}), make(chan struct{})
		go func() { defer close(polled); peak = peakRSS(cmd.Process.Pid, stop) }()
		err = cmd.Wait()
		close(stop)
		<-polled
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru != nil && peak > 0 {
		ru.Maxrss = peak
	}
	return stdout.String(), ru
}

// peakRSS polls the peak resident set (VmHWM, KiB) of process pid until
// stop is closed. The child's rusage cannot say it: Go starts children
// with vfork (CLONE_VM), and Linux carries the parent's peak RSS into the
// child's ru_maxrss across exec, so a large test process (the race
// detector's, say) would be measured instead of the tool. 0 if it ended
// before the first look.
func peakRSS(pid int, stop <-chan struct{}) int64 {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var peak int64
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kb int64
					if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil && kb > peak {
						peak = kb
					}
				}
			}
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func TestREADMEWalkthrough(t *testing.T) {
	module := requireSoftHSM(t)
	buildBinary(t)
	hsmctl, err := hsmctlOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	var addrs []string
	p := startDev(t, module, dir, &addrs)
	env := readEnvFile(t, filepath.Join(dir, "dev.env"))
	conn := dial(t, env["HSMBROKER_ADDR"], env["HSMBROKER_CA"], env["HSMBROKER_CERT"], env["HSMBROKER_KEY"])
	waitServing(t, p, conn)

	out, _ := runTool(t, env, hsmctl, "keys", "create", "--spec", "SYMMETRIC_DEFAULT", "--alias", "alias/demo", "-o", "json")
	var created struct {
		KeyID string `json:"keyId"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.KeyID == "" {
		t.Fatalf("keys create -o json printed %q (%v)", out, err)
	}

	// 1 GiB through envelope encryption, in bounded memory.
	work := t.TempDir()
	in, enc, dec := filepath.Join(work, "big"), filepath.Join(work, "big.enc"), filepath.Join(work, "big.out")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("hsmbroker walkthrough "), 1<<16)
	for written := 0; written < 1<<30; {
		n, err := f.Write(chunk[:min(len(chunk), 1<<30-written)])
		if err != nil {
			t.Fatal(err)
		}
		written += n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	const rssLimitKB = 64 << 10
	_, ru := runTool(t, env, hsmctl, "encrypt-file", "--key", "alias/demo", "--in", in, "--out", enc, "--context", "file=big")
	if ru == nil || ru.Maxrss >= rssLimitKB {
		t.Fatalf("encrypt-file of 1 GiB peaked at %d KiB RSS, limit %d", ru.Maxrss, rssLimitKB)
	}
	t.Logf("encrypt-file 1 GiB: max RSS %d KiB", ru.Maxrss)
	_, ru = runTool(t, env, hsmctl, "decrypt-file", "--in", enc, "--out", dec)
	if ru == nil || ru.Maxrss >= rssLimitKB {
		t.Fatalf("decrypt-file of 1 GiB peaked at %d KiB RSS, limit %d", ru.Maxrss, rssLimitKB)
	}
	t.Logf("decrypt-file 1 GiB: max RSS %d KiB", ru.Maxrss)
	if fileSHA256(t, in) != fileSHA256(t, dec) {
		t.Fatal("decrypted file differs from the original")
	}
	for _, pth := range []string{in, enc, dec} {
		_ = os.Remove(pth)
	}

	// Small payloads through the API.
	msg := filepath.Join(work, "msg")
	_ = os.WriteFile(msg, []byte("small secret"), 0o600)
	ct := filepath.Join(work, "msg.ct")
	runTool(t, env, hsmctl, "encrypt", "--key", "alias/demo", "--in", msg, "--out", ct)
	pt, _ := runTool(t, env, hsmctl, "decrypt", "--in", ct)
	if pt != "small secret" {
		t.Fatalf("decrypt printed %q", pt)
	}

	// A public key openssl reads.
	runTool(t, env, hsmctl, "keys", "create", "--spec", "ECC_NIST_P256", "--usage", "SIGN_VERIFY", "--alias", "alias/signer")
	pem, _ := runTool(t, env, hsmctl, "pubkey", "alias/signer")
	pemFile := filepath.Join(work, "pub.pem")
	_ = os.WriteFile(pemFile, []byte(pem), 0o600)
	t.Run("openssl reads the public key", func(t *testing.T) {
		openssl := gate.Tool(t, "openssl", "apt-get install openssl")
		text, _ := runTool(t, nil, openssl, "pkey", "-pubin", "-in", pemFile, "-noout", "-text")
		if !strings.Contains(text, "prime256v1") && !strings.Contains(text, "P-256") {
			t.Fatalf("openssl reads the public key as %q", text)
		}
	})

	// A certificate for another principal from the dev CA, in the README's
	// words: no CA flags, dev.env names the CA's certificate and key.
	runToolIn(t, work, env, hsmctl, "certs", "issue", "--principal", "mallory", "--role", "user", "--out-dir", "./certs")
	mallory := maps.Clone(env)
	mallory["HSMBROKER_CERT"] = filepath.Join(work, "certs", "mallory.pem")
	mallory["HSMBROKER_KEY"] = filepath.Join(work, "certs", "mallory-key.pem")
	out, _ = runToolIn(t, work, mallory, hsmctl, "whoami", "-o", "json")
	var who map[string]string
	if err := json.Unmarshal([]byte(out), &who); err != nil || who["principal"] != "mallory" || who["role"] != "user" {
		t.Fatalf("whoami with the issued certificate: %q (%v)", out, err)
	}

	// grpcurl lists the services through reflection and sees SERVING.
	grpcurl := gate.Tool(t, "grpcurl", "make tools installs it")
	tlsArgs := []string{"-cacert", env["HSMBROKER_CA"], "-cert", env["HSMBROKER_CERT"], "-key", env["HSMBROKER_KEY"]}
	list, _ := runTool(t, nil, grpcurl, append(tlsArgs, env["HSMBROKER_ADDR"], "list")...)
	for _, svc := range []string{"hsmbroker.v1.KeyService", "hsmbroker.v1.CryptoService", "hsmbroker.v1.ClusterService", "grpc.health.v1.Health"} {
		if !strings.Contains(list, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, list)
		}
	}
	health, _ := runTool(t, nil, grpcurl, append(tlsArgs, env["HSMBROKER_ADDR"], "grpc.health.v1.Health/Check")...)
	if !strings.Contains(health, "SERVING") || strings.Contains(health, "NOT_SERVING") {
		t.Fatalf("health: %s", health)
	}
	p.stop(t)
}
