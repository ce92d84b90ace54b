package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest/gate"
)

func (e *env) file(name string, data []byte) string {
	e.t.Helper()
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *env) read(path string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not base64: %q", s)
	}
	return b
}

func TestEncryptDecrypt(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/enc")
	in := e.file("secret.txt", []byte("the password is swordfish"))
	enc := filepath.Join(e.dir, "secret.enc")

	if out := e.ok("encrypt", "--key", "alias/enc", "--in", in, "--out", enc, "--context", "app=billing"); out != "" {
		t.Errorf("encrypt --out wrote %q to stdout", out)
	}
	if got := e.ok("decrypt", "--in", enc, "--context", "app=billing"); got != "the password is swordfish" {
		t.Errorf("decrypt: %q", got)
	}
	e.fails(1, "(InvalidCiphertextException)", "decrypt", "--in", enc)
	e.fails(1, "(InvalidCiphertextException)", "decrypt", "--in", enc, "--context", "app=other")

	// base64 through a pipe.
	b64out := e.runIn("hello", "encrypt", "--key", id, "--base64")
	if b64out.code != 0 || !strings.HasSuffix(b64out.stdout, "\n") {
		t.Fatalf("encrypt --base64: %+v", b64out)
	}
	if r := e.runIn(b64out.stdout, "decrypt", "--base64", "--key", id); r.code != 0 || r.stdout != "hello" {
		t.Fatalf("decrypt --base64: %+v", r)
	}
	e.fails(1, "(IncorrectKeyException)", "decrypt", "--in", enc, "--context", "app=billing", "--key", e.createKey("alias/other"))

	// JSON: the blob inline, or in --out.
	var res map[string]string
	e.okJSON(&res, "encrypt", "--key", "alias/enc", "--in", in)
	if res["keyId"] != id || res["encryptionAlgorithm"] != "SYMMETRIC_DEFAULT" || res["ciphertextBlob"] == "" {
		t.Errorf("encrypt -o json: %v", res)
	}
	blobFile := e.file("blob.bin", unb64(t, res["ciphertextBlob"]))
	var dec map[string]string
	e.okJSON(&dec, "decrypt", "--in", blobFile)
	if string(unb64(t, dec["plaintext"])) != "the password is swordfish" || dec["keyId"] != id {
		t.Errorf("decrypt -o json: %v", dec)
	}
	res = nil
	e.okJSON(&res, "encrypt", "--key", "alias/enc", "--in", in, "--out", enc, "--force")
	if res["out"] != enc || res["ciphertextBlob"] != "" {
		t.Errorf("encrypt -o json --out: %v", res)
	}

	// Too much for Encrypt: point at encrypt-file.
	big := e.file("big", make([]byte, 4097))
	e.fails(1, "is larger than 4096 bytes; use 'hsmctl encrypt-file' for larger data", "encrypt", "--key", id, "--in", big)
	e.fails(1, "no such file or directory", "encrypt", "--key", id, "--in", filepath.Join(e.dir, "missing"))
	e.ok("keys", "disable", id)
	e.fails(1, "hsmctl: key "+id+" is disabled (DisabledException)", "encrypt", "--key", id, "--in", in)
}

