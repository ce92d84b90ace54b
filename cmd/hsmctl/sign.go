package main

import (
	"crypto"
	_ "crypto/sha256" // the digests of the signing algorithms
	_ "crypto/sha512"
	"fmt"
	"io"
	"os"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

// signingHash is the hash a signing algorithm applies to the message.
func signingHash(alg pb.SigningAlgorithm) crypto.Hash {
	switch alg {
	case pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_384,
		pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_384,
		pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_384:
		return crypto.SHA384
	case pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_512,
		pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_512,
		pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_512:
		return crypto.SHA512
	}
	return crypto.SHA256
}

// signedMessage reads --in for sign and verify. A message of up to 4096
// bytes is sent as it is. A longer one is hashed here with the algorithm's
// hash and sent as a digest, which gives the same signature: the broker
// would hash it the same way. With --digest the input is the digest.
func (a *app) signedMessage(in string, alg pb.SigningAlgorithm, isDigest bool) ([]byte, pb.MessageType, error) {
	h := signingHash(alg)
	r, err := a.openInput(in)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	if isDigest {
		d, err := readLimited(r, h.Size(), inputName(in), "")
		if err != nil {
			return nil, 0, err
		}
		if len(d) != h.Size() {
			return nil, 0, fmt.Errorf("%s holds %d bytes; a %s digest is %d bytes", inputName(in), len(d), h, h.Size())
		}
		return d, pb.MessageType_MESSAGE_TYPE_DIGEST, nil
	}
	head, err := io.ReadAll(io.LimitReader(r, maxPlaintext+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", inputName(in), err)
	}
	if len(head) <= maxPlaintext {
		return head, pb.MessageType_MESSAGE_TYPE_RAW, nil
	}
	hh := h.New()
	hh.Write(head)
	if _, err := io.Copy(hh, r); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", inputName(in), err)
	}
	return hh.Sum(nil), pb.MessageType_MESSAGE_TYPE_DIGEST, nil
}

func (a *app) signCommand() *cobra.Command {
	var key, alg, in string
	var out outFlags
	var isDigest, asBase64 bool
	cmd := &cobra.Command{
		Use:   "sign --key KEY --algorithm ALG [--in FILE|-] [--digest] [--out FILE [--force]] [--base64]",
		Short: "Sign a message or digest with an RSA or ECC key",
		Long: `Sign a message with a SIGN_VERIFY key and write the signature, raw, to --out
or stdout (--base64 encodes it). Messages longer than 4096 bytes are hashed
here with the algorithm's hash and the digest is signed, which gives the same
signature. With --digest the input is already the digest. --out is created
with mode 0600; an existing file is refused unless --force.

RSA signatures are as long as the modulus; ECDSA signatures are DER
(ECDSA-Sig-Value), as OpenSSL and crypto/ecdsa.VerifyASN1 expect.`,
		Example: `  hsmctl sign --key alias/release-signing --algorithm ECDSA_SHA_256 --in release.tar.gz --out release.sig
  openssl dgst -sha256 -verify <(hsmctl pubkey alias/release-signing) -signature release.sig release.tar.gz
  sha256sum -b file | cut -c1-64 | xxd -r -p | hsmctl sign --key alias/rsa-sign --algorithm RSASSA_PSS_SHA_256 --digest --base64`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := requireKey(key); err != nil {
				return err
			}
			if alg == "" {
				return usageErr("--algorithm is required: " + enumHelp(signingAlgs))
			}
			v, err := signingAlgs.parse("--algorithm", alg)
			if err != nil {
				return err
			}
			sa := pb.SigningAlgorithm(v)
			if err := out.check(); err != nil {
				return err
			}
			msg, mt, err := a.signedMessage(in, sa, isDigest)
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.Sign(a.ctx, &pb.SignRequest{KeyId: key, Message: msg, MessageType: mt, SigningAlgorithm: sa})
			if err != nil {
				return err
			}
			return a.emitBinary(&out, asBase64, resp.GetSignature(), "signature", map[string]any{
				"keyId": resp.GetKeyId(), "signingAlgorithm": signingAlgs.name(int32(resp.GetSigningAlgorithm())),
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the signing key (required)")
	f.StringVar(&alg, "algorithm", "", "signing algorithm (required): "+enumHelp(signingAlgs))
	f.StringVar(&in, "in", "-", "message file, or - for standard input")
	f.BoolVar(&isDigest, "digest", false, "the input is a digest made with the algorithm's hash, not the message")
	out.register(cmd, "signature", privateFileMode)
	f.BoolVar(&asBase64, "base64", false, "write the signature base64-encoded")
	return cmd
}

func (a *app) verifyCommand() *cobra.Command {
	var key, alg, in, sigFile string
	var isDigest, fromBase64 bool
	cmd := &cobra.Command{
		Use:   "verify --key KEY --algorithm ALG --signature FILE [--in FILE|-] [--digest] [--base64]",
		Short: "Check a signature; exit status 0 if valid, 1 if not",
		Long: `Check a signature made with a SIGN_VERIFY key over a message (or, with
--digest, its digest). Prints whether it is valid; the exit status is 0 for a
valid signature and 1 for an invalid one or a failure.`,
		Example: `  hsmctl verify --key alias/release-signing --algorithm ECDSA_SHA_256 --signature release.sig --in release.tar.gz && echo ok
  hsmctl verify --key alias/rsa-sign --algorithm RSASSA_PSS_SHA_256 --signature sig.b64 --base64 --in msg`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := requireKey(key); err != nil {
				return err
			}
			if alg == "" {
				return usageErr("--algorithm is required: " + enumHelp(signingAlgs))
			}
			if sigFile == "" {
				return usageErr("--signature is required")
			}
			v, err := signingAlgs.parse("--algorithm", alg)
			if err != nil {
				return err
			}
			sa := pb.SigningAlgorithm(v)
			sig, err := readSecondInput(sigFile, fromBase64, maxSignature)
			if err != nil {
				return err
			}
			msg, mt, err := a.signedMessage(in, sa, isDigest)
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.Verify(a.ctx, &pb.VerifyRequest{KeyId: key, Message: msg, MessageType: mt, Signature: sig, SigningAlgorithm: sa})
			if err != nil {
				return err
			}
			return a.verdict(resp.GetSignatureValid(), "signatureValid", "Signature", map[string]any{
				"keyId": resp.GetKeyId(), "signingAlgorithm": signingAlgs.name(int32(resp.GetSigningAlgorithm())),
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the key that made the signature (required)")
	f.StringVar(&alg, "algorithm", "", "signing algorithm (required): "+enumHelp(signingAlgs))
	f.StringVar(&sigFile, "signature", "", fmt.Sprintf("signature file, at most %d bytes (required)", maxSignature))
	f.StringVar(&in, "in", "-", "message file, or - for standard input")
	f.BoolVar(&isDigest, "digest", false, "the input is a digest made with the algorithm's hash, not the message")
	f.BoolVar(&fromBase64, "base64", false, "the signature file is base64-encoded")
	return cmd
}

// readSecondInput reads a signature or MAC file (never standard input,
// which carries the message) of at most limit bytes once decoded.
func readSecondInput(path string, fromBase64 bool, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !fromBase64 {
		return readLimited(f, limit, path, "")
	}
	b, err := readLimited(f, 4*limit/3+64, path, "")
	if err != nil {
		return nil, err
	}
	if b, err = decodeBase64(b, path); err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s holds more than %d bytes once decoded", path, limit)
	}
	return b, nil
}

// verdict prints a verification result and turns an invalid one into exit
// status 1.
func (a *app) verdict(valid bool, field, what string, obj map[string]any) error {
	if a.json() {
		obj[field] = valid
		if err := printJSON(a.stdout, obj); err != nil {
			return err
		}
	} else {
		word := "valid"
		if !valid {
			word = "invalid"
		}
		if _, err := fmt.Fprintf(a.stdout, "%s is %s\n", what, word); err != nil {
			return err
		}
	}
	if !valid {
		return exitCode(exitError)
	}
	return nil
}

func (a *app) macCommand() *cobra.Command {
	var key, alg, in string
	var out outFlags
	var asBase64 bool
	cmd := &cobra.Command{
		Use:   "mac --key KEY --algorithm ALG [--in FILE|-] [--out FILE [--force]] [--base64]",
		Short: "Compute an HMAC of up to 4096 bytes with an HMAC key",
		Long: `Compute an HMAC of up to 4096 bytes with a GENERATE_VERIFY_MAC key and write
it, raw, to --out or stdout (--base64 encodes it). --out is created with
mode 0600; an existing file is refused unless --force.`,
		Example: `  hsmctl mac --key alias/webhooks --algorithm HMAC_SHA_256 --in payload.json --base64
  hsmctl mac --key alias/webhooks --algorithm HMAC_SHA_256 --in payload.json --out payload.mac`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			ma, err := macArgs(key, alg)
			if err != nil {
				return err
			}
			if err := out.check(); err != nil {
				return err
			}
			msg, err := a.readInput(in, maxPlaintext, "HMAC keys take at most 4096 bytes")
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.GenerateMac(a.ctx, &pb.GenerateMacRequest{KeyId: key, Message: msg, MacAlgorithm: ma})
			if err != nil {
				return err
			}
			return a.emitBinary(&out, asBase64, resp.GetMac(), "mac", map[string]any{
				"keyId": resp.GetKeyId(), "macAlgorithm": macAlgs.name(int32(resp.GetMacAlgorithm())),
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the HMAC key (required)")
	f.StringVar(&alg, "algorithm", "", "MAC algorithm (required): "+enumHelp(macAlgs))
	f.StringVar(&in, "in", "-", "message file, or - for standard input")
	out.register(cmd, "MAC", privateFileMode)
	f.BoolVar(&asBase64, "base64", false, "write the MAC base64-encoded")
	return cmd
}

func macArgs(key, alg string) (pb.MacAlgorithm, error) {
	if err := requireKey(key); err != nil {
		return 0, err
	}
	if alg == "" {
		return 0, usageErr("--algorithm is required: " + enumHelp(macAlgs))
	}
	v, err := macAlgs.parse("--algorithm", alg)
	return pb.MacAlgorithm(v), err
}

func (a *app) verifyMacCommand() *cobra.Command {
	var key, alg, in, macFile string
	var fromBase64 bool
	cmd := &cobra.Command{
		Use:     "verify-mac --key KEY --algorithm ALG --mac FILE [--in FILE|-] [--base64]",
		Short:   "Check an HMAC; exit status 0 if valid, 1 if not",
		Example: `  hsmctl verify-mac --key alias/webhooks --algorithm HMAC_SHA_256 --mac payload.mac --in payload.json`,
		Args:    noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			ma, err := macArgs(key, alg)
			if err != nil {
				return err
			}
			if macFile == "" {
				return usageErr("--mac is required")
			}
			mac, err := readSecondInput(macFile, fromBase64, maxCiphertext)
			if err != nil {
				return err
			}
			msg, err := a.readInput(in, maxPlaintext, "HMAC keys take at most 4096 bytes")
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Crypto.VerifyMac(a.ctx, &pb.VerifyMacRequest{KeyId: key, Message: msg, Mac: mac, MacAlgorithm: ma})
			if err != nil {
				return err
			}
			return a.verdict(resp.GetMacValid(), "macValid", "MAC", map[string]any{
				"keyId": resp.GetKeyId(), "macAlgorithm": macAlgs.name(int32(resp.GetMacAlgorithm())),
			})
		}),
	}
	f := cmd.Flags()
	kmsKeyFlag(cmd, &key, "the HMAC key (required)")
	f.StringVar(&alg, "algorithm", "", "MAC algorithm (required): "+enumHelp(macAlgs))
	f.StringVar(&macFile, "mac", "", "MAC file (required)")
	f.StringVar(&in, "in", "-", "message file, or - for standard input")
	f.BoolVar(&fromBase64, "base64", false, "the MAC file is base64-encoded")
	return cmd
}
