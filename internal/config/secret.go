package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hsmbroker/hsmbroker/internal/fsutil"
)

// ErrSecret reports a secret (join token) that could not be read. The
// message names its source, never its value.
var ErrSecret = errors.New("config: secret unavailable")

// ErrLooseFile reports a file holding a secret (a PIN, a token, a private
// key) that group or others may read or write.
var ErrLooseFile = errors.New("accessible by group or others")

// CheckPrivateFile is the one rule for files that hold secrets (PIN and
// token files, TLS and CA private keys): they must exist and give group
// and others no access. The error names the file and the fix.
func CheckPrivateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s is %w (mode %04o); run: chmod 600 %s", path, ErrLooseFile, perm, path)
	}
	return nil
}

// maxSecretFile is the most bytes a secret file may hold.
const maxSecretFile = 64 << 10

// LoadJoinToken is LoadSecret for a join token, which must also have the
// form 'hsmctl cluster join-token' gives it ("hsmbj_" and 43 characters of
// URL-safe base64), so that a wrong file is named here, not refused by the
// leader as an unknown token. The error never quotes the value.
func LoadJoinToken(file, env string) (string, error) {
	v, err := LoadSecret(file, env)
	if err != nil {
		return "", err
	}
	body, ok := strings.CutPrefix(v, joinTokenPrefix)
	var raw []byte
	if ok && len(body) == joinTokenChars {
		raw, _ = base64.RawURLEncoding.DecodeString(body)
	}
	if len(raw) != 32 {
		from := file
		if from == "" {
			from = "environment variable " + env
		}
		return "", fmt.Errorf("%w: %s does not hold a join token ('hsmctl cluster join-token' makes one: %s followed by 43 characters)", ErrSecret, from, joinTokenPrefix)
	}
	return v, nil
}

// A join token is joinTokenPrefix and joinTokenChars characters of
// URL-safe base64 (32 random bytes).
const (
	joinTokenPrefix = "hsmbj_"
	joinTokenChars  = 43
)

// LoadSecret reads a secret from file, which must not be accessible by
// group or others, or, when file is empty, from the environment variable
// env. Surrounding white space is trimmed.
func LoadSecret(file, env string) (string, error) {
	if file != "" {
		if err := CheckPrivateFile(file); err != nil {
			return "", fmt.Errorf("%w: %w", ErrSecret, err)
		}
		b, err := fsutil.ReadSmallFile(file, maxSecretFile)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrSecret, err)
		}
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: %s is empty", ErrSecret, file)
	}
	if env == "" {
		return "", fmt.Errorf("%w: no file or environment variable configured", ErrSecret)
	}
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("%w: environment variable %s is empty or unset", ErrSecret, env)
}
