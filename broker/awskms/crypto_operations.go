package awskms

import (
	"context"
	"net/http"

	"github.com/hsmbroker/hsmbroker/broker"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Enum prefixes of the proto API, whose names are AWS's with a prefix.
const (
	encAlgPrefix      = "ENCRYPTION_ALGORITHM_"
	sigAlgPrefix      = "SIGNING_ALGORITHM_"
	macAlgPrefix      = "MAC_ALGORITHM_"
	dataKeyPrefix     = "DATA_KEY_SPEC_"
	dataKeyPairPrefix = "DATA_KEY_PAIR_SPEC_"
	messageTypePrefix = "MESSAGE_TYPE_"
)

var (
	awsOnlyEncAlgs      = []string{"SM2PKE"}
	awsOnlySigAlgs      = []string{"SM2DSA", "ED25519_SHA_512", "ED25519_PH_SHA_512", "ML_DSA_SHAKE_256"}
	awsOnlyMessageTypes = []string{"EXTERNAL_MU"}
	awsOnlyKeyPairSpecs = []string{"ECC_SECG_P256K1", "SM2"}
)

func encAlg(field, s string) (pb.EncryptionAlgorithm, error) {
	return parseEnum[pb.EncryptionAlgorithm](field, s, encAlgPrefix, pb.EncryptionAlgorithm_value, awsOnlyEncAlgs...)
}

func noRecipient(r recipient) error {
	if r.Recipient != nil {
		return unsupported("Recipient (Nitro Enclaves attestation) is not supported")
	}
	return nil
}

// numberOfBytes converts NumberOfBytes, refusing what does not fit the
// core's unsigned field.
func numberOfBytes(n *int32) (uint32, error) {
	if n == nil {
		return 0, nil
	}
	if *n < 1 {
		return 0, validation("1 validation error detected: Value '%d' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1", *n)
	}
	return uint32(*n), nil
}

func (h *Handler) encrypt(ctx context.Context, in *encryptInput) (*encryptOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return nil, err
	}
	alg, err := encAlg("EncryptionAlgorithm", in.EncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.Encrypt(ctx, &pb.EncryptRequest{KeyId: ref, Plaintext: in.Plaintext,
		EncryptionContext: in.EncryptionContext, EncryptionAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	return &encryptOutput{CiphertextBlob: resp.GetCiphertextBlob(), KeyId: h.arn(resp.GetKeyId()),
		EncryptionAlgorithm: enumName(resp.GetEncryptionAlgorithm(), encAlgPrefix)}, nil
}

func (h *Handler) decrypt(ctx context.Context, in *decryptInput) (*decryptOutput, error) {
	if err := noRecipient(in.recipient); err != nil {
		return nil, err
	}
	if len(in.CiphertextBlob) == 0 {
		return nil, required("CiphertextBlob")
	}
	var ref string
	if in.KeyId != "" {
		var err error
		if ref, err = h.keyRef("KeyId", in.KeyId, true); err != nil {
			return nil, err
		}
	}
	alg, err := encAlg("EncryptionAlgorithm", in.EncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: in.CiphertextBlob, KeyId: ref,
		EncryptionContext: in.EncryptionContext, EncryptionAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	return &decryptOutput{Plaintext: resp.GetPlaintext(), KeyId: h.arn(resp.GetKeyId()),
		EncryptionAlgorithm: enumName(resp.GetEncryptionAlgorithm(), encAlgPrefix)}, nil
}

func (h *Handler) reEncrypt(ctx context.Context, in *reEncryptInput) (*reEncryptOutput, error) {
	if len(in.CiphertextBlob) == 0 {
		return nil, required("CiphertextBlob")
	}
	var src string
	if in.SourceKeyId != "" {
		var err error
		if src, err = h.keyRef("SourceKeyId", in.SourceKeyId, true); err != nil {
			return nil, err
		}
	}
	dst, err := h.keyRef("DestinationKeyId", in.DestinationKeyId, true)
	if err != nil {
		return nil, err
	}
	salg, err := encAlg("SourceEncryptionAlgorithm", in.SourceEncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	dalg, err := encAlg("DestinationEncryptionAlgorithm", in.DestinationEncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.ReEncrypt(ctx, &pb.ReEncryptRequest{CiphertextBlob: in.CiphertextBlob,
		SourceKeyId: src, SourceEncryptionContext: in.SourceEncryptionContext, SourceEncryptionAlgorithm: salg,
		DestinationKeyId: dst, DestinationEncryptionContext: in.DestinationEncryptionContext, DestinationEncryptionAlgorithm: dalg})
	if err != nil {
		return nil, err
	}
	return &reEncryptOutput{CiphertextBlob: resp.GetCiphertextBlob(), SourceKeyId: h.arn(resp.GetSourceKeyId()),
		KeyId: h.arn(resp.GetKeyId()), SourceEncryptionAlgorithm: enumName(resp.GetSourceEncryptionAlgorithm(), encAlgPrefix),
		DestinationEncryptionAlgorithm: enumName(resp.GetDestinationEncryptionAlgorithm(), encAlgPrefix)}, nil
}

// dataKeyRequest checks the members GenerateDataKey and
// GenerateDataKeyWithoutPlaintext share.
func (h *Handler) dataKeyRequest(in *generateDataKeyInput) (string, pb.DataKeySpec, uint32, error) {
	if err := noRecipient(in.recipient); err != nil {
		return "", 0, 0, err
	}
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return "", 0, 0, err
	}
	spec, err := parseEnum[pb.DataKeySpec]("KeySpec", in.KeySpec, dataKeyPrefix, pb.DataKeySpec_value)
	if err != nil {
		return "", 0, 0, err
	}
	n, err := numberOfBytes(in.NumberOfBytes)
	return ref, spec, n, err
}

func (h *Handler) generateDataKey(ctx context.Context, in *generateDataKeyInput) (*generateDataKeyOutput, error) {
	ref, spec, n, err := h.dataKeyRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: ref, KeySpec: spec, NumberOfBytes: n,
		EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, err
	}
	return &generateDataKeyOutput{CiphertextBlob: resp.GetCiphertextBlob(), Plaintext: resp.GetPlaintext(), KeyId: h.arn(resp.GetKeyId())}, nil
}

func (h *Handler) generateDataKeyWithoutPlaintext(ctx context.Context, in *generateDataKeyInput) (*generateDataKeyOutput, error) {
	ref, spec, n, err := h.dataKeyRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateDataKeyWithoutPlaintext(ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{KeyId: ref, KeySpec: spec,
		NumberOfBytes: n, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, err
	}
	return &generateDataKeyOutput{CiphertextBlob: resp.GetCiphertextBlob(), KeyId: h.arn(resp.GetKeyId())}, nil
}

func (h *Handler) dataKeyPairRequest(in *generateDataKeyPairInput) (string, pb.DataKeyPairSpec, error) {
	if err := noRecipient(in.recipient); err != nil {
		return "", 0, err
	}
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return "", 0, err
	}
	if in.KeyPairSpec == "" {
		return "", 0, required("KeyPairSpec")
	}
	spec, err := parseEnum[pb.DataKeyPairSpec]("KeyPairSpec", in.KeyPairSpec, dataKeyPairPrefix, pb.DataKeyPairSpec_value, awsOnlyKeyPairSpecs...)
	return ref, spec, err
}

func (h *Handler) generateDataKeyPair(ctx context.Context, in *generateDataKeyPairInput) (*generateDataKeyPairOutput, error) {
	ref, spec, err := h.dataKeyPairRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateDataKeyPair(ctx, &pb.GenerateDataKeyPairRequest{KeyId: ref, KeyPairSpec: spec, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, err
	}
	return &generateDataKeyPairOutput{PrivateKeyCiphertextBlob: resp.GetPrivateKeyCiphertextBlob(), PrivateKeyPlaintext: resp.GetPrivateKeyPlaintext(),
		PublicKey: resp.GetPublicKey(), KeyId: h.arn(resp.GetKeyId()), KeyPairSpec: enumName(resp.GetKeyPairSpec(), dataKeyPairPrefix)}, nil
}

func (h *Handler) generateDataKeyPairWithoutPlaintext(ctx context.Context, in *generateDataKeyPairInput) (*generateDataKeyPairOutput, error) {
	ref, spec, err := h.dataKeyPairRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateDataKeyPairWithoutPlaintext(ctx, &pb.GenerateDataKeyPairWithoutPlaintextRequest{KeyId: ref, KeyPairSpec: spec,
		EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, err
	}
	return &generateDataKeyPairOutput{PrivateKeyCiphertextBlob: resp.GetPrivateKeyCiphertextBlob(), PublicKey: resp.GetPublicKey(),
		KeyId: h.arn(resp.GetKeyId()), KeyPairSpec: enumName(resp.GetKeyPairSpec(), dataKeyPairPrefix)}, nil
}

func (h *Handler) getPublicKey(ctx context.Context, in *describeKeyInput) (*getPublicKeyOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: ref})
	if err != nil {
		return nil, err
	}
	spec := enumName(resp.GetKeySpec(), "KEY_SPEC_")
	return &getPublicKeyOutput{KeyId: h.arn(resp.GetKeyId()), PublicKey: resp.GetPublicKey(), CustomerMasterKeySpec: spec, KeySpec: spec,
		KeyUsage: enumName(resp.GetKeyUsage(), "KEY_USAGE_"), EncryptionAlgorithms: enumNames(resp.GetEncryptionAlgorithms(), encAlgPrefix),
		SigningAlgorithms: enumNames(resp.GetSigningAlgorithms(), sigAlgPrefix)}, nil
}

// signingRequest checks the members Sign and Verify share.
func (h *Handler) signingRequest(keyID, alg, mt string) (string, pb.SigningAlgorithm, pb.MessageType, error) {
	ref, err := h.keyRef("KeyId", keyID, true)
	if err != nil {
		return "", 0, 0, err
	}
	if alg == "" {
		return "", 0, 0, required("SigningAlgorithm")
	}
	a, err := parseEnum[pb.SigningAlgorithm]("SigningAlgorithm", alg, sigAlgPrefix, pb.SigningAlgorithm_value, awsOnlySigAlgs...)
	if err != nil {
		return "", 0, 0, err
	}
	m, err := parseEnum[pb.MessageType]("MessageType", mt, messageTypePrefix, pb.MessageType_value, awsOnlyMessageTypes...)
	return ref, a, m, err
}

func (h *Handler) sign(ctx context.Context, in *signInput) (*signOutput, error) {
	ref, alg, mt, err := h.signingRequest(in.KeyId, in.SigningAlgorithm, in.MessageType)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.Sign(ctx, &pb.SignRequest{KeyId: ref, Message: in.Message, MessageType: mt, SigningAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	return &signOutput{KeyId: h.arn(resp.GetKeyId()), Signature: resp.GetSignature(), SigningAlgorithm: enumName(resp.GetSigningAlgorithm(), sigAlgPrefix)}, nil
}

// verify answers a signature that does not verify with
// KMSInvalidSignatureException, as AWS does, rather than
// SignatureValid=false.
func (h *Handler) verify(ctx context.Context, in *verifyInput) (*verifyOutput, error) {
	ref, alg, mt, err := h.signingRequest(in.KeyId, in.SigningAlgorithm, in.MessageType)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.Verify(ctx, &pb.VerifyRequest{KeyId: ref, Message: in.Message, MessageType: mt, Signature: in.Signature, SigningAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	if !resp.GetSignatureValid() {
		return nil, &apiError{http.StatusBadRequest, broker.ExcInvalidSignature, "the signature is not valid for this message, key and signing algorithm"}
	}
	return &verifyOutput{KeyId: h.arn(resp.GetKeyId()), SignatureValid: true, SigningAlgorithm: enumName(resp.GetSigningAlgorithm(), sigAlgPrefix)}, nil
}

func (h *Handler) macRequest(in *macInput) (string, pb.MacAlgorithm, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return "", 0, err
	}
	if in.MacAlgorithm == "" {
		return "", 0, required("MacAlgorithm")
	}
	alg, err := parseEnum[pb.MacAlgorithm]("MacAlgorithm", in.MacAlgorithm, macAlgPrefix, pb.MacAlgorithm_value)
	return ref, alg, err
}

func (h *Handler) generateMac(ctx context.Context, in *macInput) (*generateMacOutput, error) {
	ref, alg, err := h.macRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: ref, Message: in.Message, MacAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	return &generateMacOutput{Mac: resp.GetMac(), MacAlgorithm: enumName(resp.GetMacAlgorithm(), macAlgPrefix), KeyId: h.arn(resp.GetKeyId())}, nil
}

// verifyMac answers a MAC that does not match with KMSInvalidMacException,
// as AWS does.
func (h *Handler) verifyMac(ctx context.Context, in *macInput) (*verifyMacOutput, error) {
	ref, alg, err := h.macRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.VerifyMac(ctx, &pb.VerifyMacRequest{KeyId: ref, Message: in.Message, Mac: in.Mac, MacAlgorithm: alg})
	if err != nil {
		return nil, err
	}
	if !resp.GetMacValid() {
		return nil, &apiError{http.StatusBadRequest, broker.ExcInvalidMac, "the MAC is not valid for this message, key and MAC algorithm"}
	}
	return &verifyMacOutput{KeyId: h.arn(resp.GetKeyId()), MacValid: true, MacAlgorithm: enumName(resp.GetMacAlgorithm(), macAlgPrefix)}, nil
}

func (h *Handler) generateRandom(ctx context.Context, in *generateRandomInput) (*generateRandomOutput, error) {
	if err := noRecipient(in.recipient); err != nil {
		return nil, err
	}
	if in.CustomKeyStoreId != nil {
		return nil, unsupported("custom key stores are not supported")
	}
	if in.NumberOfBytes == nil {
		return nil, required("NumberOfBytes")
	}
	n, err := numberOfBytes(in.NumberOfBytes)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: n})
	if err != nil {
		return nil, err
	}
	return &generateRandomOutput{Plaintext: resp.GetPlaintext()}, nil
}
