package main

import (
	"encoding/pem"
	"fmt"
	"regexp"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

// kmsKeyFlag adds the --key flag that names the KMS key. It shadows the
// deprecated global --key (see rootCommand) on this command.
func kmsKeyFlag(cmd *cobra.Command, p *string, what string) {
	cmd.Flags().StringVar(p, "key", "", what+" (key id, key ARN, alias/NAME or alias ARN)")
}

func requireKey(key string) error {
	if key == "" {
		return usageErr("--key is required")
	}
	return nil
}

// rsaWithoutAlgorithm is the broker's refusal of an RSA encryption key
// named without an algorithm, which means SYMMETRIC_DEFAULT
// (keys.CheckEncryptionAlgorithm).
var rsaWithoutAlgorithm = regexp.MustCompile(`^RSA_[0-9]+ key with usage ENCRYPT_DECRYPT does not support SYMMETRIC_DEFAULT$`)

// algorithmHint adds to the broker's refusal of an RSA key without
// --algorithm (alg) which algorithms to give. Other errors are returned as
// they are.
func algorithmHint(err error, alg string) error {
	if alg != "" || client.AWSException(err) != "InvalidKeyUsageException" || !rsaWithoutAlgorithm.MatchString(client.Message(err)) {
		return err
	}
	return fmt.Errorf("%w; an RSA key needs --algorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256", err)
}

func (a *app) encryptCommand() *cobra.Command {
	var key, in, alg string
	var out outFlags
	var encCtx []string
	var asBase64 bool
	cmd := &cobra.Command{
		Use:   "encrypt --key KEY [--in FILE|-] [--out FILE [--force]] [--context K=V]... [--algorithm ALG] [--base64]",
		Short: "Encrypt up to 4096 bytes under a key",
		Long: `Encrypt up to 4096 bytes (less with RSA keys) under a key and write the
ciphertext blob, raw, to --out or stdout (--base64 encodes it). Use
'hsmctl encrypt-file' for larger data. --out is created with mode 0600; an
existing file is refused unless --force.

The encryption context (--context, repeatable) is bound to the ciphertext:
decrypt needs the same pairs. It is not secret. RSA keys take no context and
need --algorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.`,
		Example: `  hsmctl encrypt --key alias/payments --in card.txt --out card.enc
  echo -n 's3cr3t' | hsmctl encrypt --key alias/payments --context app=billing --base64
  hsmctl encrypt --key alias/rsa --algorithm RSAES_OAEP_SHA_256 --in secret --out secret.enc`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := requireKey(key); err != nil {
				return err
			}
			if err := out.check(); err != nil {
				return err
			}
			req := &pb.EncryptRequest{KeyId: key}
			if alg != "" {
				v, err := encryptionAlgs.parse("--algorithm", alg)
				if err != nil {
					return err
				}
				req.EncryptionAlgorithm = pb.EncryptionAlgorithm(v)
			}
			var err error
			if req.EncryptionContext, err = parsePairs("--context", encCtx); err != nil {
				return err
			}
			if req.Plaintext, err = a.readInput(in, maxPlaintext, "use 'hsmctl encrypt-file' for larger data"); err != nil {
				return err
			}
			defer clear(req.Plaintext)
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.Encrypt(a.ctx, req)
			if err != nil {
				return algorithmHint(err, alg)
			}
			return a.emitBinary(&out, asBase64, resp.GetCiphertextBlob(), "ciphertextBlob", map[string]any{
				"keyId": resp.GetKeyId(), "encryptionAlgorithm": encryptionAlgs.name(int32(resp.GetEncryptionAlgorithm())),
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the key to encrypt under (required)")
	f.StringVar(&in, "in", "-", "plaintext file, or - for standard input")
	out.register(cmd, "ciphertext", privateFileMode)
	f.StringArrayVar(&encCtx, "context", nil, "encryption context pair K=V; repeat for more")
	f.StringVar(&alg, "algorithm", "", "encryption algorithm: "+enumHelp(encryptionAlgs)+" (default SYMMETRIC_DEFAULT)")
	f.BoolVar(&asBase64, "base64", false, "write the ciphertext base64-encoded")
	return cmd
}

func (a *app) decryptCommand() *cobra.Command {
	var key, in, alg string
	var out outFlags
	var encCtx []string
	var fromBase64 bool
	cmd := &cobra.Command{
		Use:   "decrypt [--in FILE|-] [--out FILE [--force]] [--key KEY] [--context K=V]... [--algorithm ALG] [--base64]",
		Short: "Decrypt a ciphertext blob made by encrypt",
		Long: `Decrypt a ciphertext blob made by 'hsmctl encrypt' (or Encrypt, or a data key
RPC) and write the plaintext to --out or stdout. Give the encryption context
the ciphertext was made with. Symmetric ciphertext names its key; --key, if
given, must be that key. RSA ciphertext needs --key and --algorithm.

--out is a new file of mode 0600, written whole or not at all. An existing
file is refused unless --force, which replaces it (a symlink is replaced,
never followed, and the new file is 0600 whatever the old one's mode).

Every failure to decrypt, whatever its cause (wrong context, damaged blob),
gives the same InvalidCiphertextException.`,
		Example: `  hsmctl decrypt --in card.enc
  hsmctl encrypt --key alias/payments --base64 --in x | hsmctl decrypt --base64
  hsmctl decrypt --in secret.enc --key alias/rsa --algorithm RSAES_OAEP_SHA_256 --out secret`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			req := &pb.DecryptRequest{KeyId: key}
			if alg != "" {
				v, err := encryptionAlgs.parse("--algorithm", alg)
				if err != nil {
					return err
				}
				req.EncryptionAlgorithm = pb.EncryptionAlgorithm(v)
			}
			if key == "" && req.EncryptionAlgorithm != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_UNSPECIFIED &&
				req.EncryptionAlgorithm != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT {
				return usageErr(fmt.Sprintf("--key is required with --algorithm %s: RSA ciphertext does not name its key (only symmetric ciphertext does)",
					encryptionAlgs.name(int32(req.EncryptionAlgorithm))))
			}
			if err := out.check(); err != nil {
				return err
			}
			var err error
			if req.EncryptionContext, err = parsePairs("--context", encCtx); err != nil {
				return err
			}
			limit := maxCiphertext
			if fromBase64 {
				limit = 4*maxCiphertext/3 + 64
			}
			if req.CiphertextBlob, err = a.readInput(in, limit, fmt.Sprintf("ciphertext blobs are at most %d bytes; files made by encrypt-file need decrypt-file", maxCiphertext)); err != nil {
				return err
			}
			if fromBase64 {
				if req.CiphertextBlob, err = decodeBase64(req.CiphertextBlob, inputName(in)); err != nil {
					return err
				}
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.Decrypt(a.ctx, req)
			if err != nil {
				return algorithmHint(err, alg)
			}
			pt := resp.GetPlaintext()
			defer clear(pt)
			if a.json() {
				return a.emitBinary(&out, false, pt, "plaintext", map[string]any{
					"keyId": resp.GetKeyId(), "encryptionAlgorithm": encryptionAlgs.name(int32(resp.GetEncryptionAlgorithm())),
				})
			}
			if !out.toFile() {
				_, err = a.stdout.Write(pt)
				return err
			}
			return out.write(pt)
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the key the ciphertext was made under; required for RSA")
	f.StringVar(&in, "in", "-", "ciphertext file, or - for standard input")
	out.register(cmd, "plaintext", privateFileMode)
	f.StringArrayVar(&encCtx, "context", nil, "encryption context pair K=V the ciphertext was made with; repeat for more")
	f.StringVar(&alg, "algorithm", "", "encryption algorithm: "+enumHelp(encryptionAlgs)+" (default SYMMETRIC_DEFAULT)")
	f.BoolVar(&fromBase64, "base64", false, "the input is base64-encoded")
	return cmd
}

func (a *app) dataKeyCommand() *cobra.Command {
	var key, spec string
	var nbytes int
	var noPlaintext bool
	var encCtx []string
	cmd := &cobra.Command{
		Use:   "datakey --key KEY [--spec AES_256|AES_128 | --bytes N] [--no-plaintext] [--context K=V]...",
		Short: "Generate a data key for envelope encryption",
		Long: `Generate a random data key, returned in plaintext and encrypted under a
SYMMETRIC_DEFAULT key, for envelope encryption: encrypt locally with the
plaintext, erase it, and keep the encrypted copy; 'hsmctl decrypt' recovers
the plaintext later (with the same --context).

The key is 32 bytes (--spec AES_256, the default), 16 bytes (AES_128) or
--bytes N (1 to 1024). --no-plaintext returns only the encrypted copy.

Text output is one "Name: value" line per field, values base64:
  KeyId:           the id of the key that encrypted the data key
  CiphertextBlob:  the encrypted data key
  Plaintext:       the data key (absent with --no-plaintext)
JSON output has the fields keyId, ciphertextBlob and plaintext.`,
		Example: `  hsmctl datakey --key alias/payments -o json > dk.json
  jq -r .ciphertextBlob dk.json | hsmctl decrypt --base64 | xxd
  hsmctl datakey --key alias/payments --no-plaintext --context file=backup.tar`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := requireKey(key); err != nil {
				return err
			}
			bytesSet := cmd.Flags().Changed("bytes")
			if bytesSet && spec != "" {
				return usageErr("give --spec or --bytes, not both")
			}
			if bytesSet && (nbytes < 1 || nbytes > keys.MaxRandomBytes) {
				return usageErr(fmt.Sprintf("--bytes must be 1 to %d", keys.MaxRandomBytes))
			}
			var ks pb.DataKeySpec
			switch {
			case spec != "":
				v, err := dataKeySpecs.parse("--spec", spec)
				if err != nil {
					return err
				}
				ks = pb.DataKeySpec(v)
			case !bytesSet:
				ks = pb.DataKeySpec_DATA_KEY_SPEC_AES_256
			}
			ctxPairs, err := parsePairs("--context", encCtx)
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			var keyID string
			var blob, plaintext []byte
			if noPlaintext {
				resp, err := c.Crypto.GenerateDataKeyWithoutPlaintext(a.ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{
					KeyId: key, KeySpec: ks, NumberOfBytes: uint32(nbytes), EncryptionContext: ctxPairs,
				})
				if err != nil {
					return err
				}
				keyID, blob = resp.GetKeyId(), resp.GetCiphertextBlob()
			} else {
				resp, err := c.Crypto.GenerateDataKey(a.ctx, &pb.GenerateDataKeyRequest{
					KeyId: key, KeySpec: ks, NumberOfBytes: uint32(nbytes), EncryptionContext: ctxPairs,
				})
				if err != nil {
					return err
				}
				keyID, blob, plaintext = resp.GetKeyId(), resp.GetCiphertextBlob(), resp.GetPlaintext()
				defer clear(plaintext)
			}
			if a.json() {
				obj := map[string]string{"keyId": keyID, "ciphertextBlob": b64(blob)}
				if !noPlaintext {
					obj["plaintext"] = b64(plaintext)
				}
				return printJSON(a.stdout, obj)
			}
			pairs := []string{"KeyId", keyID, "CiphertextBlob", b64(blob)}
			if !noPlaintext {
				pairs = append(pairs, "Plaintext", b64(plaintext))
			}
			return fields(a.stdout, pairs...)
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the SYMMETRIC_DEFAULT key that encrypts the data key (required)")
	f.StringVar(&spec, "spec", "", "data key spec: "+enumHelp(dataKeySpecs)+" (default AES_256)")
	f.IntVar(&nbytes, "bytes", 0, "data key length in bytes, 1 to 1024, instead of --spec")
	f.BoolVar(&noPlaintext, "no-plaintext", false, "return only the encrypted data key")
	f.StringArrayVar(&encCtx, "context", nil, "encryption context pair K=V; repeat for more")
	return cmd
}

func (a *app) randomCommand() *cobra.Command {
	var n int
	var out outFlags
	var asBase64 bool
	cmd := &cobra.Command{
		Use:   "random --bytes N [--out FILE [--force]] [--base64]",
		Short: "Get random bytes from an HSM",
		Long: fmt.Sprintf(`Get --bytes N random bytes (1 to %d) from an HSM and write them, raw, to
--out or stdout (--base64 encodes them). --out is created with mode 0600;
an existing file is refused unless --force.`, keys.MaxRandomBytes),
		Example: `  hsmctl random --bytes 32 --base64
  hsmctl random --bytes 64 --out seed.bin`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("bytes") {
				return usageErr(fmt.Sprintf("--bytes is required: how many random bytes, 1 to %d", keys.MaxRandomBytes))
			}
			if n < 1 || n > keys.MaxRandomBytes {
				return usageErr(fmt.Sprintf("--bytes must be 1 to %d, got %d", keys.MaxRandomBytes, n))
			}
			if err := out.check(); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.GenerateRandom(a.ctx, &pb.GenerateRandomRequest{NumberOfBytes: uint32(n)})
			if err != nil {
				return err
			}
			return a.emitBinary(&out, asBase64, resp.GetPlaintext(), "plaintext", map[string]any{})
		}),
	}
	cmd.Flags().IntVar(&n, "bytes", 0, fmt.Sprintf("how many bytes, 1 to %d (required)", keys.MaxRandomBytes))
	out.register(cmd, "random bytes", privateFileMode)
	cmd.Flags().BoolVar(&asBase64, "base64", false, "write the bytes base64-encoded")
	return cmd
}

func (a *app) pubkeyCommand() *cobra.Command {
	var out outFlags
	cmd := &cobra.Command{
		Use:   "pubkey KEY [--out FILE [--force]]",
		Short: "Print the public key of an RSA or ECC key as PEM",
		Long: `Print the public half of an RSA or ECC key as a PEM "PUBLIC KEY" block
(a SubjectPublicKeyInfo), which OpenSSL and most libraries read, so that
others can encrypt to the key or verify its signatures without the broker.
--out is created with mode 0644; an existing file is refused unless --force.`,
		Example: `  hsmctl pubkey alias/rsa > rsa.pub.pem
  openssl pkey -pubin -in rsa.pub.pem -noout -text
  openssl pkeyutl -encrypt -pubin -inkey rsa.pub.pem -pkeyopt rsa_padding_mode:oaep -in secret -out secret.enc`,
		Args: exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.GetPublicKey(a.ctx, &pb.GetPublicKeyRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: resp.GetPublicKey()})
			if a.json() {
				obj := map[string]any{
					"keyId":                resp.GetKeyId(),
					"keySpec":              keySpecs.name(int32(resp.GetKeySpec())),
					"keyUsage":             keyUsages.name(int32(resp.GetKeyUsage())),
					"encryptionAlgorithms": names(encryptionAlgs, resp.GetEncryptionAlgorithms()),
					"signingAlgorithms":    names(signingAlgs, resp.GetSigningAlgorithms()),
				}
				if out.toFile() {
					if err := out.write(pemBytes); err != nil {
						return err
					}
					obj["out"] = out.path
				} else {
					obj["publicKey"] = string(pemBytes)
				}
				return printJSON(a.stdout, obj)
			}
			if out.toFile() {
				return out.write(pemBytes)
			}
			_, err = a.stdout.Write(pemBytes)
			return err
		}),
	}
	out.register(cmd, "PEM", publicFileMode)
	return cmd
}