func TestRSAEncryptWithPublicKey(t *testing.T) {
	e := newEnv(t)
	e.createKey("alias/rsa", "--spec", "RSA_2048", "--usage", "ENCRYPT_DECRYPT")
	pemOut := e.ok("pubkey", "alias/rsa")
	block, rest := pem.Decode([]byte(pemOut))
	if block == nil || block.Type != "PUBLIC KEY" || len(rest) != 0 {
		t.Fatalf("pubkey output is not one PUBLIC KEY block:\n%s", pemOut)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// Encrypt without the broker, as openssl would, then decrypt with it.
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), []byte("offline secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := e.file("offline.enc", ct)
	if got := e.ok("decrypt", "--in", enc, "--key", "alias/rsa", "--algorithm", "RSAES_OAEP_SHA_256"); got != "offline secret" {
		t.Errorf("decrypt: %q", got)
	}
	e.fails(2, "--key is required with --algorithm RSAES_OAEP_SHA_256", "decrypt", "--in", enc, "--algorithm", "RSAES_OAEP_SHA_256")
	// An RSA key without --algorithm: the broker's refusal, and what to give.
	const hint = "hsmctl: RSA_2048 key with usage ENCRYPT_DECRYPT does not support SYMMETRIC_DEFAULT; an RSA key needs --algorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 (InvalidKeyUsageException)\n"
	if r := e.run("decrypt", "--in", enc, "--key", "alias/rsa"); r.code != 1 || r.stderr != hint {
		t.Errorf("decrypt with an RSA key and no --algorithm: exit %d, stderr %q; want %q", r.code, r.stderr, hint)
	}
	if r := e.run("encrypt", "--key", "alias/rsa", "--in", enc, "--base64"); r.code != 1 || r.stderr != hint {
		t.Errorf("encrypt with an RSA key and no --algorithm: exit %d, stderr %q; want %q", r.code, r.stderr, hint)
	}
	// Not for a key --algorithm would not help.
	e.createKey("alias/ecc", "--spec", "ECC_NIST_P256")
	if r := e.fails(1, "(InvalidKeyUsageException)", "decrypt", "--in", enc, "--key", "alias/ecc"); strings.Contains(r.stderr, "--algorithm") {
		t.Errorf("decrypt with an ECC key: %q", r.stderr)
	}

	var pk map[string]any
	e.okJSON(&pk, "pubkey", "alias/rsa")
	if pk["keySpec"] != "RSA_2048" || pk["publicKey"] != pemOut || len(pk["encryptionAlgorithms"].([]any)) != 2 {
		t.Errorf("pubkey -o json: %v", pk)
	}

	e.fails(1, "(UnsupportedOperationException)", "pubkey", e.createKey("alias/sym"))
	path := e.file("rsa.pub.pem", []byte(pemOut))
	t.Run("openssl reads it", func(t *testing.T) {
		openssl := gate.Tool(t, "openssl", "apt-get install openssl")
		if out, err := exec.Command(openssl, "pkey", "-pubin", "-in", path, "-noout", "-text").CombinedOutput(); err != nil || !strings.Contains(string(out), "2048 bit") {
			t.Errorf("openssl pkey -pubin: %v\n%s", err, out)
		}
	})
}

func TestDataKey(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/dk")
	var dk map[string]string
	e.okJSON(&dk, "datakey", "--key", "alias/dk", "--context", "f=1")
	plain := unb64(t, dk["plaintext"])
	if dk["keyId"] != id || len(plain) != 32 {
		t.Fatalf("datakey: %v", dk)
	}
	var dec map[string]string
	e.okJSON(&dec, "decrypt", "--in", e.file("dk.blob", unb64(t, dk["ciphertextBlob"])), "--context", "f=1")
	if !bytes.Equal(unb64(t, dec["plaintext"]), plain) {
		t.Fatal("the encrypted data key does not decrypt to the plaintext one")
	}

	text := e.ok("datakey", "--key", id, "--spec", "AES_128")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 3 || lines[0] != "KeyId:           "+id || !strings.HasPrefix(lines[1], "CiphertextBlob:  ") || !strings.HasPrefix(lines[2], "Plaintext:       ") {
		t.Fatalf("datakey text:\n%s", text)
	}
	if n := len(unb64(t, strings.TrimPrefix(lines[2], "Plaintext:       "))); n != 16 {
		t.Errorf("AES_128 data key of %d bytes", n)
	}
	dk = nil
	e.okJSON(&dk, "datakey", "--key", id, "--bytes", "7", "--no-plaintext")
	if _, has := dk["plaintext"]; has || dk["ciphertextBlob"] == "" {
		t.Errorf("--no-plaintext: %v", dk)
	}
	if text := e.ok("datakey", "--key", id, "--no-plaintext"); strings.Contains(text, "Plaintext") {
		t.Errorf("--no-plaintext text shows a plaintext:\n%s", text)
	}
	e.fails(1, "(InvalidKeyUsageException)", "datakey", "--key", e.createKey("alias/ec", "--spec", "ECC_NIST_P256"))
}

func TestSignVerify(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/sig", "--spec", "ECC_NIST_P256")
	pub := func() *ecdsa.PublicKey {
		block, _ := pem.Decode([]byte(e.ok("pubkey", id)))
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k.(*ecdsa.PublicKey)
	}()

	for _, size := range []int{10, 4096, 4097, 100_000} {
		msg := bytes.Repeat([]byte("m"), size)
		in := e.file("msg", msg)
		sigPath := filepath.Join(e.dir, "msg.sig")
		e.ok("sign", "--key", "alias/sig", "--algorithm", "ECDSA_SHA_256", "--in", in, "--out", sigPath, "--force")
		sig := e.read(sigPath)
		digest := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatalf("%d-byte message: signature does not verify with the public key", size)
		}
		if out := e.ok("verify", "--key", id, "--algorithm", "ECDSA_SHA_256", "--signature", sigPath, "--in", in); out != "Signature is valid\n" {
			t.Errorf("verify: %q", out)
		}
	}
	calls := e.srv.Calls()
	var digests int
	for _, c := range calls {
		if strings.HasSuffix(c.Method, "/Sign") {
			digests++
		}
	}
	if digests != 4 {
		t.Fatalf("%d Sign calls", digests)
	}

	msg := e.file("m2", []byte("release 1.0"))
	other := e.file("m3", []byte("release 6.6"))
	sigB64 := e.ok("sign", "--key", id, "--algorithm", "ecdsa_sha_256", "--in", msg, "--base64")
	sigFile := e.file("m2.sig.b64", []byte(sigB64))
	r := e.run("verify", "--key", id, "--algorithm", "ECDSA_SHA_256", "--signature", sigFile, "--base64", "--in", other)
	if r.code != 1 || r.stdout != "Signature is invalid\n" || r.stderr != "" {
		t.Fatalf("verify of another message: %+v", r)
	}
	var v map[string]any
	e.okJSON(&v, "verify", "--key", id, "--algorithm", "ECDSA_SHA_256", "--signature", sigFile, "--base64", "--in", msg)
	if v["signatureValid"] != true || v["keyId"] != id || v["signingAlgorithm"] != "ECDSA_SHA_256" {
		t.Errorf("verify -o json: %v", v)
	}

	// --digest: sign a digest made here, verify against the message.
	d := sha256.Sum256([]byte("release 1.0"))
	dsig := filepath.Join(e.dir, "d.sig")
	e.ok("sign", "--key", id, "--algorithm", "ECDSA_SHA_256", "--digest", "--in", e.file("d", d[:]), "--out", dsig)
	e.ok("verify", "--key", id, "--algorithm", "ECDSA_SHA_256", "--signature", dsig, "--in", msg)
	e.fails(1, "holds 5 bytes; a SHA-256 digest is 32 bytes", "sign", "--key", id, "--algorithm", "ECDSA_SHA_256", "--digest", "--in", e.file("short", []byte("short")))
	e.fails(1, "(InvalidKeyUsageException)", "sign", "--key", id, "--algorithm", "RSASSA_PSS_SHA_256", "--in", msg)

	var sj map[string]string
	e.okJSON(&sj, "sign", "--key", id, "--algorithm", "ECDSA_SHA_256", "--in", msg)
	if !ecdsa.VerifyASN1(pub, d[:], unb64(t, sj["signature"])) {
		t.Errorf("sign -o json: %v", sj)
	}
}

