package p11

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hsmbroker/hsmbroker/client"
)

// Environment variables the library reads besides the SDK's HSMBROKER_ADDR,
// HSMBROKER_CA, HSMBROKER_CERT and HSMBROKER_KEY.
const (
	// EnvConfig names a YAML configuration file (see FileConfig). When set,
	// the other variables are ignored.
	EnvConfig = "HSMBROKER_PKCS11_CONFIG"
	// EnvSealedKey names the client's private key sealed under the user PIN
	// (SealKey). When set, C_Login(CKU_USER) opens it with the PIN and the
	// library connects only then; HSMBROKER_KEY is not used.
	EnvSealedKey = "HSMBROKER_PKCS11_KEY"
	// EnvPIN is the PIN `hsmbrokerd dev` writes to dev.env for people and
	// tests; the library itself never reads it.
	EnvPIN = "HSMBROKER_PKCS11_PIN"
)

// DefaultTokenLabel is the token label when the configuration names none.
const DefaultTokenLabel = "hsmbroker"

// FileConfig is the YAML file named by HSMBROKER_PKCS11_CONFIG. The file
// must not be writable by group or others (the library refuses it then:
// whoever can write it can point the library at another broker).
type FileConfig struct {
	// Endpoints are the brokers' gRPC addresses, host:port, in order of
	// preference; the client moves to the next on failure.
	Endpoints []string `yaml:"endpoints"`
	// CA, Cert and Key are PEM files: the CA of the brokers, the client
	// certificate, and its private key in the clear.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// SealedKey is the client's private key sealed under the user PIN,
	// instead of Key.
	SealedKey string `yaml:"sealed_key"`
	// TokenLabel is the label of the one token; default "hsmbroker".
	TokenLabel string `yaml:"token_label"`
	// Timeout bounds each attempt of a call to a broker; default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// Config is the library's resolved configuration.
type Config struct {
	Endpoints     []string
	CA, Cert, Key string
	SealedKey     string
	TokenLabel    string
	Timeout       time.Duration
	Source        string // where it came from, for error messages
}

// maxConfigFile bounds the configuration file read.
const maxConfigFile = 64 << 10

// LoadConfig reads the configuration from HSMBROKER_PKCS11_CONFIG or, when
// that is unset, from the HSMBROKER_* variables that dev.env exports.
func LoadConfig(getenv func(string) string) (Config, error) {
	if path := getenv(EnvConfig); path != "" {
		return loadConfigFile(path)
	}
	c := Config{
		Endpoints:  client.SplitEndpoints(getenv(client.EnvAddr)),
		CA:         getenv(client.EnvCA),
		Cert:       getenv(client.EnvCert),
		Key:        getenv(client.EnvKey),
		SealedKey:  getenv(EnvSealedKey),
		TokenLabel: DefaultTokenLabel,
		Source:     "environment",
	}
	if c.SealedKey != "" {
		c.Key = ""
	}
	return c, c.check()
}

func loadConfigFile(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return Config{}, fmt.Errorf("%s: %s is writable by group or others (mode %v); refusing it", EnvConfig, path, st.Mode().Perm())
	}
	if !st.Mode().IsRegular() || st.Size() > maxConfigFile {
		return Config{}, fmt.Errorf("%s: %s is not a regular file of at most %d bytes", EnvConfig, path, maxConfigFile)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	var fc FileConfig
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		return Config{}, fmt.Errorf("%s: %s: %w", EnvConfig, path, err)
	}
	c := Config{Endpoints: fc.Endpoints, CA: fc.CA, Cert: fc.Cert, Key: fc.Key, SealedKey: fc.SealedKey,
		TokenLabel: fc.TokenLabel, Timeout: fc.Timeout, Source: path}
	if c.TokenLabel == "" {
		c.TokenLabel = DefaultTokenLabel
	}
	if c.Key != "" && c.SealedKey != "" {
		return c, fmt.Errorf("%s: key and sealed_key are exclusive", path)
	}
	return c, c.check()
}

