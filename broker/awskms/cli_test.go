package awskms_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// awsCLIPath is the AWS CLI v2 of Debian's awscli package. The aws first on
// PATH may be another (v1) installation, so the tests name this one.
const awsCLIPath = "/usr/bin/aws"

// awsCLI runs the real AWS CLI against the endpoint, with credentials in
// the child's environment only and no configuration files.
type awsCLI struct {
	t   *testing.T
	e   *env
	dir string
	env []string
}

func newAWSCLI(t *testing.T, e *env) *awsCLI {
	t.Helper()
	if _, err := os.Stat(awsCLIPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the AWS CLI v2 (%s) is missing: apt-get install awscli", awsCLIPath)
		}
		t.Skipf("the AWS CLI v2 (%s) is missing: apt-get install awscli", awsCLIPath)
	}
	for _, tool := range []string{"openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	home := t.TempDir()
	return &awsCLI{t: t, e: e, dir: t.TempDir(), env: []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + home,
		"AWS_ACCESS_KEY_ID=" + e.admin.ID,
		"AWS_SECRET_ACCESS_KEY=" + e.admin.Secret,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_PAGER=",
		"AWS_CLI_AUTO_PROMPT=off",
		"AWS_MAX_ATTEMPTS=1",
	}}
}

// in is c reporting to a subtest's t.
func (c *awsCLI) in(t *testing.T) *awsCLI {
	d := *c
	d.t = t
	return &d
}

