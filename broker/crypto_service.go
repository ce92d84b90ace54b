package broker

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

// validContext checks an encryption context and returns it typed.
func validContext(field string, m map[string]string) (keys.EncryptionContext, error) {
	ec := keys.EncryptionContext(m)
	if err := keys.ValidateContext(ec); err != nil {
		return nil, fieldErr(field, err)
	}
	return ec, nil
}

// sealSymmetric encrypts pt under the current version of symmetric key k,
// binding the blob header and the encryption context as AAD.
func (s *Service) sealSymmetric(ctx context.Context, k cluster.Key, pt []byte, ec keys.EncryptionContext) ([]byte, error) {
	c, ref, aad, err := newCiphertext(k, ec)
	if err != nil {
		return nil, err
	}
	if c.Sealed, err = s.hsm.EncryptGCM(ctx, ref, c.IV, pt, aad); err != nil {
		return nil, err
	}
	return c.Marshal()
}

// sealRandom makes n random bytes in the HSM and seals them as
// sealSymmetric does, in one HSM call: a data key and its blob.
func (s *Service) sealRandom(ctx context.Context, k cluster.Key, n int, ec keys.EncryptionContext) (pt, blob []byte, err error) {
	c, ref, aad, err := newCiphertext(k, ec)
	if err != nil {
		return nil, nil, err
	}
	if pt, c.Sealed, err = s.hsm.SealRandomGCM(ctx, ref, n, c.IV, aad); err != nil {
		return nil, nil, err
	}
	if blob, err = c.Marshal(); err != nil {
		clear(pt)
		return nil, nil, err
	}
	return pt, blob, nil
}

// newCiphertext starts a blob under the current version of symmetric key
// k: a fresh random IV, and the AAD that binds the blob's header and the
// encryption context.
func newCiphertext(k cluster.Key, ec keys.EncryptionContext) (keys.Ciphertext, hsm.KeyRef, []byte, error) {
	ref, ok := hsmRef(k, k.CurrentVersion)
	if !ok {
		return keys.Ciphertext{}, ref, nil, fmt.Errorf("key %s has no current version %d", k.ID, k.CurrentVersion)
	}
	c := keys.Ciphertext{KeyID: k.ID, Version: k.CurrentVersion, IV: make([]byte, keys.IVSize)}
	if _, err := rand.Read(c.IV); err != nil {
		return c, ref, nil, err
	}
	header, err := c.Header()
	if err != nil {
		return c, ref, nil, err
	}
	return c, ref, keys.AAD(header, ec), nil
}