func TestMac(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/mac", "--spec", "HMAC_256")
	msg := e.file("payload", []byte(`{"amount": 10}`))
	macB64 := e.ok("mac", "--key", id, "--algorithm", "HMAC_SHA_256", "--in", msg, "--base64")
	if len(unb64(t, macB64)) != 32 {
		t.Fatalf("mac: %q", macB64)
	}
	macFile := e.file("payload.mac", []byte(macB64))
	if out := e.ok("verify-mac", "--key", id, "--algorithm", "HMAC_SHA_256", "--mac", macFile, "--base64", "--in", msg); out != "MAC is valid\n" {
		t.Errorf("verify-mac: %q", out)
	}
	r := e.run("verify-mac", "--key", id, "--algorithm", "HMAC_SHA_256", "--mac", macFile, "--base64", "--in", e.file("p2", []byte(`{"amount": 1000}`)))
	if r.code != 1 || r.stdout != "MAC is invalid\n" {
		t.Errorf("verify-mac of a changed message: %+v", r)
	}
	var mj map[string]any
	r2 := e.runIn(`{"amount": 10}`, "verify-mac", "--key", id, "--algorithm", "HMAC_SHA_256", "--mac", macFile, "--base64", "-o", "json")
	if r2.code != 0 || !strings.Contains(r2.stdout, `"macValid": true`) {
		t.Errorf("verify-mac from stdin -o json: %+v %v", r2, mj)
	}
	e.fails(1, "(InvalidKeyUsageException)", "mac", "--key", id, "--algorithm", "HMAC_SHA_512", "--in", msg)
}

func TestRandom(t *testing.T) {
	e := newEnv(t)
	if b := unb64(t, e.ok("random", "--bytes", "16", "--base64")); len(b) != 16 {
		t.Errorf("random --base64: %d bytes", len(b))
	}
	var rj map[string]string
	e.okJSON(&rj, "random", "--bytes", "24")
	if len(unb64(t, rj["plaintext"])) != 24 {
		t.Errorf("random -o json: %v", rj)
	}
	out := filepath.Join(e.dir, "seed")
	e.ok("random", "--bytes", "1024", "--out", out)
	if info, err := os.Stat(out); err != nil || info.Size() != 1024 || info.Mode().Perm() != 0o600 {
		t.Errorf("random --out: %v %v", info, err)
	}
	if raw := e.ok("random", "--bytes", "8"); len(raw) != 8 {
		t.Errorf("random raw to a non-terminal: %d bytes", len(raw))
	}
}