func (c *awsCLI) cmd(output string, args ...string) *exec.Cmd {
	args = append(args, "--endpoint-url", c.e.srv.URL, "--region", testRegion, "--output", output)
	cmd := exec.Command(awsCLIPath, args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	return cmd
}

// run runs aws with args and returns its JSON output.
func (c *awsCLI) run(args ...string) []byte {
	c.t.Helper()
	return c.runOutput("json", args...)
}

func (c *awsCLI) runOutput(output string, args ...string) []byte {
	c.t.Helper()
	var stderr bytes.Buffer
	cmd := c.cmd(output, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// text runs aws with --output text, for one queried value.
func (c *awsCLI) text(args ...string) string {
	c.t.Helper()
	return strings.TrimSpace(string(c.runOutput("text", args...)))
}

// fails runs aws expecting the AWS error code exception.
func (c *awsCLI) fails(exception string, args ...string) {
	c.t.Helper()
	var stderr bytes.Buffer
	cmd := c.cmd("json", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		c.t.Fatalf("aws %s succeeded, want %s", strings.Join(args, " "), exception)
	}
	if !strings.Contains(stderr.String(), "("+exception+")") {
		c.t.Fatalf("aws %s: %s, want %s", strings.Join(args, " "), stderr.String(), exception)
	}
}

func (c *awsCLI) json(v any, args ...string) {
	c.t.Helper()
	if err := json.Unmarshal(c.run(args...), v); err != nil {
		c.t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
	}
}

func (c *awsCLI) file(name string, data []byte) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *awsCLI) read(name string) []byte {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *awsCLI) openssl(args ...string) string {
	c.t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func b64decode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not base64: %v", err)
	}
	return b
}

// publicKeyPEM fetches a key's public key with the CLI and writes it as a
// PEM file.
func (c *awsCLI) publicKeyPEM(keyID, name string) string {
	c.t.Helper()
	der := b64decode(c.t, c.text("kms", "get-public-key", "--key-id", keyID, "--query", "PublicKey"))
	if _, err := x509.ParsePKIXPublicKey(der); err != nil {
		c.t.Fatal(err)
	}
	return c.file(name, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// TestAWSCLI runs the product brief's workflows with the real AWS CLI v2
// and openssl against the endpoint.
func TestAWSCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("the AWS CLI tests take a while; skipped under -short")
	}
	e := newEnv(t)
	c := newAWSCLI(t, e)

	var created struct {
		KeyMetadata struct{ KeyId, Arn, KeyState string }
	}
	c.json(&created, "kms", "create-key", "--description", "made by the aws CLI")
	keyID := created.KeyMetadata.KeyId
	if created.KeyMetadata.KeyState != "Enabled" || !strings.HasSuffix(created.KeyMetadata.Arn, ":key/"+keyID) {
		t.Fatalf("create-key answered %+v", created)
	}
	c.run("kms", "create-alias", "--alias-name", "alias/cli-demo", "--target-key-id", keyID)
	c.fails("AlreadyExistsException", "kms", "create-alias", "--alias-name", "alias/cli-demo", "--target-key-id", keyID)
	c.fails("NotFoundException", "kms", "describe-key", "--key-id", "alias/none-such")

	t.Run("EncryptDecryptWithContext", func(t *testing.T) {
		c := c.in(t)
		c.file("secret.txt", []byte("meu segredo\n"))
		ct := b64decode(t, c.text("kms", "encrypt", "--key-id", "alias/cli-demo", "--plaintext", "fileb://secret.txt",
			"--encryption-context", "purpose=demo,team=crypto", "--query", "CiphertextBlob"))
		c.file("secret.enc", ct)
		pt := b64decode(t, c.text("kms", "decrypt", "--ciphertext-blob", "fileb://secret.enc",
			"--encryption-context", "purpose=demo,team=crypto", "--query", "Plaintext"))
		if string(pt) != "meu segredo\n" {
			t.Fatalf("decrypted %q", pt)
		}
		c.fails("InvalidCiphertextException", "kms", "decrypt", "--ciphertext-blob", "fileb://secret.enc", "--encryption-context", "purpose=other")
	})

	t.Run("EnvelopeEncryption", func(t *testing.T) {
		c := c.in(t)
		// 1. GenerateDataKey with the key id.
		var dk struct{ Plaintext, CiphertextBlob, KeyId string }
		c.json(&dk, "kms", "generate-data-key", "--key-id", "alias/cli-demo", "--key-spec", "AES_256", "--encryption-context", "file=report.pdf")
		// 2. The data key arrives in plaintext and encrypted.
		key := b64decode(t, dk.Plaintext)
		if len(key) != 32 || !strings.HasSuffix(dk.KeyId, keyID) {
			t.Fatalf("data key of %d bytes from %s", len(key), dk.KeyId)
		}
		// 3. Encrypt the file locally, erase the plaintext key, keep the
		// encrypted one.
		file := make([]byte, 256<<10)
		_, _ = rand.Read(file)
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)
		nonce := make([]byte, gcm.NonceSize())
		_, _ = rand.Read(nonce)
		c.file("report.pdf.enc", gcm.Seal(nonce, nonce, file, nil))
		clear(key)
		c.file("report.pdf.key", b64decode(t, dk.CiphertextBlob))
		// 4. Decrypt the data key.
		key = b64decode(t, c.text("kms", "decrypt", "--ciphertext-blob", "fileb://report.pdf.key",
			"--encryption-context", "file=report.pdf", "--query", "Plaintext"))
		// 5. Decrypt the file and erase the key.
		block, _ = aes.NewCipher(key)
		gcm, _ = cipher.NewGCM(block)
		sealed := c.read("report.pdf.enc")
		got, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
		clear(key)
		if err != nil || !bytes.Equal(got, file) {
			t.Fatalf("envelope decryption failed: %v", err)
		}
	})

	t.Run("RSAOAEPWithOpenSSL", func(t *testing.T) {
		c := c.in(t)
		var rsaKey struct{ KeyMetadata struct{ KeyId string } }
		c.json(&rsaKey, "kms", "create-key", "--key-spec", "RSA_2048", "--key-usage", "ENCRYPT_DECRYPT")
		id := rsaKey.KeyMetadata.KeyId
		c.publicKeyPEM(id, "mykey_pub")
		c.file("file.txt", []byte("encrypted with the public key\n"))
		// The product brief's own commands, OAEP with SHA-1.
		c.openssl("rsautl", "-encrypt", "-oaep", "-in", "file.txt", "-out", "encrypted.txt", "-pubin", "-inkey", "mykey_pub")
		pt := b64decode(t, c.text("kms", "decrypt", "--key-id", id, "--encryption-algorithm", "RSAES_OAEP_SHA_1",
			"--ciphertext-blob", "fileb://encrypted.txt", "--query", "Plaintext"))
		if string(pt) != "encrypted with the public key\n" {
			t.Fatalf("RSAES_OAEP_SHA_1 decrypted %q", pt)
		}
		for _, md := range []string{"sha1", "sha256"} {
			c.openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", "mykey_pub", "-in", "file.txt", "-out", "encrypted-"+md+".bin",
				"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:"+md, "-pkeyopt", "rsa_mgf1_md:"+md)
			alg := map[string]string{"sha1": "RSAES_OAEP_SHA_1", "sha256": "RSAES_OAEP_SHA_256"}[md]
			pt := b64decode(t, c.text("kms", "decrypt", "--key-id", id, "--encryption-algorithm", alg,
				"--ciphertext-blob", "fileb://encrypted-"+md+".bin", "--query", "Plaintext"))
			if string(pt) != "encrypted with the public key\n" {
				t.Fatalf("%s decrypted %q", alg, pt)
			}
		}
		c.fails("InvalidCiphertextException", "kms", "decrypt", "--key-id", id, "--encryption-algorithm", "RSAES_OAEP_SHA_256",
			"--ciphertext-blob", "fileb://encrypted-sha1.bin")
	})

	t.Run("SignVerifyWithOpenSSL", func(t *testing.T) {
		c := c.in(t)
		c.file("message.txt", []byte("a message to sign\n"))
		for _, k := range []struct{ spec, alg string }{{"ECC_NIST_P256", "ECDSA_SHA_256"}, {"RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"}} {
			var key struct{ KeyMetadata struct{ KeyId string } }
			c.json(&key, "kms", "create-key", "--key-spec", k.spec, "--key-usage", "SIGN_VERIFY")
			id := key.KeyMetadata.KeyId
			sig := b64decode(t, c.text("kms", "sign", "--key-id", id, "--message", "fileb://message.txt", "--message-type", "RAW",
				"--signing-algorithm", k.alg, "--query", "Signature"))
			c.file("message.sig", sig)
			c.publicKeyPEM(id, "sign_pub.pem")
			if out := c.openssl("dgst", "-sha256", "-verify", "sign_pub.pem", "-signature", "message.sig", "message.txt"); !strings.Contains(out, "Verified OK") {
				t.Fatalf("%s: openssl says %s", k.alg, out)
			}
			if v := c.text("kms", "verify", "--key-id", id, "--message", "fileb://message.txt", "--message-type", "RAW",
				"--signing-algorithm", k.alg, "--signature", "fileb://message.sig", "--query", "SignatureValid"); v != "True" {
				t.Fatalf("%s: aws kms verify says %s", k.alg, v)
			}
			c.file("other.txt", []byte("another message\n"))
			c.fails("KMSInvalidSignatureException", "kms", "verify", "--key-id", id, "--message", "fileb://other.txt", "--message-type", "RAW",
				"--signing-algorithm", k.alg, "--signature", "fileb://message.sig")
		}
	})

	t.Run("ListKeysPagination", func(t *testing.T) {
		c := c.in(t)
		for range 3 {
			c.run("kms", "create-key")
		}
		var all struct {
			Keys []struct{ KeyId, KeyArn string }
		}
		c.json(&all, "kms", "list-keys")
		if len(all.Keys) < 7 {
			t.Fatalf("list-keys shows %d keys", len(all.Keys))
		}
		var ids []string
		token := ""
		calls := 0
		for {
			args := []string{"kms", "list-keys", "--page-size", "2", "--max-items", "3"}
			if token != "" {
				args = append(args, "--starting-token", token)
			}
			var page struct {
				Keys      []struct{ KeyId string }
				NextToken string
			}
			c.json(&page, args...)
			calls++
			for _, k := range page.Keys {
				ids = append(ids, k.KeyId)
			}
			if page.NextToken == "" {
				break
			}
			if len(page.Keys) != 3 {
				t.Fatalf("a page with a NextToken has %d keys, want 3", len(page.Keys))
			}
			token = page.NextToken
		}
		var want []string
		for _, k := range all.Keys {
			want = append(want, k.KeyId)
		}
		if !slices.Equal(ids, want) || calls != (len(want)+2)/3 {
			t.Fatalf("paged %d keys in %d calls, want the %d keys of list-keys", len(ids), calls, len(want))
		}
	})
}
