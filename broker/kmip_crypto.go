package broker

import (
	"context"
	"crypto"
	"errors"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// Cryptography with KMIP objects, all of it in the HSM: AES and HMAC with
// symmetric keys and secrets, key pairs, signatures.

// The AES modes of KMIPCryptRequest, and GCM's tag size: the partition's
// own names, so that the KMIP front need not import broker/hsm.
const (
	KMIPModeCBCPad = hsm.RawCBCPad
	KMIPModeCBC    = hsm.RawCBC
	KMIPModeGCM    = hsm.RawGCM
	KMIPGCMTagSize = hsm.GCMTagSize
)

// KMIPCryptRequest encrypts or decrypts with a KMIP symmetric key in the
// HSM.
type KMIPCryptRequest struct {
	ID      string
	Encrypt bool
	Mode    hsm.RawMode // KMIPModeCBCPad, KMIPModeCBC or KMIPModeGCM
	IV      []byte      // nil on Encrypt: the HSM's generator makes one
	AAD     []byte      // GCM only
	// Data is the input; to decrypt in GCM, the ciphertext followed by
	// its KMIPGCMTagSize-byte tag.
	Data []byte
}

// KMIPCryptResult is the output of Crypt.
type KMIPCryptResult struct {
	// Data is the output; encrypting in GCM, the ciphertext followed by
	// its KMIPGCMTagSize-byte tag.
	Data []byte
	// IV is the IV used: the request's, or the one the HSM made.
	IV []byte
}

// KMIP usage mask bits.
const (
	kmipUsageEncrypt int32 = 0x04
	kmipUsageDecrypt int32 = 0x08
)

// Crypt runs AES with a KMIP key inside the HSM: the key's sealed material
// is opened in the HSM and becomes a session object for the one operation.
// Encrypt needs an Active key; Decrypt an Active or Deactivated one; both
// need the usage mask to allow them (when it is set).
func (c *KMIPObjects) Crypt(ctx context.Context, req KMIPCryptRequest) (KMIPCryptResult, error) {
	s := c.s
	o, err := c.object(ctx, req.ID)
	if err != nil {
		return KMIPCryptResult{}, err
	}
	if o.ObjectType != KMIPSymmetricKey || o.Algorithm != KMIPAES {
		return KMIPCryptResult{}, errKeyUsage("KMIP object %s is not an AES key", req.ID)
	}
	bit, verb := kmipUsageDecrypt, "decrypt"
	if req.Encrypt {
		bit, verb = kmipUsageEncrypt, "encrypt"
	}
	if o.UsageMask != 0 && o.UsageMask&bit == 0 {
		return KMIPCryptResult{}, errKeyUsage("the usage mask of KMIP object %s does not allow it to %s", req.ID, verb)
	}
	if o.State != cluster.KMIPActive && (req.Encrypt || o.State != cluster.KMIPDeactivated) {
		return KMIPCryptResult{}, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; %s needs an Active key", req.ID, o.State, verb)
	}
	iv := req.IV
	if req.Encrypt && len(iv) == 0 {
		n := 16
		if req.Mode == hsm.RawGCM {
			n = hsm.GCMIVSize
		}
		if iv, err = s.hsm.Random(ctx, n); err != nil {
			return KMIPCryptResult{}, err
		}
	}
	_, key, err := s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	if err != nil {
		return KMIPCryptResult{}, err
	}
	defer clear(key)
	op := hsm.RawOp{Mode: req.Mode, IV: iv}
	if req.Mode == hsm.RawGCM {
		// KMIP GCM here is the 96-bit IV form; other modes ignore the
		// additional data a client sends.
		if len(iv) != hsm.GCMIVSize {
			return KMIPCryptResult{}, kmipInvalid("GCM needs a %d-byte IV and a %d-byte tag", hsm.GCMIVSize, hsm.GCMTagSize)
		}
		op.AAD = req.AAD
	}
	out, err := s.hsm.CryptWithValue(ctx, key, req.Encrypt, op, req.Data)
	if err != nil {
		return KMIPCryptResult{}, kmipHSMError(err)
	}
	return KMIPCryptResult{Data: out, IV: iv}, nil
}

// kmipHSMError turns the partition's refusal of an input into
// InvalidArgument with its reason.
func kmipHSMError(err error) error {
	if errors.Is(err, hsm.ErrInvalidInput) || errors.Is(err, hsm.ErrUnsupported) {
		return kmipInvalid("%s", strings.TrimPrefix(err.Error(), hsm.ErrInvalidInput.Error()+": "))
	}
	return err
}

// KMIP HMAC algorithms (Cryptographic Algorithm) and the usage mask bit
// MAC needs.
const (
	KMIPHMACSHA256 uint32 = 9
	KMIPHMACSHA384 uint32 = 10
	KMIPHMACSHA512 uint32 = 11

	kmipUsageMACGenerate int32 = 0x80
)

var kmipHMACHash = map[uint32]crypto.Hash{KMIPHMACSHA256: crypto.SHA256, KMIPHMACSHA384: crypto.SHA384, KMIPHMACSHA512: crypto.SHA512}

// KMIPMACRequest computes an HMAC with a KMIP symmetric key or secret.
type KMIPMACRequest struct {
	ID        string
	Algorithm uint32 // KMIPHMACSHA256/384/512; 0: the object's own algorithm
	Data      []byte
}

// MAC computes an HMAC inside the HSM with a KMIP Symmetric Key or Secret
// Data object: its sealed material is opened in the HSM and becomes a
// non-extractable session object for the one call, as in Crypt. The
// object must be Active and its usage mask must allow MAC Generate; a key
// whose own Cryptographic Algorithm is an HMAC is used with that
// algorithm only. It returns the MAC.
func (c *KMIPObjects) MAC(ctx context.Context, req KMIPMACRequest) ([]byte, error) {
	s := c.s
	o, err := c.object(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if o.ObjectType != KMIPSymmetricKey && o.ObjectType != KMIPSecretData {
		return nil, errKeyUsage("KMIP object %s is not a symmetric key or secret", req.ID)
	}
	alg := req.Algorithm
	if _, own := kmipHMACHash[o.Algorithm]; own {
		if alg != 0 && alg != o.Algorithm {
			return nil, kmipInvalid("KMIP object %s is a key for Cryptographic Algorithm %d, not %d", req.ID, o.Algorithm, alg)
		}
		alg = o.Algorithm
	}
	h, ok := kmipHMACHash[alg]
	if !ok {
		return nil, errUnsupported("MAC is HMAC-SHA256, HMAC-SHA384 or HMAC-SHA512 (Cryptographic Algorithm 9, 10 or 11), not %d", alg)
	}
	if o.UsageMask&kmipUsageMACGenerate == 0 {
		return nil, errKeyUsage("the usage mask of KMIP object %s does not allow MAC Generate", req.ID)
	}
	if o.State != cluster.KMIPActive {
		return nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; MAC needs an Active object", req.ID, o.State)
	}
	if len(req.Data) == 0 || len(req.Data) > hsm.MaxGCMInput {
		return nil, kmipInvalid("Data must be 1 to %d bytes, got %d", hsm.MaxGCMInput, len(req.Data))
	}
	_, key, err := s.openSymmetric(ctx, "UniqueIdentifier", o.Wrapped, o.WrappingKeyID, keys.EncryptionContext{kmipContextKey: o.ID})
	if err != nil {
		return nil, err
	}
	defer clear(key)
	out, err := s.hsm.MACWithValue(ctx, key, h, req.Data)
	if err != nil {
		return nil, kmipHSMError(err)
	}
	return out, nil
}

// KMIP algorithms of key pairs, and the usage mask bits of signing.
const (
	KMIPRSA   uint32 = 4
	KMIPECDSA uint32 = 6
	KMIPEC    uint32 = 0x1A

	kmipUsageSign   int32 = 0x01
	kmipUsageVerify int32 = 0x02
)

// KMIPCreateKeyPairRequest makes an RSA or EC key pair in the HSM.
type KMIPCreateKeyPairRequest struct {
	WrappingKey string
	Algorithm   uint32 // KMIPRSA, KMIPECDSA or KMIPEC
	Length      int32  // RSA 2048 or 3072; EC 256 or 384
	// Private and Public are each half's attributes (names, groups, usage
	// mask), the common ones already merged in.
	Private, Public KMIPAttributes
}

// KMIPKeyPair is the two objects CreateKeyPair stores, linked to each
// other.
type KMIPKeyPair struct {
	Private cluster.KMIPObject // without its wrapped private key
	Public  cluster.KMIPObject
}

func kmipPairSpec(alg uint32, bits int32) (keys.Spec, error) {
	switch {
	case alg == KMIPRSA && bits == 2048:
		return keys.SpecRSA2048, nil
	case alg == KMIPRSA && bits == 3072:
		return keys.SpecRSA3072, nil
	case (alg == KMIPECDSA || alg == KMIPEC) && bits == 256:
		return keys.SpecECCNISTP256, nil
	case (alg == KMIPECDSA || alg == KMIPEC) && bits == 384:
		return keys.SpecECCNISTP384, nil
	case alg == KMIPRSA || alg == KMIPECDSA || alg == KMIPEC:
		return "", kmipInvalid("Cryptographic Length must be 2048 or 3072 for RSA, 256 or 384 for EC, got %d", bits)
	}
	return "", errUnsupported("Create Key Pair makes RSA and EC keys (Cryptographic Algorithm 4, 6 or 26), not algorithm %d", alg)
}

// CreateKeyPair makes a key pair with the broker's own asymmetric key
// generation: the HSM generates it, the private key leaves the HSM only
// wrapped under the domain key, as a KMS key's does. It is stored as two
// linked objects in one replicated command: a Private Key that is never
// extractable and a Public Key that Get returns. Unless the client says
// otherwise, the private key's usage mask is Sign and the public key's
// Verify.
func (c *KMIPObjects) CreateKeyPair(ctx context.Context, req KMIPCreateKeyPairRequest) (KMIPKeyPair, error) {
	s := c.s
	spec, err := kmipPairSpec(req.Algorithm, req.Length)
	if err != nil {
		return KMIPKeyPair{}, err
	}
	for _, a := range []KMIPAttributes{req.Private, req.Public} {
		if err := checkKMIPAttributes(a, 0); err != nil {
			return KMIPKeyPair{}, err
		}
	}
	k, err := s.resolveUsable(ctx, "WrappingKey", req.WrappingKey, keys.UsageEncryptDecrypt)
	if err != nil {
		return KMIPKeyPair{}, err
	}
	g, err := s.hsm.GenerateKey(ctx, spec)
	if err != nil {
		return KMIPKeyPair{}, err
	}
	now := s.now()
	half := func(t uint32, a KMIPAttributes, mask int32) cluster.KMIPObject {
		if a.UsageMask == 0 {
			a.UsageMask = mask
		}
		o := cluster.KMIPObject{
			ID: keys.NewKeyID(), ObjectType: t, State: cluster.KMIPPreActive, Algorithm: req.Algorithm, Length: req.Length,
			UsageMask: a.UsageMask, Names: a.Names, Groups: a.Groups, Custom: a.Custom, Owner: Principal(ctx),
			WrappingKeyID: k.ID, CreatedAt: now, LastChange: now, KeySpec: string(spec), PublicKey: g.PublicKey,
		}
		activateBy(&o, a.ActivationDate, now)
		return o
	}
	priv := half(cluster.KMIPPrivateKey, req.Private, kmipUsageSign)
	pub := half(cluster.KMIPPublicKey, req.Public, kmipUsageVerify)
	priv.Wrapped, priv.LinkedID = g.Wrapped, pub.ID
	pub.LinkedID, pub.Extractable = priv.ID, true
	nameObject(ctx, priv.ID)
	res, err := s.apply(ctx, &cluster.KMIPCreateKeyPair{Private: priv, Public: pub, OwnerShare: c.ownerShare})
	if err != nil {
		return KMIPKeyPair{}, kmipCreateFailed(err)
	}
	if out, ok := res.([]cluster.KMIPObject); ok && len(out) == 2 {
		priv, pub = out[0], out[1]
	}
	priv.Wrapped = nil
	return KMIPKeyPair{Private: priv, Public: pub}, nil
}

// KMIPSignRequest signs data with a KMIP private key, or checks a
// signature with a KMIP public key.
type KMIPSignRequest struct {
	ID        string
	Algorithm string // a KMS signing algorithm ("RSASSA_PSS_SHA_256"...); "": the key's default
	Data      []byte // the message, hashed here
	Signature []byte // Verify only
}

// signing checks a Sign or Signature Verify request against its object
// and returns the object, the algorithm and the digest.
func (c *KMIPObjects) signing(ctx context.Context, req KMIPSignRequest, objectType uint32, bit int32, verb string) (cluster.KMIPObject, keys.SigningAlgorithm, []byte, error) {
	o, err := c.object(ctx, req.ID)
	if err != nil {
		return o, "", nil, err
	}
	if o.ObjectType != objectType || o.KeySpec == "" {
		return o, "", nil, errKeyUsage("KMIP object %s is not a %s key of a key pair", req.ID, map[uint32]string{cluster.KMIPPrivateKey: "private", cluster.KMIPPublicKey: "public"}[objectType])
	}
	if o.UsageMask&bit == 0 {
		return o, "", nil, errKeyUsage("the usage mask of KMIP object %s does not allow it to %s", req.ID, verb)
	}
	if o.State != cluster.KMIPActive && (objectType == cluster.KMIPPrivateKey || o.State != cluster.KMIPDeactivated) {
		return o, "", nil, newError(codes.FailedPrecondition, ExcInvalidState, "KMIP object %s is in state %d; it cannot %s", req.ID, o.State, verb)
	}
	spec := keys.Spec(o.KeySpec)
	alg := keys.SigningAlgorithm(req.Algorithm)
	if alg == "" {
		alg = keys.SigningRSASSAPKCS1V15SHA256
		if spec.IsEC() {
			alg = spec.SigningAlgorithms(keys.UsageSignVerify)[0]
		}
	}
	if !alg.Valid() {
		return o, "", nil, kmipInvalid("signing algorithm %q is not one of %v", alg, keys.AllSigningAlgorithms)
	}
	if err := keys.CheckSigningAlgorithm(spec, keys.UsageSignVerify, alg); err != nil {
		return o, "", nil, err
	}
	if err := keys.ValidateMessage(keys.MessageRaw, alg, req.Data); err != nil {
		return o, "", nil, err
	}
	h := alg.Hash().New()
	h.Write(req.Data)
	return o, alg, h.Sum(nil), nil
}

// Sign signs data with a KMIP private key in the HSM, through the path
// KMS Sign uses: the domain-wrapped private key is unwrapped in the HSM
// and signs there. The key must be Active and its usage mask allow Sign.
// It returns the signature.
func (c *KMIPObjects) Sign(ctx context.Context, req KMIPSignRequest) ([]byte, error) {
	o, alg, digest, err := c.signing(ctx, req, cluster.KMIPPrivateKey, kmipUsageSign, "sign")
	if err != nil {
		return nil, err
	}
	ref := hsm.KeyRef{ID: o.ID, Version: 1, Spec: keys.Spec(o.KeySpec), Usage: keys.UsageSignVerify, Wrapped: o.Wrapped}
	return c.s.hsm.SignDigest(ctx, ref, alg, digest)
}

// SignatureVerify checks a signature with a KMIP public key, as KMS
// Verify does. A signature that does not verify is false, not an error.
func (c *KMIPObjects) SignatureVerify(ctx context.Context, req KMIPSignRequest) (bool, error) {
	if n := len(req.Signature); n == 0 || n > keys.MaxSignature {
		return false, kmipInvalid("Signature Data must be 1 to %d bytes, got %d", keys.MaxSignature, n)
	}
	o, alg, digest, err := c.signing(ctx, req, cluster.KMIPPublicKey, kmipUsageVerify, "verify")
	if err != nil {
		return false, err
	}
	return keys.VerifySignature(o.PublicKey, alg, digest, req.Signature)
}
