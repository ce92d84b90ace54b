package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/internal/pki"
)

// awsKMSClient is an aws-sdk-go-v2 KMS client configured from the AWS_*
// exports of an env file, as the AWS CLI or an SDK would take them from
// the environment (AWS_CA_BUNDLE included).
func awsKMSClient(t *testing.T, env map[string]string) *kms.Client {
	t.Helper()
	cfg := aws.Config{
		Region:      env["AWS_DEFAULT_REGION"],
		Credentials: credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], ""),
	}
	if bundle := env["AWS_CA_BUNDLE"]; bundle != "" {
		pool, err := pki.CertPoolFromFile(bundle)
		if err != nil {
			t.Fatal(err)
		}
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(env["AWS_ENDPOINT_URL_KMS"]) })
}

// checkAWSEncrypt makes a key through the AWS endpoint and round-trips a
// message with an encryption context through Encrypt and Decrypt.
func checkAWSEncrypt(t *testing.T, env map[string]string) {
	t.Helper()
	c := awsKMSClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("dev AWS endpoint test")})
	if err != nil {
		t.Fatalf("kms.CreateKey through %s: %v", env["AWS_ENDPOINT_URL_KMS"], err)
	}
	msg := []byte("hello over the AWS KMS API")
	ec := map[string]string{"purpose": "test"}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: msg, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("kms.Encrypt: %v", err)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("kms.Decrypt: %v", err)
	}
	if !bytes.Equal(dec.Plaintext, msg) || aws.ToString(dec.KeyId) != aws.ToString(key.KeyMetadata.Arn) {
		t.Fatalf("kms.Decrypt = %q under %s; want %q under %s", dec.Plaintext, aws.ToString(dec.KeyId), msg, aws.ToString(key.KeyMetadata.Arn))
	}
}

// checkNoSecret requires that an access key's secret appears nowhere in
// the output.
func checkNoSecret(t *testing.T, secret, out string) {
	t.Helper()
	if secret == "" || strings.Contains(out, secret) {
		t.Error("the AWS secret access key appears in the output (or is empty)")
	}
}

// TestServeKMSEndpoint runs a node with the AWS KMS endpoint over HTTPS
// with the node certificate, as serve does by default, and reloads its
// credentials file on SIGHUP.
func TestServeKMSEndpoint(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	c := newServeCluster(t, module)
	credFile := filepath.Join(c.dir, "kms-credentials.json")
	admin := writeAccessKeys(t, credFile, "admin")
	n := c.node(t, "node-1", "bootstrap: true\n")
	kmsAddr := freeAddrs(t, 1)[0]
	n.extra += "kms: {addr: " + kmsAddr + ", credentials_file: " + credFile + "}\n"
	n.writeConfig(t, module, freeAddrs(t, 3))
	p := c.start(t, n)

	env := map[string]string{
		"AWS_ENDPOINT_URL_KMS": "https://" + kmsAddr, "AWS_CA_BUNDLE": c.caFile, "AWS_DEFAULT_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": admin.ID, "AWS_SECRET_ACCESS_KEY": admin.Secret,
	}
	checkAWSEncrypt(t, env)

	// A key added to the file works after SIGHUP, without a restart.
	later := writeAccessKeys(t, credFile, "admin", "later")
	env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = later.ID, later.Secret
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := awsKMSClient(t, env).ListKeys(ctx, &kms.ListKeysInput{}); err == nil || !strings.Contains(err.Error(), "UnrecognizedClient") {
		t.Fatalf("ListKeys with a key not yet loaded: %v; want UnrecognizedClientException", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, "the new access key after SIGHUP", func() error {
		_, err := awsKMSClient(t, env).ListKeys(ctx, &kms.ListKeysInput{})
		return err
	})

	p.stop(t)
	out := p.out.String()
	checkOutput(t, n, out)
	checkNoSecret(t, admin.Secret, out)
	checkNoSecret(t, later.Secret, out)
	if !strings.Contains(out, "credentials reloaded") {
		t.Error("no log line for the SIGHUP reload")
	}
	// audit.file defaults to <data_dir>/audit.log.
	checkAuditLog(t, filepath.Join(n.dir, "data", "audit.log"), 0)
}

// accessKey is a generated key as the test writes it to a credentials
// file.
type accessKey struct{ ID, Secret string }

// writeAccessKeys writes a credentials file with the keys of the
// principals (the same file keeps the same keys) and returns the last
// principal's key.
func writeAccessKeys(t *testing.T, path string, principals ...string) accessKey {
	t.Helper()
	var last accessKey
	log := slog.New(slog.DiscardHandler)
	for _, p := range principals {
		k, err := ensureAccessKey(log, path, p, authz.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		last = accessKey{k.ID, k.Secret}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	return last
}
