package broker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
)

// The AWS KMS external key store (XKS) proxy API asks the key manager for
// AES-256-GCM under caller-supplied additional authenticated data, and
// takes the IV, ciphertext and tag as separate fields, with up to 20 bytes
// of "ciphertextMetadata" that the proxy chooses at encryption and AWS KMS
// hands back at decryption. The broker's metadata names the key version,
// so that ciphertexts keep decrypting after the key rotates:
//
//	offset  size  field
//	     0     1  format, 0x01
//	     1     4  key version, uint32 big-endian, 1 or more
//
// The AAD given to the HSM is the specification's layout,
//
//	uint16 len(aad) || aad || uint8 len(metadata) || metadata
//
// after a fixed label. The label keeps XKS ciphertexts and the broker's own
// ciphertext blobs (whose AAD starts with keys.CiphertextFormat) apart
// under the same key: neither API can be made to open the other's
// ciphertexts, whatever AAD a caller chooses.
const (
	xksMetadataFormat byte = 0x01
	xksMetadataSize        = 5
	xksAADLabel            = "hsmbroker-xks-v1\x00"
)

// Limits of the XKS operations. The specification requires at least 4300
// bytes of plaintext and 8192 bytes of AAD.
const (
	XKSMaxPlaintext = 8192
	XKSMaxAAD       = 8192
)

// XKSCiphertext is an AES-GCM ciphertext in the parts the XKS proxy API
// carries separately.
type XKSCiphertext struct {
	IV         []byte // 12 bytes
	Ciphertext []byte // as long as the plaintext
	Tag        []byte // 16 bytes
	Metadata   []byte // the key version; see above
}

func xksAAD(aad, metadata []byte) []byte {
	b := make([]byte, 0, len(xksAADLabel)+2+len(aad)+1+len(metadata))
	b = append(b, xksAADLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(aad)))
	b = append(b, aad...)
	b = append(b, byte(len(metadata)))
	return append(b, metadata...)
}

// xksKey resolves the key behind an external key id: a key id or alias
// name of a SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT key.
func (s *Service) xksKey(ctx context.Context, ref string) (cluster.Key, error) {
	k, err := s.resolve(ctx, "externalKeyId", ref)
	if err != nil {
		return k, err
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage != keys.UsageEncryptDecrypt {
		return k, errKeyUsage("key %s is %s %s; external key store operations need a SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key", k.ID, k.Spec, k.Usage)
	}
	return k, nil
}

// XKSEncrypt encrypts plaintext under the current version of the key ref
// names (a key id or alias name), binding aad, for the XKS proxy API.
func (s *Service) XKSEncrypt(ctx context.Context, ref string, plaintext, aad []byte) (cluster.Key, XKSCiphertext, error) {
	if len(plaintext) == 0 {
		return cluster.Key{}, XKSCiphertext{}, &keys.FieldError{Field: "plaintext", Problem: "is required"}
	}
	if len(plaintext) > XKSMaxPlaintext {
		return cluster.Key{}, XKSCiphertext{}, errUnsupported("plaintext of %d bytes exceeds this proxy's limit of %d", len(plaintext), XKSMaxPlaintext)
	}
	if len(aad) > XKSMaxAAD {
		return cluster.Key{}, XKSCiphertext{}, errUnsupported("additionalAuthenticatedData of %d bytes exceeds this proxy's limit of %d", len(aad), XKSMaxAAD)
	}
	k, err := s.xksKey(ctx, ref)
	if err != nil {
		return k, XKSCiphertext{}, err
	}
	if err := usable(k); err != nil {
		return k, XKSCiphertext{}, err
	}
	hr, ok := hsmRef(k, k.CurrentVersion)
	if !ok {
		return k, XKSCiphertext{}, fmt.Errorf("key %s has no current version %d", k.ID, k.CurrentVersion)
	}
	c := XKSCiphertext{IV: make([]byte, hsm.GCMIVSize), Metadata: make([]byte, 0, xksMetadataSize)}
	if _, err := rand.Read(c.IV); err != nil {
		return k, XKSCiphertext{}, err
	}
	c.Metadata = append(c.Metadata, xksMetadataFormat)
	c.Metadata = binary.BigEndian.AppendUint32(c.Metadata, k.CurrentVersion)
	sealed, err := s.hsm.EncryptGCM(ctx, hr, c.IV, plaintext, xksAAD(aad, c.Metadata))
	if err != nil {
		return k, XKSCiphertext{}, err
	}
	if len(sealed) != len(plaintext)+hsm.GCMTagSize {
		return k, XKSCiphertext{}, fmt.Errorf("AES-GCM output of %d bytes for %d bytes of plaintext", len(sealed), len(plaintext))
	}
	c.Ciphertext, c.Tag = sealed[:len(plaintext)], sealed[len(plaintext):]
	return k, c, nil
}

// XKSDecrypt reverses XKSEncrypt. As with Decrypt, every failure that
// depends on the ciphertext's bytes is the one InvalidCiphertextException.
func (s *Service) XKSDecrypt(ctx context.Context, ref string, c XKSCiphertext, aad []byte) (cluster.Key, []byte, error) {
	if len(aad) > XKSMaxAAD {
		return cluster.Key{}, nil, errUnsupported("additionalAuthenticatedData of %d bytes exceeds this proxy's limit of %d", len(aad), XKSMaxAAD)
	}
	k, err := s.xksKey(ctx, ref)
	if err != nil {
		return k, nil, err
	}
	if err := usable(k); err != nil {
		return k, nil, err
	}
	if len(c.Metadata) != xksMetadataSize || c.Metadata[0] != xksMetadataFormat ||
		len(c.IV) != hsm.GCMIVSize || len(c.Tag) != hsm.GCMTagSize || len(c.Ciphertext) > XKSMaxPlaintext {
		return k, nil, errInvalidCiphertext
	}
	hr, ok := hsmRef(k, binary.BigEndian.Uint32(c.Metadata[1:]))
	if !ok {
		return k, nil, errInvalidCiphertext
	}
	sealed := make([]byte, 0, len(c.Ciphertext)+len(c.Tag))
	sealed = append(append(sealed, c.Ciphertext...), c.Tag...)
	pt, err := s.hsm.DecryptGCM(ctx, hr, c.IV, sealed, xksAAD(aad, c.Metadata))
	if err != nil {
		return k, nil, err
	}
	return k, pt, nil
}
