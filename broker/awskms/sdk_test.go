package awskms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
)

// createKey makes a key through the SDK and returns its id.
func createKey(t testing.TB, c *kms.Client, spec types.KeySpec, usage types.KeyUsageType) string {
	t.Helper()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{KeySpec: spec, KeyUsage: usage})
	if err != nil {
		t.Fatalf("create %s key: %v", spec, err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

// TestSDK drives every supported operation through aws-sdk-go-v2's KMS
// client against one broker, and checks the AWS error names.
func TestSDK(t *testing.T) {
	e := newEnv(t)
	c := e.kms
	ctx := ctxT(t)
	arn := func(id string) string { return fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", testRegion, testAccount, id) }

	// Keys used by several subtests.
	sym := createKey(t, c, "", "")
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/sdk-sym"), TargetKeyId: aws.String(sym)}); err != nil {
		t.Fatal(err)
	}
	rsaKey := createKey(t, c, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt)
	ecKey := createKey(t, c, types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify)
	macKey := createKey(t, c, types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac)

	t.Run("CreateKeyWithoutAliasAndDescribe", func(t *testing.T) {
		before := time.Now().Add(-2 * time.Second)
		out, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("made by the SDK"),
			Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("crypto")}}})
		if err != nil {
			t.Fatal(err)
		}
		md := out.KeyMetadata
		id := aws.ToString(md.KeyId)
		if aws.ToString(md.Arn) != arn(id) || aws.ToString(md.AWSAccountId) != testAccount {
			t.Errorf("arn %s account %s", aws.ToString(md.Arn), aws.ToString(md.AWSAccountId))
		}
		// Older clients still read the deprecated CustomerMasterKeySpec.
		//lint:ignore SA1019 AWS keeps answering with it, and so does this endpoint
		cmks := md.CustomerMasterKeySpec
		if !md.Enabled || md.KeyState != types.KeyStateEnabled || md.KeySpec != types.KeySpecSymmetricDefault ||
			cmks != types.CustomerMasterKeySpecSymmetricDefault || md.KeyUsage != types.KeyUsageTypeEncryptDecrypt ||
			md.Origin != types.OriginTypeAwsKms || md.KeyManager != types.KeyManagerTypeCustomer ||
			aws.ToBool(md.MultiRegion) || aws.ToString(md.Description) != "made by the SDK" {
			t.Errorf("metadata %+v", md)
		}
		if !slices.Equal(md.EncryptionAlgorithms, []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecSymmetricDefault}) {
			t.Errorf("encryption algorithms %v", md.EncryptionAlgorithms)
		}
		if md.CreationDate == nil || md.CreationDate.Before(before) || md.CreationDate.After(time.Now().Add(time.Second)) {
			t.Errorf("creation date %v", md.CreationDate)
		}
		for _, ref := range []string{id, arn(id), "alias/sdk-sym", "arn:aws:kms:us-east-1:000000000000:alias/sdk-sym"} {
			d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
			if err != nil {
				t.Fatalf("describe %s: %v", ref, err)
			}
			want := id
			if strings.Contains(ref, "alias/") {
				want = sym
			}
			if aws.ToString(d.KeyMetadata.KeyId) != want {
				t.Errorf("describe %s: key %s", ref, aws.ToString(d.KeyMetadata.KeyId))
			}
		}
		asym, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ecKey)})
		if err != nil {
			t.Fatal(err)
		}
		if asym.KeyMetadata.KeySpec != types.KeySpecEccNistP256 || !slices.Contains(asym.KeyMetadata.SigningAlgorithms, types.SigningAlgorithmSpecEcdsaSha256) {
			t.Errorf("EC metadata %+v", asym.KeyMetadata)
		}
	})

	t.Run("CreateKeyErrors", func(t *testing.T) {
		_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "NOT_A_SPEC"})
		wantAWSError(t, err, "ValidationException", "keySpec")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecSm2})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
		wantAWSError(t, err, "ValidationException", "KeyUsage")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{MultiRegion: aws.Bool(true)})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{Tags: []types.Tag{{TagKey: aws.String("aws:reserved"), TagValue: aws.String("x")}}})
		wantAWSError(t, err, "TagException")
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String("not json")})
		wantAWSError(t, err, "MalformedPolicyDocumentException")
	})

	t.Run("KeyReferences", func(t *testing.T) {
		_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("11111111-2222-4333-8444-555555555555")})
		wantAWSError(t, err, "NotFoundException")
		_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/none-such")})
		wantAWSError(t, err, "NotFoundException")
		_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("not-a-key")})
		wantAWSError(t, err, "NotFoundException", "Invalid keyId")
		_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("arn:aws:kms:eu-west-1:000000000000:key/" + sym)})
		wantAWSError(t, err, "NotFoundException", "does not exist")
		_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("arn:aws:kms:us-east-1:111122223333:key/" + sym)})
		wantAWSError(t, err, "NotFoundException")
		// Management operations take a key id or key ARN, never an alias.
		_, err = c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String("alias/sdk-sym")})
		wantAWSError(t, err, "NotFoundException", "alias")
		_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String("arn:aws:kms:us-east-1:000000000000:alias/sdk-sym")})
		wantAWSError(t, err, "NotFoundException")
		_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/by-alias"), TargetKeyId: aws.String("alias/sdk-sym")})
		wantAWSError(t, err, "NotFoundException")
		if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(arn(macKey))}); err != nil {
			t.Fatalf("disable by key ARN: %v", err)
		}
		if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(macKey)}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("EncryptDecrypt", func(t *testing.T) {
		ec := map[string]string{"purpose": "test", "tenant": "a"}
		enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/sdk-sym"), Plaintext: []byte("hello"), EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(enc.KeyId) != arn(sym) || enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
			t.Errorf("encrypt answered key %s alg %s", aws.ToString(enc.KeyId), enc.EncryptionAlgorithm)
		}
		dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if string(dec.Plaintext) != "hello" || aws.ToString(dec.KeyId) != arn(sym) {
			t.Errorf("decrypt: %q from %s", dec.Plaintext, aws.ToString(dec.KeyId))
		}
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"purpose": "other"}})
		wantAWSError(t, err, "InvalidCiphertextException")
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		wantAWSError(t, err, "InvalidCiphertextException")
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("garbage"), EncryptionContext: ec})
		wantAWSError(t, err, "InvalidCiphertextException")
		other := createKey(t, c, "", "")
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: aws.String(other)})
		wantAWSError(t, err, "IncorrectKeyException")
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(sym), Plaintext: make([]byte, 4097)})
		wantAWSError(t, err, "ValidationException")
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(ecKey), Plaintext: []byte("x")})
		wantAWSError(t, err, "InvalidKeyUsageException")
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(sym), Plaintext: []byte("x"), EncryptionAlgorithm: "ROT13"})
		wantAWSError(t, err, "ValidationException", "encryptionAlgorithm")
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(sym), Plaintext: []byte("x"), DryRun: aws.Bool(true)})
		wantAWSError(t, err, "DryRunOperationException")
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, DryRun: aws.Bool(true)})
		wantAWSError(t, err, "DryRunOperationException")

		re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
			DestinationKeyId: aws.String(other), DestinationEncryptionContext: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(re.SourceKeyId) != arn(sym) || aws.ToString(re.KeyId) != arn(other) {
			t.Errorf("re-encrypt keys %s -> %s", aws.ToString(re.SourceKeyId), aws.ToString(re.KeyId))
		}
		dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"k": "v"}})
		if err != nil || string(dec.Plaintext) != "hello" {
			t.Fatalf("decrypt re-encrypted: %q, %v", dec.Plaintext, err)
		}
		// Into a key that cannot take the plaintext: the answer names the
		// destination, not a Plaintext the caller never sent.
		big, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(sym), Plaintext: make([]byte, 1000)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: big.CiphertextBlob, DestinationKeyId: aws.String(rsaKey),
			DestinationEncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
		wantAWSError(t, err, "ValidationException", "DestinationKeyId", "at most 190 bytes", "plaintext is 1000 bytes")
	})

	t.Run("DataKeys", func(t *testing.T) {
		ec := map[string]string{"file": "report.pdf"}
		dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(sym), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if len(dk.Plaintext) != 32 || aws.ToString(dk.KeyId) != arn(sym) {
			t.Fatalf("data key of %d bytes from %s", len(dk.Plaintext), aws.ToString(dk.KeyId))
		}
		dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) {
			t.Fatalf("decrypt data key: %v", err)
		}
		n, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(sym), NumberOfBytes: aws.Int32(64)})
		if err != nil || len(n.Plaintext) != 64 {
			t.Fatalf("64-byte data key: %v", err)
		}
		_, err = c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(sym)})
		wantAWSError(t, err, "ValidationException")
		_, err = c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(sym), NumberOfBytes: aws.Int32(-1)})
		wantAWSError(t, err, "ValidationException")
		_, err = c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(rsaKey), KeySpec: types.DataKeySpecAes256})
		wantAWSError(t, err, "InvalidKeyUsageException")
		wp, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(sym), KeySpec: types.DataKeySpecAes128})
		if err != nil {
			t.Fatal(err)
		}
		dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wp.CiphertextBlob})
		if err != nil || len(dec.Plaintext) != 16 {
			t.Fatalf("decrypt data key without plaintext: %v", err)
		}

		pair, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecEccNistP256, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(pair.PrivateKeyPlaintext)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.ParsePKIXPublicKey(pair.PublicKey)
		if err != nil || !priv.(*ecdsa.PrivateKey).PublicKey.Equal(pub) || pair.KeyPairSpec != types.DataKeyPairSpecEccNistP256 {
			t.Fatalf("data key pair does not match: %v", err)
		}
		dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: pair.PrivateKeyCiphertextBlob, EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.Plaintext, pair.PrivateKeyPlaintext) {
			t.Fatalf("decrypt private key: %v", err)
		}
		pw, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecEccNistP384})
		if err != nil || len(pw.PublicKey) == 0 || len(pw.PrivateKeyCiphertextBlob) == 0 {
			t.Fatalf("data key pair without plaintext: %v", err)
		}
		_, err = c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecSm2})
		wantAWSError(t, err, "UnsupportedOperationException")
	})

	t.Run("RSAPublicKeyEncryption", func(t *testing.T) {
		pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(rsaKey)})
		if err != nil {
			t.Fatal(err)
		}
		if pk.KeySpec != types.KeySpecRsa2048 || pk.KeyUsage != types.KeyUsageTypeEncryptDecrypt ||
			!slices.Contains(pk.EncryptionAlgorithms, types.EncryptionAlgorithmSpecRsaesOaepSha1) || aws.ToString(pk.KeyId) != arn(rsaKey) {
			t.Errorf("public key answer %+v", pk)
		}
		pub, err := x509.ParsePKIXPublicKey(pk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, alg := range []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecRsaesOaepSha1, types.EncryptionAlgorithmSpecRsaesOaepSha256} {
			h := sha1.New()
			if alg == types.EncryptionAlgorithmSpecRsaesOaepSha256 {
				h = sha256.New()
			}
			ct, err := rsa.EncryptOAEP(h, rand.Reader, pub.(*rsa.PublicKey), []byte("secret "+string(alg)), nil)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(rsaKey), CiphertextBlob: ct, EncryptionAlgorithm: alg})
			if err != nil || string(dec.Plaintext) != "secret "+string(alg) || dec.EncryptionAlgorithm != alg {
				t.Fatalf("%s: %q %v", alg, dec.Plaintext, err)
			}
			enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(rsaKey), Plaintext: []byte("via service"), EncryptionAlgorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			dec, err = c.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(rsaKey), CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: alg})
			if err != nil || string(dec.Plaintext) != "via service" {
				t.Fatalf("%s round trip: %v", alg, err)
			}
		}
		_, err = c.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(rsaKey), CiphertextBlob: make([]byte, 256), EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha1})
		wantAWSError(t, err, "InvalidCiphertextException")
		_, err = c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(sym)})
		wantAWSError(t, err, "UnsupportedOperationException")
	})

	t.Run("SignVerify", func(t *testing.T) {
		msg := []byte("the message")
		s, err := c.Sign(ctx, &kms.SignInput{KeyId: aws.String(ecKey), Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		if err != nil {
			t.Fatal(err)
		}
		pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(ecKey)})
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := x509.ParsePKIXPublicKey(pk.PublicKey)
		digest := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], s.Signature) {
			t.Fatal("signature does not verify locally")
		}
		v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: aws.String(ecKey), Message: msg, Signature: s.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		if err != nil || !v.SignatureValid || aws.ToString(v.KeyId) != arn(ecKey) {
			t.Fatalf("verify: %+v %v", v, err)
		}
		v, err = c.Verify(ctx, &kms.VerifyInput{KeyId: aws.String(ecKey), Message: digest[:], MessageType: types.MessageTypeDigest,
			Signature: s.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		if err != nil || !v.SignatureValid {
			t.Fatalf("verify digest: %v", err)
		}
		_, err = c.Verify(ctx, &kms.VerifyInput{KeyId: aws.String(ecKey), Message: []byte("another message"), Signature: s.Signature,
			SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		wantAWSError(t, err, "KMSInvalidSignatureException")
		_, err = c.Sign(ctx, &kms.SignInput{KeyId: aws.String(ecKey), Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
		wantAWSError(t, err, "InvalidKeyUsageException")
		_, err = c.Sign(ctx, &kms.SignInput{KeyId: aws.String(sym), Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		wantAWSError(t, err, "InvalidKeyUsageException")
		_, err = c.Sign(ctx, &kms.SignInput{KeyId: aws.String(ecKey), Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256, DryRun: aws.Bool(true)})
		wantAWSError(t, err, "DryRunOperationException")
	})

	t.Run("Mac", func(t *testing.T) {
		m, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: aws.String(macKey), Message: []byte("data"), MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
		if err != nil || len(m.Mac) != 32 || m.MacAlgorithm != types.MacAlgorithmSpecHmacSha256 {
			t.Fatalf("generate mac: %v", err)
		}
		v, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: aws.String(macKey), Message: []byte("data"), Mac: m.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
		if err != nil || !v.MacValid {
			t.Fatalf("verify mac: %v", err)
		}
		bad := bytes.Clone(m.Mac)
		bad[0] ^= 1
		_, err = c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: aws.String(macKey), Message: []byte("data"), Mac: bad, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
		wantAWSError(t, err, "KMSInvalidMacException")
		_, err = c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: aws.String(macKey), Message: []byte("data"), MacAlgorithm: types.MacAlgorithmSpecHmacSha512})
		wantAWSError(t, err, "InvalidKeyUsageException")
	})

	t.Run("GenerateRandom", func(t *testing.T) {
		r, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(48)})
		if err != nil || len(r.Plaintext) != 48 {
			t.Fatalf("random: %v", err)
		}
		for _, n := range []int32{0, 1025} {
			_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(n)})
			wantAWSError(t, err, "ValidationException")
		}
		_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8), CustomKeyStoreId: aws.String("cks-1")})
		wantAWSError(t, err, "UnsupportedOperationException")
	})

	t.Run("KeyStates", func(t *testing.T) {
		k := createKey(t, c, "", "")
		enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(k), Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(k), Plaintext: []byte("x")})
		wantAWSError(t, err, "DisabledException")
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		wantAWSError(t, err, "DisabledException")
		d, _ := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
		if d.KeyMetadata.Enabled || d.KeyMetadata.KeyState != types.KeyStateDisabled {
			t.Errorf("disabled key described as %+v", d.KeyMetadata)
		}
		if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(k), PendingWindowInDays: aws.Int32(3)})
		wantAWSError(t, err, "ValidationException", "PendingWindowInDays")
		sd, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(k), PendingWindowInDays: aws.Int32(7)})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(sd.KeyId) != arn(k) || sd.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(sd.PendingWindowInDays) != 7 ||
			sd.DeletionDate == nil || time.Until(*sd.DeletionDate) < 6*24*time.Hour {
			t.Errorf("schedule deletion answer %+v", sd)
		}
		d, _ = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
		if d.KeyMetadata.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(d.KeyMetadata.PendingDeletionWindowInDays) != 7 ||
			d.KeyMetadata.DeletionDate == nil {
			t.Errorf("pending key described as %+v", d.KeyMetadata)
		}
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(k), Plaintext: []byte("x")})
		wantAWSError(t, err, "KMSInvalidStateException")
		_, err = c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(k)})
		wantAWSError(t, err, "KMSInvalidStateException")
		_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(k)})
		wantAWSError(t, err, "KMSInvalidStateException")
		cd, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(k)})
		if err != nil || aws.ToString(cd.KeyId) != arn(k) {
			t.Fatalf("cancel deletion: %v", err)
		}
		_, err = c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(k)})
		wantAWSError(t, err, "KMSInvalidStateException")
		d, _ = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
		if d.KeyMetadata.KeyState != types.KeyStateDisabled {
			t.Errorf("after cancelling deletion the key is %s, want Disabled as in AWS", d.KeyMetadata.KeyState)
		}
		if _, err := c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(k), Description: aws.String("new words")}); err != nil {
			t.Fatal(err)
		}
		d, _ = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
		if aws.ToString(d.KeyMetadata.Description) != "new words" {
			t.Errorf("description %q", aws.ToString(d.KeyMetadata.Description))
		}
	})

	t.Run("Aliases", func(t *testing.T) {
		k1 := createKey(t, c, "", "")
		k2 := createKey(t, c, "", "")
		if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app/one"), TargetKeyId: aws.String(arn(k1))}); err != nil {
			t.Fatal(err)
		}
		_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app/one"), TargetKeyId: aws.String(k2)})
		wantAWSError(t, err, "AlreadyExistsException")
		_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/aws/mine"), TargetKeyId: aws.String(k2)})
		wantAWSError(t, err, "InvalidAliasNameException")
		_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("no-prefix"), TargetKeyId: aws.String(k2)})
		wantAWSError(t, err, "InvalidAliasNameException")
		if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app/one"), TargetKeyId: aws.String(k2)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app/one"), TargetKeyId: aws.String(ecKey)})
		wantAWSError(t, err, "ValidationException")
		la, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(k2)})
		if err != nil || len(la.Aliases) != 1 {
			t.Fatalf("aliases of k2: %v %v", la, err)
		}
		a := la.Aliases[0]
		if aws.ToString(a.AliasName) != "alias/app/one" || aws.ToString(a.TargetKeyId) != k2 ||
			aws.ToString(a.AliasArn) != "arn:aws:kms:us-east-1:000000000000:alias/app/one" || a.CreationDate == nil || a.LastUpdatedDate == nil {
			t.Errorf("alias entry %+v", a)
		}
		var names []string
		p := kms.NewListAliasesPaginator(c, &kms.ListAliasesInput{Limit: aws.Int32(1)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range page.Aliases {
				names = append(names, aws.ToString(a.AliasName))
			}
		}
		if !slices.Contains(names, "alias/app/one") || !slices.Contains(names, "alias/sdk-sym") || !slices.IsSorted(names) {
			t.Errorf("paged aliases %v", names)
		}
		if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app/one")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app/one")})
		wantAWSError(t, err, "NotFoundException")
	})

	t.Run("Tags", func(t *testing.T) {
		k := createKey(t, c, "", "")
		var tags []types.Tag
		for i := range 5 {
			tags = append(tags, types.Tag{TagKey: aws.String(fmt.Sprintf("k%d", i)), TagValue: aws.String(fmt.Sprintf("v%d", i))})
		}
		if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(k), Tags: tags}); err != nil {
			t.Fatal(err)
		}
		// Limits count characters, as AWS's do, on every layer: 128 two-byte
		// characters are a valid tag key, 129 are one TagException.
		wide := []types.Tag{{TagKey: aws.String(strings.Repeat("é", 128)), TagValue: aws.String(strings.Repeat("é", 256))}}
		if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(k), Tags: wide}); err != nil {
			t.Fatalf("a 128-character tag key of 2-byte characters: %v", err)
		}
		if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(k), TagKeys: []string{strings.Repeat("é", 128)}}); err != nil {
			t.Fatal(err)
		}
		_, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(k), Tags: []types.Tag{{TagKey: aws.String(strings.Repeat("é", 129)), TagValue: aws.String("")}}})
		wantAWSError(t, err, "TagException", "128 characters")
		if _, err := c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(k), Description: aws.String(strings.Repeat("é", 8192))}); err != nil {
			t.Fatalf("an 8192-character description of 2-byte characters: %v", err)
		}
		_, err = c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(k), Description: aws.String("a\x1b[2Jb")})
		wantAWSError(t, err, "ValidationException", "Description", "control characters")
		_, err = c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(k), Tags: []types.Tag{{TagKey: aws.String("AWS:x"), TagValue: aws.String("")}}})
		wantAWSError(t, err, "TagException")
		if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(k), TagKeys: []string{"k4"}}); err != nil {
			t.Fatal(err)
		}
		var got []string
		var marker *string
		for pages := 0; ; pages++ {
			out, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(k), Limit: aws.Int32(3), Marker: marker})
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range out.Tags {
				got = append(got, aws.ToString(tg.TagKey)+"="+aws.ToString(tg.TagValue))
			}
			if !out.Truncated {
				if pages != 1 {
					t.Errorf("4 tags in pages of 3 took %d pages", pages+1)
				}
				break
			}
			marker = out.NextMarker
		}
		if strings.Join(got, ",") != "k0=v0,k1=v1,k2=v2,k3=v3" {
			t.Errorf("tags %v", got)
		}
		_, err = c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(k), Marker: aws.String("bogus")})
		wantAWSError(t, err, "InvalidMarkerException")
	})

	t.Run("Rotation", func(t *testing.T) {
		k := createKey(t, c, "", "")
		old, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(k), Plaintext: []byte("before rotation")})
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(k)})
		if err != nil || st.KeyRotationEnabled {
			t.Fatalf("initial rotation status %+v %v", st, err)
		}
		_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(k), RotationPeriodInDays: aws.Int32(30)})
		wantAWSError(t, err, "ValidationException")
		_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(k), RotationPeriodInDays: aws.Int32(180)})
		wantAWSError(t, err, "UnsupportedOperationException")
		if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		st, err = c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(k)})
		if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 365 || st.NextRotationDate == nil ||
			time.Until(*st.NextRotationDate) < 364*24*time.Hour {
			t.Fatalf("rotation status %+v %v", st, err)
		}
		for range 2 {
			r, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(k)})
			if err != nil || aws.ToString(r.KeyId) != k {
				t.Fatalf("rotate on demand: %v", err)
			}
		}
		var rotations []types.RotationsListEntry
		p := kms.NewListKeyRotationsPaginator(c, &kms.ListKeyRotationsInput{KeyId: aws.String(k), Limit: aws.Int32(1)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rotations = append(rotations, page.Rotations...)
		}
		if len(rotations) != 2 || rotations[0].RotationDate == nil {
			t.Fatalf("rotations %+v", rotations)
		}
		dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: old.CiphertextBlob})
		if err != nil || string(dec.Plaintext) != "before rotation" {
			t.Fatalf("decrypt after rotation: %v", err)
		}
		if _, err := c.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(ecKey)})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(rsaKey)})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: aws.String(macKey)})
		wantAWSError(t, err, "UnsupportedOperationException")
		if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(k)})
		wantAWSError(t, err, "KMSInvalidStateException")
		_, err = c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(k)})
		wantAWSError(t, err, "KMSInvalidStateException")
	})

	t.Run("AutomaticRotation", func(t *testing.T) {
		k := createKey(t, c, "", "")
		if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
		if n, err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).RotateDue(ctx); err != nil || n != 0 {
			t.Fatalf("rotated %d keys before any was due: %v", n, err)
		}
		e.clock.Set(time.Now().Add(366 * 24 * time.Hour))
		defer e.clock.Set(time.Time{})
		if n, err := broker.NewDaemon(e.svc, broker.DaemonConfig{}).RotateDue(ctx); err != nil || n == 0 {
			t.Fatalf("rotated %d keys a year later: %v", n, err)
		}
		r, err := c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: aws.String(k)})
		if err != nil || len(r.Rotations) != 1 {
			t.Fatalf("rotations after the period: %+v %v", r, err)
		}
	})

	t.Run("KeyPolicy", func(t *testing.T) {
		k := createKey(t, c, "", "")
		gp, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(k)})
		if err != nil || aws.ToString(gp.PolicyName) != "default" || !strings.Contains(aws.ToString(gp.Policy), "arn:aws:iam::000000000000:root") {
			t.Fatalf("default policy %+v %v", gp, err)
		}
		policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/app"},"Action":"kms:Decrypt","Resource":"*"}]}`
		if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(k), Policy: aws.String(policy)}); err != nil {
			t.Fatal(err)
		}
		gp, err = c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(k), PolicyName: aws.String("default")})
		if err != nil || aws.ToString(gp.Policy) != policy {
			t.Fatalf("policy after put: %q %v", aws.ToString(gp.Policy), err)
		}
		_, err = c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(k), Policy: aws.String(`{"Version":"2012-10-17"}`)})
		wantAWSError(t, err, "MalformedPolicyDocumentException")
		_, err = c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(k), PolicyName: aws.String("other")})
		wantAWSError(t, err, "NotFoundException")
		lp, err := c.ListKeyPolicies(ctx, &kms.ListKeyPoliciesInput{KeyId: aws.String(k)})
		if err != nil || !slices.Equal(lp.PolicyNames, []string{"default"}) || lp.Truncated {
			t.Fatalf("policy names %v %v", lp, err)
		}
		_, err = c.ListKeyPolicies(ctx, &kms.ListKeyPoliciesInput{KeyId: aws.String(k), Limit: aws.Int32(1001)})
		wantAWSError(t, err, "ValidationException", "limit")
		_, err = c.ListKeyPolicies(ctx, &kms.ListKeyPoliciesInput{KeyId: aws.String(k), Marker: aws.String("bogus")})
		wantAWSError(t, err, "InvalidMarkerException")
		created, err := c.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(policy)})
		if err != nil {
			t.Fatal(err)
		}
		gp, err = c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: created.KeyMetadata.KeyId})
		if err != nil || aws.ToString(gp.Policy) != policy {
			t.Fatalf("policy given to CreateKey: %v", err)
		}
	})

	t.Run("ListKeysPagination", func(t *testing.T) {
		for range 3 {
			createKey(t, c, "", "")
		}
		all, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1000)})
		if err != nil || all.Truncated {
			t.Fatalf("list all: %v", err)
		}
		var paged []string
		var marker *string
		pages := 0
		for {
			out, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(2), Marker: marker})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, k := range out.Keys {
				if aws.ToString(k.KeyArn) != arn(aws.ToString(k.KeyId)) {
					t.Errorf("list entry %s / %s", aws.ToString(k.KeyId), aws.ToString(k.KeyArn))
				}
				paged = append(paged, aws.ToString(k.KeyId))
			}
			if !out.Truncated {
				if out.NextMarker != nil {
					t.Errorf("last page has NextMarker %q", aws.ToString(out.NextMarker))
				}
				break
			}
			if len(out.Keys) != 2 || out.NextMarker == nil {
				t.Fatalf("truncated page of %d keys, marker %v", len(out.Keys), out.NextMarker)
			}
			marker = out.NextMarker
		}
		var whole []string
		for _, k := range all.Keys {
			whole = append(whole, aws.ToString(k.KeyId))
		}
		if len(whole) < 7 || !slices.Equal(paged, whole) || pages != (len(whole)+1)/2 {
			t.Errorf("paged %d keys in %d pages, want the %d of one page", len(paged), pages, len(whole))
		}
		n := 0
		p := kms.NewListKeysPaginator(c, &kms.ListKeysInput{Limit: aws.Int32(3)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			n += len(page.Keys)
		}
		if n != len(whole) {
			t.Errorf("SDK paginator saw %d keys, want %d", n, len(whole))
		}
		_, err = c.ListKeys(ctx, &kms.ListKeysInput{Marker: aws.String("!!not-a-marker")})
		wantAWSError(t, err, "InvalidMarkerException")
		_, err = c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1001)})
		wantAWSError(t, err, "ValidationException")
	})

	t.Run("Unsupported", func(t *testing.T) {
		_, err := c.ListRetirableGrants(ctx, &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String("arn:aws:iam::000000000000:user/x")})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.DescribeCustomKeyStores(ctx, &kms.DescribeCustomKeyStoresInput{})
		wantAWSError(t, err, "UnsupportedOperationException")
		_, err = c.GetParametersForImport(ctx, &kms.GetParametersForImportInput{KeyId: aws.String(sym),
			WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa2048})
		wantAWSError(t, err, "UnsupportedOperationException")
	})

	t.Run("Credentials", func(t *testing.T) {
		_, err := e.client(e.admin.ID, e.admin.Secret+"x").ListKeys(ctx, &kms.ListKeysInput{})
		wantAWSError(t, err, "InvalidSignatureException", "signature")
		_, err = e.client("AKIAUNKNOWNUNKNOWN00", e.admin.Secret).ListKeys(ctx, &kms.ListKeysInput{})
		wantAWSError(t, err, "UnrecognizedClientException")
		wrongRegion := kms.NewFromConfig(aws.Config{Region: "eu-west-1", Credentials: aws.NewCredentialsCache(staticCreds(e.admin)),
			HTTPClient: e.srv.Client(), Retryer: func() aws.Retryer { return aws.NopRetryer{} }},
			func(o *kms.Options) { o.BaseEndpoint = aws.String(e.srv.URL) })
		_, err = wrongRegion.ListKeys(ctx, &kms.ListKeysInput{})
		wantAWSError(t, err, "InvalidSignatureException", "region")
	})
}

