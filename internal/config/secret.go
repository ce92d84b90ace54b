package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrSecret reports a secret (join token) that could not be read. The
// message names its source, never its value.
var ErrSecret = errors.New("config: secret unavailable")

// LoadSecret reads a secret from file, which must not be accessible by
// group or others, or, when file is empty, from the environment variable
// env. Surrounding white space is trimmed.
func LoadSecret(file, env string) (string, error) {
	if file != "" {
		fi, err := os.Stat(file)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrSecret, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("%w: %s is accessible by group or others (mode %04o); chmod 600 it", ErrSecret, file, fi.Mode().Perm())
		}
		b, err := os.ReadFile(file)
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