// openSymmetric decrypts a symmetric ciphertext blob. Every failure that
// depends on the blob's bytes is the same errInvalidCiphertext; state
// errors (disabled key) and availability errors keep their own codes.
func (s *Service) openSymmetric(ctx context.Context, field string, blob []byte, keyRef string, ec keys.EncryptionContext) (cluster.Key, []byte, error) {
	var named cluster.Key
	if keyRef != "" {
		var err error
		if named, err = s.resolve(ctx, field, keyRef); err != nil {
			return cluster.Key{}, nil, err
		}
		// An RSA key named without an algorithm: say so, rather than that
		// its RSA-OAEP ciphertext is not a symmetric one.
		if _, err := keys.CheckEncryptionAlgorithm(named.Spec, named.Usage, keys.EncryptionSymmetricDefault); err != nil {
			return named, nil, err
		}
	}
	c, err := keys.ParseCiphertext(blob)
	if err != nil {
		return cluster.Key{}, nil, errInvalidCiphertext
	}
	// The key named is the blob's key, already looked up and authorized;
	// only a blob whose key no field names is looked up by its key id.
	k := named
	if keyRef != "" {
		if named.ID != c.KeyID {
			return cluster.Key{}, nil, newError(codes.InvalidArgument, ExcIncorrectKey, "the ciphertext was not made with key %s", named.ID)
		}
	} else {
		var ok bool
		if k, ok, err = s.keyByID(ctx, c.KeyID); err != nil {
			return cluster.Key{}, nil, err
		} else if !ok {
			return cluster.Key{}, nil, errInvalidCiphertext
		}
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage != keys.UsageEncryptDecrypt {
		return cluster.Key{}, nil, errInvalidCiphertext
	}
	if err := usable(k); err != nil {
		return k, nil, err
	}
	ref, ok := hsmRef(k, c.Version)
	if !ok {
		return k, nil, errInvalidCiphertext
	}
	header, err := c.Header()
	if err != nil {
		return k, nil, errInvalidCiphertext
	}
	pt, err := s.hsm.DecryptGCM(ctx, ref, c.IV, c.Sealed, keys.AAD(header, ec))
	if err != nil {
		return k, nil, err
	}
	return k, pt, nil
}

// encryptWith encrypts under any ENCRYPT_DECRYPT key: symmetric keys in the
// HSM, RSA keys with their public half (public-key encryption needs no
// secret).
func (s *Service) encryptWith(ctx context.Context, field, ref string, alg keys.EncryptionAlgorithm, pt []byte, ec keys.EncryptionContext) (cluster.Key, keys.EncryptionAlgorithm, []byte, error) {
	k, err := s.resolveUsable(ctx, field, ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return k, "", nil, err
	}
	alg, err = keys.CheckEncryptionAlgorithm(k.Spec, k.Usage, alg)
	if err != nil {
		return k, "", nil, err
	}
	if alg == keys.EncryptionSymmetricDefault {
		if err := keys.ValidatePlaintext("Plaintext", pt, keys.MaxPlaintext); err != nil {
			return k, "", nil, err
		}
		blob, err := s.sealSymmetric(ctx, k, pt, ec)
		return k, alg, blob, err
	}
	if len(ec) > 0 {
		return k, "", nil, &keys.FieldError{Field: "EncryptionContext", Problem: "is not supported with asymmetric keys"}
	}
	limit := k.Spec.PlaintextLimit(alg)
	if field == "DestinationKeyId" && len(pt) > limit {
		// ReEncrypt: the caller sent no plaintext; say what is too long.
		return k, "", nil, &keys.FieldError{Field: field, Problem: fmt.Sprintf("key %s (%s with %s) encrypts at most %d bytes; the source ciphertext's plaintext is %d bytes",
			k.ID, k.Spec, alg, limit, len(pt))}
	}
	if err := keys.ValidatePlaintext("Plaintext", pt, limit); err != nil {
		return k, "", nil, err
	}
	v, _ := k.Version(k.CurrentVersion)
	pub, err := x509.ParsePKIXPublicKey(v.PublicKey)
	if err != nil {
		return k, "", nil, fmt.Errorf("public key of %s: %w", k.ID, err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return k, "", nil, fmt.Errorf("public key of %s is %T", k.ID, pub)
	}
	ct, err := rsa.EncryptOAEP(alg.Hash().New(), rand.Reader, rk, pt, nil)
	return k, alg, ct, err
}

// decryptWith decrypts a symmetric blob (the key is read from the blob) or
// an RSA-OAEP ciphertext (the key must be named).
func (s *Service) decryptWith(ctx context.Context, field, ref string, alg keys.EncryptionAlgorithm, blob []byte, ec keys.EncryptionContext) (cluster.Key, keys.EncryptionAlgorithm, []byte, error) {
	if len(blob) == 0 || len(blob) > keys.MaxCiphertextBlob {
		return cluster.Key{}, "", nil, &keys.FieldError{Field: "CiphertextBlob", Problem: fmt.Sprintf("must be 1 to %d bytes, got %d", keys.MaxCiphertextBlob, len(blob))}
	}
	if alg == "" || alg == keys.EncryptionSymmetricDefault {
		k, pt, err := s.openSymmetric(ctx, field, blob, ref, ec)
		return k, keys.EncryptionSymmetricDefault, pt, err
	}
	if !alg.Valid() {
		return cluster.Key{}, "", nil, &keys.FieldError{Field: "EncryptionAlgorithm", Problem: fmt.Sprintf("%q is not an encryption algorithm", alg)}
	}
	if ref == "" {
		return cluster.Key{}, "", nil, &keys.FieldError{Field: field, Problem: "is required to decrypt with " + string(alg)}
	}
	if len(ec) > 0 {
		return cluster.Key{}, "", nil, &keys.FieldError{Field: "EncryptionContext", Problem: "is not supported with asymmetric keys"}
	}
	k, err := s.resolveUsable(ctx, field, ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return k, "", nil, err
	}
	if alg, err = keys.CheckEncryptionAlgorithm(k.Spec, k.Usage, alg); err != nil {
		return k, "", nil, err
	}
	hr, _ := hsmRef(k, k.CurrentVersion)
	pt, err := s.hsm.DecryptOAEP(ctx, hr, alg.Hash(), blob)
	return k, alg, pt, err
}

// Encrypt encrypts up to 4096 bytes under a key.
func (s *Service) Encrypt(ctx context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	ec, err := validContext("EncryptionContext", req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	k, alg, blob, err := s.encryptWith(ctx, "KeyId", req.GetKeyId(), encAlgFrom(req.GetEncryptionAlgorithm()), req.GetPlaintext(), ec)
	if err != nil {
		return nil, err
	}
	return &pb.EncryptResponse{CiphertextBlob: blob, KeyId: k.ID, EncryptionAlgorithm: encAlgTo(alg)}, nil
}

// Decrypt decrypts a ciphertext made by Encrypt, GenerateDataKey or
// ReEncrypt (symmetric), or an RSA-OAEP ciphertext made with a key's public
// half.
func (s *Service) Decrypt(ctx context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	ec, err := validContext("EncryptionContext", req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	k, alg, pt, err := s.decryptWith(ctx, "KeyId", req.GetKeyId(), encAlgFrom(req.GetEncryptionAlgorithm()), req.GetCiphertextBlob(), ec)
	if err != nil {
		return nil, err
	}
	return &pb.DecryptResponse{Plaintext: pt, KeyId: k.ID, EncryptionAlgorithm: encAlgTo(alg)}, nil
}

// ReEncrypt decrypts and re-encrypts inside the service: the plaintext
// never reaches the caller.
func (s *Service) ReEncrypt(ctx context.Context, req *pb.ReEncryptRequest) (*pb.ReEncryptResponse, error) {
	sec, err := validContext("SourceEncryptionContext", req.GetSourceEncryptionContext())
	if err != nil {
		return nil, err
	}
	dec, err := validContext("DestinationEncryptionContext", req.GetDestinationEncryptionContext())
	if err != nil {
		return nil, err
	}
	if req.GetDestinationKeyId() == "" {
		return nil, &keys.FieldError{Field: "DestinationKeyId", Problem: "is required"}
	}
	src, salg, pt, err := s.decryptWith(ctx, "SourceKeyId", req.GetSourceKeyId(), encAlgFrom(req.GetSourceEncryptionAlgorithm()), req.GetCiphertextBlob(), sec)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	dst, dalg, blob, err := s.encryptWith(ctx, "DestinationKeyId", req.GetDestinationKeyId(), encAlgFrom(req.GetDestinationEncryptionAlgorithm()), pt, dec)
	if err != nil {
		return nil, err
	}
	return &pb.ReEncryptResponse{CiphertextBlob: blob, SourceKeyId: src.ID, KeyId: dst.ID,
		SourceEncryptionAlgorithm: encAlgTo(salg), DestinationEncryptionAlgorithm: encAlgTo(dalg)}, nil
}

// dataKey makes a data key from the HSM's random number generator and
// encrypts it under a symmetric key.
func (s *Service) dataKey(ctx context.Context, ref string, spec pb.DataKeySpec, n uint32, m map[string]string) (cluster.Key, []byte, []byte, error) {
	ec, err := validContext("EncryptionContext", m)
	if err != nil {
		return cluster.Key{}, nil, nil, err
	}
	size, err := keys.DataKeyBytes(dataKeySpecFrom(spec), int64(n))
	if err != nil {
		return cluster.Key{}, nil, nil, err
	}
	k, err := s.resolveUsable(ctx, "KeyId", ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return k, nil, nil, err
	}
	if k.Spec != keys.SpecSymmetricDefault {
		return k, nil, nil, errKeyUsage("data keys are encrypted under symmetric keys; key %s is %s", k.ID, k.Spec)
	}
	pt, blob, err := s.sealRandom(ctx, k, size, ec)
	if err != nil {
		return k, nil, nil, err
	}
	return k, pt, blob, nil
}

// GenerateDataKey returns a data key in plaintext and encrypted under a
// symmetric key: envelope encryption. The plaintext data key is the one
// key material that leaves the service, by design.
func (s *Service) GenerateDataKey(ctx context.Context, req *pb.GenerateDataKeyRequest) (*pb.GenerateDataKeyResponse, error) {
	k, pt, blob, err := s.dataKey(ctx, req.GetKeyId(), req.GetKeySpec(), req.GetNumberOfBytes(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	return &pb.GenerateDataKeyResponse{CiphertextBlob: blob, Plaintext: pt, KeyId: k.ID}, nil
}

// GenerateDataKeyWithoutPlaintext returns only the encrypted data key.
func (s *Service) GenerateDataKeyWithoutPlaintext(ctx context.Context, req *pb.GenerateDataKeyWithoutPlaintextRequest) (*pb.GenerateDataKeyWithoutPlaintextResponse, error) {
	k, pt, blob, err := s.dataKey(ctx, req.GetKeyId(), req.GetKeySpec(), req.GetNumberOfBytes(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	clear(pt)
	return &pb.GenerateDataKeyWithoutPlaintextResponse{CiphertextBlob: blob, KeyId: k.ID}, nil
}

// dataKeyPair makes a key pair for the caller's own use and encrypts its
// private half (PKCS#8) under a symmetric key. The pair is generated by the
// broker with Go's CSPRNG: it is handed out in plaintext anyway, so making
// it inside the HSM would add nothing but an export.
func (s *Service) dataKeyPair(ctx context.Context, ref string, spec pb.DataKeyPairSpec, m map[string]string) (cluster.Key, keys.DataKeyPairSpec, []byte, []byte, []byte, error) {
	ec, err := validContext("EncryptionContext", m)
	if err != nil {
		return cluster.Key{}, "", nil, nil, nil, err
	}
	ps := dataKeyPairSpecFrom(spec)
	if !ps.Valid() {
		return cluster.Key{}, "", nil, nil, nil, &keys.FieldError{Field: "KeyPairSpec", Problem: fmt.Sprintf("must be one of %v", keys.AllDataKeyPairSpecs)}
	}
	k, err := s.resolveUsable(ctx, "KeyId", ref, keys.UsageEncryptDecrypt)
	if err != nil {
		return k, "", nil, nil, nil, err
	}
	if k.Spec != keys.SpecSymmetricDefault {
		return k, "", nil, nil, nil, errKeyUsage("data key pairs are encrypted under symmetric keys; key %s is %s", k.ID, k.Spec)
	}
	var priv any
	switch ks := ps.Spec(); {
	case ks.IsRSA():
		priv, err = rsa.GenerateKey(rand.Reader, ks.RSABits())
	default:
		curve := map[keys.Spec]elliptic.Curve{keys.SpecECCNISTP256: elliptic.P256(), keys.SpecECCNISTP384: elliptic.P384(), keys.SpecECCNISTP521: elliptic.P521()}[ks]
		priv, err = ecdsa.GenerateKey(curve, rand.Reader)
	}
	if err != nil {
		return k, "", nil, nil, nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return k, "", nil, nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		clear(pkcs8)
		return k, "", nil, nil, nil, err
	}
	blob, err := s.sealSymmetric(ctx, k, pkcs8, ec)
	if err != nil {
		clear(pkcs8)
		return k, "", nil, nil, nil, err
	}
	return k, ps, pkcs8, pub, blob, nil
}

// GenerateDataKeyPair returns a key pair: the private key in plaintext and
// encrypted, and the public key.
func (s *Service) GenerateDataKeyPair(ctx context.Context, req *pb.GenerateDataKeyPairRequest) (*pb.GenerateDataKeyPairResponse, error) {
	k, ps, pkcs8, pub, blob, err := s.dataKeyPair(ctx, req.GetKeyId(), req.GetKeyPairSpec(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	return &pb.GenerateDataKeyPairResponse{PrivateKeyCiphertextBlob: blob, PrivateKeyPlaintext: pkcs8, PublicKey: pub,
		KeyId: k.ID, KeyPairSpec: dataKeyPairSpecTo(ps)}, nil
}

// GenerateDataKeyPairWithoutPlaintext returns the encrypted private key and
// the public key.
func (s *Service) GenerateDataKeyPairWithoutPlaintext(ctx context.Context, req *pb.GenerateDataKeyPairWithoutPlaintextRequest) (*pb.GenerateDataKeyPairWithoutPlaintextResponse, error) {
	k, ps, pkcs8, pub, blob, err := s.dataKeyPair(ctx, req.GetKeyId(), req.GetKeyPairSpec(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	clear(pkcs8)
	return &pb.GenerateDataKeyPairWithoutPlaintextResponse{PrivateKeyCiphertextBlob: blob, PublicKey: pub,
		KeyId: k.ID, KeyPairSpec: dataKeyPairSpecTo(ps)}, nil
}

// GetPublicKey returns the public half of an asymmetric key as DER
// SubjectPublicKeyInfo.
func (s *Service) GetPublicKey(ctx context.Context, req *pb.GetPublicKeyRequest) (*pb.GetPublicKeyResponse, error) {
	k, err := s.resolve(ctx, "KeyId", req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if !k.Spec.IsAsymmetric() {
		return nil, errUnsupported("key %s is %s and has no public key", k.ID, k.Spec)
	}
	v, _ := k.Version(k.CurrentVersion)
	resp := &pb.GetPublicKeyResponse{KeyId: k.ID, PublicKey: v.PublicKey, KeySpec: specTo(k.Spec), KeyUsage: usageTo(k.Usage)}
	for _, a := range k.Spec.EncryptionAlgorithms(k.Usage) {
		resp.EncryptionAlgorithms = append(resp.EncryptionAlgorithms, encAlgTo(a))
	}
	for _, a := range k.Spec.SigningAlgorithms(k.Usage) {
		resp.SigningAlgorithms = append(resp.SigningAlgorithms, sigAlgTo(a))
	}
	return resp, nil
}

// signingInput validates a Sign or Verify request and returns the key and
// the digest to sign.
func (s *Service) signingInput(ctx context.Context, ref string, alg keys.SigningAlgorithm, mt keys.MessageType, msg []byte) (cluster.Key, []byte, error) {
	if !alg.Valid() {
		return cluster.Key{}, nil, &keys.FieldError{Field: "SigningAlgorithm", Problem: fmt.Sprintf("must be one of %v", keys.AllSigningAlgorithms)}
	}
	if mt == "" {
		mt = keys.MessageRaw
	}
	if err := keys.ValidateMessage(mt, alg, msg); err != nil {
		return cluster.Key{}, nil, err
	}
	k, err := s.resolveUsable(ctx, "KeyId", ref, keys.UsageSignVerify)
	if err != nil {
		return k, nil, err
	}
	if err := keys.CheckSigningAlgorithm(k.Spec, k.Usage, alg); err != nil {
		return k, nil, err
	}
	if mt == keys.MessageDigest {
		return k, msg, nil
	}
	h := alg.Hash().New()
	h.Write(msg)
	return k, h.Sum(nil), nil
}

// Sign signs a message or digest with an asymmetric key, in the HSM.
func (s *Service) Sign(ctx context.Context, req *pb.SignRequest) (*pb.SignResponse, error) {
	alg := sigAlgFrom(req.GetSigningAlgorithm())
	k, digest, err := s.signingInput(ctx, req.GetKeyId(), alg, messageTypeFrom(req.GetMessageType()), req.GetMessage())
	if err != nil {
		return nil, err
	}
	ref, _ := hsmRef(k, k.CurrentVersion)
	sig, err := s.hsm.SignDigest(ctx, ref, alg, digest)
	if err != nil {
		return nil, err
	}
	return &pb.SignResponse{Signature: sig, KeyId: k.ID, SigningAlgorithm: sigAlgTo(alg)}, nil
}

// Verify checks a signature with the key's public half. A signature that
// does not verify is signature_valid=false, not an error.
func (s *Service) Verify(ctx context.Context, req *pb.VerifyRequest) (*pb.VerifyResponse, error) {
	alg := sigAlgFrom(req.GetSigningAlgorithm())
	if n := len(req.GetSignature()); n == 0 || n > keys.MaxSignature {
		return nil, &keys.FieldError{Field: "Signature", Problem: fmt.Sprintf("must be 1 to %d bytes, got %d", keys.MaxSignature, n)}
	}
	k, digest, err := s.signingInput(ctx, req.GetKeyId(), alg, messageTypeFrom(req.GetMessageType()), req.GetMessage())
	if err != nil {
		return nil, err
	}
	v, _ := k.Version(k.CurrentVersion)
	ok, err := keys.VerifySignature(v.PublicKey, alg, digest, req.GetSignature())
	if err != nil {
		return nil, err
	}
	return &pb.VerifyResponse{SignatureValid: ok, KeyId: k.ID, SigningAlgorithm: sigAlgTo(alg)}, nil
}

// macInput validates a GenerateMac or VerifyMac request.
func (s *Service) macInput(ctx context.Context, ref string, alg keys.MacAlgorithm, msg []byte) (cluster.Key, hsm.KeyRef, error) {
	if !alg.Valid() {
		return cluster.Key{}, hsm.KeyRef{}, &keys.FieldError{Field: "MacAlgorithm", Problem: fmt.Sprintf("must be one of %v", keys.AllMacAlgorithms)}
	}
	if err := keys.ValidatePlaintext("Message", msg, hsm.MaxMACInput); err != nil {
		return cluster.Key{}, hsm.KeyRef{}, err
	}
	k, err := s.resolveUsable(ctx, "KeyId", ref, keys.UsageGenerateVerifyMAC)
	if err != nil {
		return k, hsm.KeyRef{}, err
	}
	if err := keys.CheckMacAlgorithm(k.Spec, k.Usage, alg); err != nil {
		return k, hsm.KeyRef{}, err
	}
	r, _ := hsmRef(k, k.CurrentVersion)
	return k, r, nil
}

// GenerateMac computes an HMAC in the HSM.
func (s *Service) GenerateMac(ctx context.Context, req *pb.GenerateMacRequest) (*pb.GenerateMacResponse, error) {
	alg := macAlgFrom(req.GetMacAlgorithm())
	k, ref, err := s.macInput(ctx, req.GetKeyId(), alg, req.GetMessage())
	if err != nil {
		return nil, err
	}
	mac, err := s.hsm.MAC(ctx, ref, alg, req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &pb.GenerateMacResponse{Mac: mac, KeyId: k.ID, MacAlgorithm: macAlgTo(alg)}, nil
}

// VerifyMac recomputes the HMAC in the HSM and compares in constant time.
func (s *Service) VerifyMac(ctx context.Context, req *pb.VerifyMacRequest) (*pb.VerifyMacResponse, error) {
	alg := macAlgFrom(req.GetMacAlgorithm())
	if n := len(req.GetMac()); n == 0 || n > 64 {
		return nil, &keys.FieldError{Field: "Mac", Problem: fmt.Sprintf("must be 1 to 64 bytes, got %d", n)}
	}
	k, ref, err := s.macInput(ctx, req.GetKeyId(), alg, req.GetMessage())
	if err != nil {
		return nil, err
	}
	ok, err := s.hsm.VerifyMAC(ctx, ref, alg, req.GetMessage(), req.GetMac())
	if err != nil {
		return nil, err
	}
	return &pb.VerifyMacResponse{MacValid: ok, KeyId: k.ID, MacAlgorithm: macAlgTo(alg)}, nil
}

// GenerateRandom returns bytes from the HSM's random number generator.
func (s *Service) GenerateRandom(ctx context.Context, req *pb.GenerateRandomRequest) (*pb.GenerateRandomResponse, error) {
	n := req.GetNumberOfBytes()
	if err := keys.ValidateRandomBytes(int64(n)); err != nil {
		return nil, fieldErr("NumberOfBytes", err)
	}
	b, err := s.hsm.Random(ctx, int(n))
	if err != nil {
		return nil, err
	}
	return &pb.GenerateRandomResponse{Plaintext: b}, nil
}