func (c Config) check() error {
	var missing []string
	if len(c.Endpoints) == 0 {
		missing = append(missing, "broker addresses ("+client.EnvAddr+")")
	}
	if c.CA == "" {
		missing = append(missing, "CA file ("+client.EnvCA+")")
	}
	if c.Cert == "" {
		missing = append(missing, "client certificate ("+client.EnvCert+")")
	}
	if c.Key == "" && c.SealedKey == "" {
		missing = append(missing, "client key ("+client.EnvKey+" or "+EnvSealedKey+")")
	}
	if len(missing) > 0 {
		return fmt.Errorf("hsmbroker PKCS#11 configuration from %s lacks %s", c.Source, strings.Join(missing, ", "))
	}
	if len(c.TokenLabel) > 32 {
		return fmt.Errorf("token label %q is longer than 32 bytes", c.TokenLabel)
	}
	return nil
}

// The sealed key: a PEM block of this type holding
//
//	4 bytes  "HSP1"
//	uint32   PBKDF2-HMAC-SHA256 iterations, big-endian
//	16 bytes salt
//	12 bytes nonce
//	AES-256-GCM(PBKDF2(PIN, salt), nonce, PEM of the private key, AAD = the 36 bytes before)
const (
	sealedKeyPEMType = "HSMBROKER PIN-SEALED KEY"
	sealMagic        = "HSP1"
	sealIterations   = 200_000
	maxSealIter      = 10_000_000
	minPINLen        = 4
	maxPINLen        = 256
	maxSealedKeyFile = 64 << 10
)

// ErrPINIncorrect is OpenSealedKey's answer to a wrong PIN.
var ErrPINIncorrect = errors.New("PIN incorrect")

// SealKey encrypts the PEM private key keyPEM under pin.
func SealKey(keyPEM []byte, pin string) ([]byte, error) {
	if len(pin) < minPINLen || len(pin) > maxPINLen {
		return nil, fmt.Errorf("PIN must be %d to %d bytes", minPINLen, maxPINLen)
	}
	hdr := make([]byte, 36)
	copy(hdr, sealMagic)
	binary.BigEndian.PutUint32(hdr[4:], sealIterations)
	if _, err := rand.Read(hdr[8:]); err != nil {
		return nil, err
	}
	aead, err := sealAEAD(pin, hdr[8:24], sealIterations)
	if err != nil {
		return nil, err
	}
	out := aead.Seal(hdr, hdr[24:36], keyPEM, hdr)
	return pem.EncodeToMemory(&pem.Block{Type: sealedKeyPEMType, Bytes: out}), nil
}

// OpenSealedKey decrypts a sealed key file's content with pin and returns
// the PEM private key; ErrPINIncorrect when the PIN is wrong.
func OpenSealedKey(file []byte, pin string) ([]byte, error) {
	if len(pin) < minPINLen || len(pin) > maxPINLen {
		return nil, ErrPINIncorrect
	}
	b, _ := pem.Decode(file)
	if b == nil || b.Type != sealedKeyPEMType || len(b.Bytes) < 36+16 || string(b.Bytes[:4]) != sealMagic {
		return nil, errors.New("not a PIN-sealed key file")
	}
	iter := binary.BigEndian.Uint32(b.Bytes[4:])
	if iter < 1000 || iter > maxSealIter {
		return nil, fmt.Errorf("sealed key: iteration count %d outside 1000..%d", iter, maxSealIter)
	}
	aead, err := sealAEAD(pin, b.Bytes[8:24], int(iter))
	if err != nil {
		return nil, err
	}
	key, err := aead.Open(nil, b.Bytes[24:36], b.Bytes[36:], b.Bytes[:36])
	if err != nil {
		return nil, ErrPINIncorrect
	}
	return key, nil
}

func sealAEAD(pin string, salt []byte, iter int) (cipher.AEAD, error) {
	k, err := pbkdf2.Key(sha256.New, pin, salt, iter, 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// readSmallFile reads a file of at most maxSealedKeyFile bytes.
func readSmallFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxSealedKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSealedKeyFile)
	}
	return os.ReadFile(path)
}
