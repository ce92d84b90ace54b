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
// whoever can write it can point the library at another broker). It holds
// one token in its top-level fields, or a list of tokens under "tokens"
// (then the top-level token fields must be empty); each token is a slot.
type FileConfig struct {
	TokenFile `yaml:",inline"`
	// Tokens are the slots, in slot order (slot ids 0, 1, ...).
	Tokens []TokenFile `yaml:"tokens"`
}

// TokenFile is one token of the configuration file.
type TokenFile struct {
	// Label is the token label; default "hsmbroker". Labels are unique.
	Label string `yaml:"label"`
	// TokenLabel is the older name of Label, for the one-token form.
	TokenLabel string `yaml:"token_label"`
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
	// KeyPrefix, when set, makes the token a part of the cluster: see
	// Config.KeyPrefix.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each attempt of a call to a broker; default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// MaxTokens bounds the tokens (slots) of a configuration file.
const MaxTokens = 16

// Config is one token's resolved configuration.
type Config struct {
	Endpoints     []string
	CA, Cert, Key string
	SealedKey     string
	TokenLabel    string
	// KeyPrefix, when set, is one path segment ending in "/" (letters,
	// digits, '-'). The token then shows only the keys that have an alias
	// beginning with "alias/"+KeyPrefix, and only the data objects whose
	// label begins with KeyPrefix (shown without it); keys and data objects
	// made through the token get it. It is a namespace, not a boundary:
	// what a token may do is decided by the broker from its certificate.
	KeyPrefix string
	Timeout   time.Duration
	Source    string // where it came from, for error messages
}

// maxConfigFile bounds the configuration file read.
const maxConfigFile = 64 << 10

// LoadConfig reads the tokens from HSMBROKER_PKCS11_CONFIG or, when that
// is unset, the one token of the HSMBROKER_* variables that dev.env exports.
func LoadConfig(getenv func(string) string) ([]Config, error) {
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
	return []Config{c}, c.check()
}

func loadConfigFile(path string) ([]Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s: %s is writable by group or others (mode %v); refusing it", EnvConfig, path, st.Mode().Perm())
	}
	if !st.Mode().IsRegular() || st.Size() > maxConfigFile {
		return nil, fmt.Errorf("%s: %s is not a regular file of at most %d bytes", EnvConfig, path, maxConfigFile)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvConfig, err)
	}
	var fc FileConfig
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", EnvConfig, path, err)
	}
	toks := fc.Tokens
	switch {
	case len(toks) == 0:
		toks = []TokenFile{fc.TokenFile}
	case fc.TokenFile.Label != "" || fc.TokenFile.TokenLabel != "" || len(fc.TokenFile.Endpoints) > 0 || fc.TokenFile.CA != "" ||
		fc.TokenFile.Cert != "" || fc.TokenFile.Key != "" || fc.TokenFile.SealedKey != "" || fc.TokenFile.KeyPrefix != "" || fc.TokenFile.Timeout != 0:
		return nil, fmt.Errorf("%s: %s: with tokens, the token fields belong in each token", EnvConfig, path)
	case len(toks) > MaxTokens:
		return nil, fmt.Errorf("%s: %s: %d tokens, at most %d", EnvConfig, path, len(toks), MaxTokens)
	}
	var out []Config
	seen := map[string]bool{}
	for i, tf := range toks {
		label := tf.Label
		if label != "" && tf.TokenLabel != "" {
			return nil, fmt.Errorf("%s: %s: token %d: label and token_label are the same field; give one", EnvConfig, path, i)
		}
		if label == "" {
			label = tf.TokenLabel
		}
		if label == "" {
			label = DefaultTokenLabel
		}
		src := path
		if len(fc.Tokens) > 0 {
			src = fmt.Sprintf("%s (token %d, %q)", path, i, label)
		}
		c := Config{Endpoints: tf.Endpoints, CA: tf.CA, Cert: tf.Cert, Key: tf.Key, SealedKey: tf.SealedKey,
			TokenLabel: label, KeyPrefix: tf.KeyPrefix, Timeout: tf.Timeout, Source: src}
		if c.Key != "" && c.SealedKey != "" {
			return nil, fmt.Errorf("%s: key and sealed_key are exclusive", src)
		}
		if err := c.check(); err != nil {
			return nil, err
		}
		if seen[label] {
			return nil, fmt.Errorf("%s: token label %q is used twice", path, label)
		}
		seen[label] = true
		out = append(out, c)
	}
	return out, nil
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
	if c.KeyPrefix != "" && !validKeyPrefix(c.KeyPrefix) {
		return fmt.Errorf("%s: key_prefix %q is not one segment of letters, digits and '-' (at most 32) ending in '/'", c.Source, c.KeyPrefix)
	}
	return nil
}

// validKeyPrefix reports whether p is "seg/" with seg of 1 to 32 bytes in
// [A-Za-z0-9-]. One segment, so that no token's prefix begins another's,
// and no '_', so that no label's alias (AliasForLabel) can look like one.
func validKeyPrefix(p string) bool {
	seg, ok := strings.CutSuffix(p, "/")
	if !ok || len(seg) == 0 || len(seg) > 32 {
		return false
	}
	for _, c := range []byte(seg) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
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
