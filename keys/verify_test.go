package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
)

func TestVerifySignature(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rpub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	epub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	d := crypto.SHA256.New()
	d.Write([]byte("m"))
	digest := d.Sum(nil)
	pss, _ := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	v15, _ := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, digest)
	es, _ := ecdsa.SignASN1(rand.Reader, ek, digest)
	tests := []struct {
		name    string
		pub     []byte
		alg     SigningAlgorithm
		digest  []byte
		sig     []byte
		want    bool
		wantErr error
	}{
		{"pss", rpub, SigningRSASSAPSSSHA256, digest, pss, true, nil},
		{"pkcs1", rpub, SigningRSASSAPKCS1V15SHA256, digest, v15, true, nil},
		{"ecdsa", epub, SigningECDSASHA256, digest, es, true, nil},
		{"pss as pkcs1", rpub, SigningRSASSAPKCS1V15SHA256, digest, pss, false, nil},
		{"other digest", epub, SigningECDSASHA256, append([]byte{1}, digest[1:]...), es, false, nil},
		{"ecdsa alg on rsa key", rpub, SigningECDSASHA256, digest, es, false, ErrInvalidKeyUsage},
		{"short digest", rpub, SigningRSASSAPSSSHA256, digest[:5], pss, false, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VerifySignature(tc.pub, tc.alg, tc.digest, tc.sig)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := VerifySignature([]byte("junk"), SigningECDSASHA256, digest, es); err == nil {
		t.Fatal("junk public key accepted")
	}
}