type staticCreds awskms.AccessKey

func (k staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: k.ID, SecretAccessKey: k.Secret, Source: "test"}, nil
}

// TestAuthorize checks the Authorize hook: a principal it refuses gets
// AccessDeniedException, and the hook sees the principal of the access key.
func TestAuthorize(t *testing.T) {
	auditor, err := awskms.GenerateAccessKey("auditor")
	if err != nil {
		t.Fatal(err)
	}
	auditor.Role = "auditor"
	var admin awskms.AccessKey
	e := newEnv(t, func(c *awskms.Config) {
		c.Authorize = func(ctx context.Context, principal, action string) error {
			if principal == "auditor" && action != "kms:DescribeKey" && action != "kms:ListKeys" {
				return errors.New("auditors read metadata only")
			}
			return nil
		}
		creds := c.Credentials.(awskms.StaticCredentials)
		for _, k := range creds {
			admin = k
		}
		creds[auditor.ID] = auditor
	})
	ctx := ctxT(t)
	k := createKey(t, e.kms, "", "")
	aud := e.client(auditor.ID, auditor.Secret)
	if _, err := aud.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)}); err != nil {
		t.Fatalf("auditor describe: %v", err)
	}
	_, err = aud.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(k), Plaintext: []byte("x")})
	wantAWSError(t, err, "AccessDeniedException", "auditor", "kms:Encrypt")
	_, err = aud.CreateKey(ctx, &kms.CreateKeyInput{})
	wantAWSError(t, err, "AccessDeniedException")
	if admin.Principal != "admin" {
		t.Fatalf("admin principal %q", admin.Principal)
	}
	d, err := e.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != k {
		t.Fatal(err)
	}
}
