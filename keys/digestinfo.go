package keys

import (
	"bytes"
	"crypto"
)

// digestInfoPrefixes are the DER DigestInfo headers (RFC 8017 section 9.2)
// that an RSA PKCS#1 v1.5 signature puts before the digest, for the hashes
// the signing algorithms use.
var digestInfoPrefixes = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// DigestInfo returns the DER DigestInfo of digest under h, the input of a
// raw PKCS#1 v1.5 signature (nil for a hash no signing algorithm uses).
func DigestInfo(h crypto.Hash, digest []byte) []byte {
	prefix, ok := digestInfoPrefixes[h]
	if !ok {
		return nil
	}
	return append(append(make([]byte, 0, len(prefix)+len(digest)), prefix...), digest...)
}

// SplitDigestInfo is the inverse of DigestInfo: the hash and digest of a
// DER DigestInfo of SHA-256, SHA-384 or SHA-512; ok is false for anything
// else.
func SplitDigestInfo(b []byte) (h crypto.Hash, digest []byte, ok bool) {
	for h, prefix := range digestInfoPrefixes {
		if len(b) == len(prefix)+h.Size() && bytes.HasPrefix(b, prefix) {
			return h, b[len(prefix):], true
		}
	}
	return 0, nil, false
}
