package hsm_test

import (
	"bytes"
	"crypto"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/keys"
)

func requireOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is missing")
		}
		t.Skip("openssl is missing")
	}
	return path
}

func writePEMPublicKey(t *testing.T, dir string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// OpenSSL verifies the HSM's signatures, over the message, for every
// signing algorithm.
func TestOpenSSLVerifiesSignatures(t *testing.T) {
	openssl := requireOpenSSL(t)
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	msg := []byte("signed by the HSM, checked by OpenSSL")
	for _, spec := range []keys.Spec{keys.SpecRSA2048, keys.SpecECCNISTP256, keys.SpecECCNISTP384, keys.SpecECCNISTP521} {
		k, g := newKey(t, p, spec, keys.UsageSignVerify)
		dir := t.TempDir()
		pub := writePEMPublicKey(t, dir, g.PublicKey)
		msgFile := filepath.Join(dir, "msg")
		_ = os.WriteFile(msgFile, msg, 0o600)
		for _, alg := range spec.SigningAlgorithms(keys.UsageSignVerify) {
			h := alg.Hash()
			hf := h.New()
			hf.Write(msg)
			sig, err := p.SignDigest(ctx, k, alg, hf.Sum(nil))
			if err != nil {
				t.Fatalf("%s %s: %v", spec, alg, err)
			}
			sigFile := filepath.Join(dir, "sig")
			_ = os.WriteFile(sigFile, sig, 0o600)
			args := []string{"dgst", "-" + map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}[h],
				"-verify", pub, "-signature", sigFile}
			if alg.IsPSS() {
				args = append(args, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest")
			}
			out, err := exec.Command(openssl, append(args, msgFile)...).CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("Verified OK")) {
				t.Errorf("%s %s: openssl says %s (%v)", spec, alg, out, err)
			}
		}
	}
}

// OpenSSL encrypts with the public key (RSA-OAEP, SHA-1 and SHA-256) and
// the HSM decrypts: the brief's openssl + decrypt workflow.
func TestOpenSSLOAEPCiphertextsDecrypt(t *testing.T) {
	openssl := requireOpenSSL(t)
	p := hsmtest.NewPartition(t)
	ctx := ctxT(t)
	for _, spec := range []keys.Spec{keys.SpecRSA2048, keys.SpecRSA3072} {
		k, g := newKey(t, p, spec, keys.UsageEncryptDecrypt)
		dir := t.TempDir()
		pub := writePEMPublicKey(t, dir, g.PublicKey)
		in := filepath.Join(dir, "file.txt")
		_ = os.WriteFile(in, []byte("file contents for OAEP"), 0o600)
		for _, h := range []struct {
			name string
			hash crypto.Hash
		}{{"sha1", crypto.SHA1}, {"sha256", crypto.SHA256}} {
			out := filepath.Join(dir, "enc-"+h.name)
			cmd := exec.Command(openssl, "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", in, "-out", out,
				"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:"+h.name, "-pkeyopt", "rsa_mgf1_md:"+h.name)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("openssl: %s %v", b, err)
			}
			ct, _ := os.ReadFile(out)
			got, err := p.DecryptOAEP(ctx, k, h.hash, ct)
			if err != nil || string(got) != "file contents for OAEP" {
				t.Errorf("%s OAEP-%s: %v", spec, h.name, err)
			}
		}
	}
}
