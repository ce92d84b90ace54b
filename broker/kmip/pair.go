package kmip

import (
	"context"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// pairAttrs reads one attribute group of a Create Key Pair request: the
// 1.x template attribute tagged t1 and the 2.0 attributes tagged t2.
func pairAttrs(p ttlv.Item, t1, t2 ttlv.Tag) (attrSet, error) {
	pseudo := ttlv.Struct(tagRequestPayload)
	for _, c := range p.ChildrenOf(t1) {
		c.Tag = tagTemplateAttribute
		pseudo.Children = append(pseudo.Children, c)
	}
	for _, c := range p.ChildrenOf(t2) {
		c.Tag = tagAttributes
		pseudo.Children = append(pseudo.Children, c)
	}
	return requestAttrs(pseudo)
}

// merged is the common attributes with one half's own on top.
func merged(common, own attrSet) broker.KMIPAttributes {
	a := common.core()
	o := own.core()
	a.Names = append(append([]string(nil), a.Names...), o.Names...)
	a.Groups = append(append([]string(nil), a.Groups...), o.Groups...)
	for k, v := range o.Custom {
		if a.Custom == nil {
			a.Custom = map[string]string{}
		}
		a.Custom[k] = v
	}
	if o.UsageMask != 0 {
		a.UsageMask = o.UsageMask
	}
	if !o.ActivationDate.IsZero() {
		a.ActivationDate = o.ActivationDate
	}
	return a
}

// createKeyPair serves Create Key Pair: an RSA or EC pair generated in the
// HSM, stored as a Private Key (never returned) and a Public Key linked to
// each other.
func (s *Server) createKeyPair(ctx context.Context, p ttlv.Item, env *batchEnv) (ttlv.Item, error) {
	common, err := pairAttrs(p, tagCommonTemplateAttr, tagCommonAttributes)
	if err != nil {
		return ttlv.Item{}, err
	}
	priv, err := pairAttrs(p, tagPrivateKeyTemplateAttr, tagPrivateKeyAttributes)
	if err != nil {
		return ttlv.Item{}, err
	}
	pub, err := pairAttrs(p, tagPublicKeyTemplateAttr, tagPublicKeyAttributes)
	if err != nil {
		return ttlv.Item{}, err
	}
	req := broker.KMIPCreateKeyPairRequest{WrappingKey: s.cfg.WrappingKey, Algorithm: common.algorithm, Length: common.length,
		Private: merged(common, priv), Public: merged(common, pub)}
	for _, h := range []attrSet{priv, pub} {
		if req.Algorithm == 0 {
			req.Algorithm = h.algorithm
		}
		if req.Length == 0 {
			req.Length = h.length
		}
	}
	if req.Algorithm == 0 || req.Length == 0 {
		return ttlv.Item{}, missingData("Cryptographic Algorithm and Cryptographic Length are required")
	}
	if err := s.core.CheckRoom(ctx, 2); err != nil {
		return ttlv.Item{}, err
	}
	kp, err := s.core.CreateKeyPair(ctx, req)
	if err != nil {
		return ttlv.Item{}, err
	}
	env.placeholder = kp.Private.ID
	return ttlv.Struct(tagResponsePayload, ttlv.Text(tagPrivateKeyUID, kp.Private.ID), ttlv.Text(tagPublicKeyUID, kp.Public.ID)), nil
}

// KMIP Digital Signature Algorithm, Hashing Algorithm and Padding Method
// values that signing reads.
const (
	dsaSHA256RSA   = 5
	dsaSHA384RSA   = 6
	dsaSHA512RSA   = 7
	dsaRSASSAPSS   = 8
	dsaECDSASHA256 = 0x0E
	dsaECDSASHA384 = 0x0F
	dsaECDSASHA512 = 0x10

	hashSHA256 = 6
	hashSHA384 = 7
	hashSHA512 = 8

	paddingPKCS1v15 = 8
	paddingPSS      = 10
)

func enumChild(cp ttlv.Item, tag ttlv.Tag, name string) (int64, error) {
	c, ok := cp.Child(tag)
	if !ok {
		return 0, nil
	}
	if c.Type != ttlv.TypeEnumeration {
		return 0, invalidField("%s must be an Enumeration", name)
	}
	return c.Int, nil
}

// signingAlgorithm reads the Cryptographic Parameters of Sign and
// Signature Verify: a Digital Signature Algorithm, or a Cryptographic
// Algorithm with a Padding Method and a Hashing Algorithm (SHA-256 when
// absent). No parameters: "", the key's default.
func signingAlgorithm(p ttlv.Item) (string, error) {
	cp, ok := p.Child(tagCryptographicParams)
	if !ok {
		return "", nil
	}
	dsa, err := enumChild(cp, tagDigitalSignatureAlg, "Digital Signature Algorithm")
	if err != nil {
		return "", err
	}
	alg, err := enumChild(cp, tagCryptographicAlgorithm, "Cryptographic Algorithm")
	if err != nil {
		return "", err
	}
	pad, err := enumChild(cp, tagPaddingMethod, "Padding Method")
	if err != nil {
		return "", err
	}
	hash, err := enumChild(cp, tagHashingAlgorithm, "Hashing Algorithm")
	if err != nil {
		return "", err
	}
	unsupported := &opError{reason: reasonFeatureNotSupported, msg: "signing is RSA PKCS#1 v1.5 or PSS and ECDSA with SHA-256, SHA-384 or SHA-512"}
	bits := map[int64]string{hashSHA256: "256", hashSHA384: "384", hashSHA512: "512"}
	fromDSA := map[int64][2]string{dsaSHA256RSA: {"PKCS1", "256"}, dsaSHA384RSA: {"PKCS1", "384"}, dsaSHA512RSA: {"PKCS1", "512"},
		dsaRSASSAPSS: {"PSS", ""}, dsaECDSASHA256: {"ECDSA", "256"}, dsaECDSASHA384: {"ECDSA", "384"}, dsaECDSASHA512: {"ECDSA", "512"}}
	var family, size string
	switch {
	case dsa != 0:
		f, ok := fromDSA[dsa]
		if !ok {
			return "", unsupported
		}
		family, size = f[0], f[1]
	case alg == int64(broker.KMIPRSA) && (pad == 0 || pad == paddingPKCS1v15):
		family = "PKCS1"
	case alg == int64(broker.KMIPRSA) && pad == paddingPSS:
		family = "PSS"
	case (alg == int64(broker.KMIPECDSA) || alg == int64(broker.KMIPEC)) && pad == 0:
		family = "ECDSA"
	case alg == 0 && pad == 0 && hash == 0:
		return "", nil
	default:
		return "", unsupported
	}
	if hash != 0 {
		b, ok := bits[hash]
		if !ok || size != "" && size != b {
			return "", unsupported
		}
		size = b
	}
	if size == "" {
		size = "256"
	}
	if family == "PSS" {
		// The HSM signs PSS with MGF1 of the same hash and a salt as long
		// as the hash, as AWS KMS does.
		n := map[string]int64{"256": 32, "384": 48, "512": 64}[size]
		if sl, ok := cp.Child(tagSaltLength); ok && (sl.Type != ttlv.TypeInteger || sl.Int != n && sl.Int != 8*n) {
			return "", &opError{reason: reasonFeatureNotSupported, msg: "PSS is served with a salt as long as the hash (in bytes or bits)"}
		}
		if mh, err := enumChild(cp, tagMaskGeneratorHashing, "Mask Generator Hashing Algorithm"); err != nil || mh != 0 && bits[mh] != size {
			return "", &opError{reason: reasonFeatureNotSupported, msg: "PSS is served with MGF1 of the signing hash"}
		}
	}
	switch family {
	case "PKCS1":
		return "RSASSA_PKCS1_V1_5_SHA_" + size, nil
	case "PSS":
		return "RSASSA_PSS_SHA_" + size, nil
	}
	return "ECDSA_SHA_" + size, nil
}

// sign serves Sign (with a private key, in the HSM) and Signature Verify
// (with a public key).
func (s *Server) sign(ctx context.Context, sign bool, p ttlv.Item, id string) (ttlv.Item, error) {
	alg, err := signingAlgorithm(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	d, ok := p.Child(tagData)
	if !ok || d.Type != ttlv.TypeByteString || len(d.Bytes) == 0 {
		return ttlv.Item{}, missingData("Data is required")
	}
	req := broker.KMIPSignRequest{ID: id, Algorithm: alg, Data: d.Bytes}
	if sign {
		sig, err := s.core.Sign(ctx, req)
		if err != nil {
			return ttlv.Item{}, err
		}
		return ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, id), ttlv.Bytes(tagSignatureData, sig)), nil
	}
	sd, ok := p.Child(tagSignatureData)
	if !ok || sd.Type != ttlv.TypeByteString {
		return ttlv.Item{}, missingData("Signature Data is required")
	}
	req.Signature = sd.Bytes
	valid, err := s.core.SignatureVerify(ctx, req)
	if err != nil {
		return ttlv.Item{}, err
	}
	vi := uint32(2) // Invalid
	if valid {
		vi = 1
	}
	return ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, id), ttlv.Enum(tagValidityIndicator, vi)), nil
}
