package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/fsutil"
)

// OAEPMode says how RSAES_OAEP_SHA_256 decryption is served.
type OAEPMode string

const (
	// OAEPAuto uses the token's CKM_RSA_PKCS_OAEP with SHA-256 when the
	// token accepts it, and the software-unpadding path when it answers
	// CKR_ARGUMENTS_BAD or CKR_MECHANISM_PARAM_INVALID (SoftHSM 2.6).
	OAEPAuto OAEPMode = ""
	// OAEPNative always uses the token's mechanism; tokens that lack it fail
	// with ErrUnsupported.
	OAEPNative OAEPMode = "native"
	// OAEPSoftware always decrypts with CKM_RSA_X_509 inside the token and
	// removes the OAEP padding in constant time in the broker.
	OAEPSoftware OAEPMode = "software"
)

// Config opens a partition. The zero value of every optional field means
// its default.
type Config struct {
	// Module is the path of the vendor's PKCS#11 library. Required.
	Module string
	// TokenLabel selects the token by label; TokenSerial by serial number.
	// One of the two is required; with both, both must match.
	TokenLabel  string
	TokenSerial string
	// PIN is the crypto-user PIN. Load it with LoadPIN from a 0600 file or
	// an environment variable; never from argv.
	PIN string
	// PoolSize bounds the sessions open for operations (default 8). One
	// more, the anchor session, owns the loaded key objects.
	PoolSize int
	// SessionWait bounds the wait for a free session before ErrBusy
	// (default 2s).
	SessionWait time.Duration
	// CallTimeout is the deadline on every PKCS#11 call (default 10s). A
	// context deadline that is sooner wins.
	CallTimeout time.Duration
	// CacheSize bounds the number of loaded key objects (default 4096).
	CacheSize int
	// OAEPSHA256 chooses how RSAES_OAEP_SHA_256 is served (default auto).
	OAEPSHA256 OAEPMode
	// DomainKeyLabel is the CKA_LABEL of the domain key object
	// (default "hsmbroker-domain-key").
	DomainKeyLabel string
	// Logger receives operational events (default: slog.Default()). It never
	// receives PINs or key material.
	Logger *slog.Logger
	// Faults, when set, injects failures into PKCS#11 calls; for tests and
	// drills only.
	Faults *Faults
}

func (c *Config) setDefaults() {
	if c.PoolSize <= 0 {
		c.PoolSize = 8
	}
	if c.SessionWait <= 0 {
		c.SessionWait = 2 * time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 4096
	}
	if c.DomainKeyLabel == "" {
		c.DomainKeyLabel = "hsmbroker-domain-key"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// maxPINFile is the most a pin_file may hold: a PIN and a newline, with
// room to spare.
const maxPINFile = 1024

// LoadPIN reads a PIN from file (a regular file not readable by group or
// others) or, when file is empty, from the environment variable env. The
// PIN is trimmed of surrounding white space. Errors name the source by its
// configuration field (pin_file, pin_env), never the PIN, and match
// ErrLogin without saying "login failed": no login was tried. A pin_file
// is read no further than maxPINFile bytes.
func LoadPIN(file, env string) (string, error) {
	if file != "" {
		fi, err := os.Stat(file)
		if err != nil {
			return "", pinError("pin_file %s: %v", file, pathCause(err))
		}
		switch {
		case fi.IsDir():
			return "", pinError("pin_file %s is a directory, not a file", file)
		case !fi.Mode().IsRegular():
			return "", pinError("pin_file %s is not a regular file", file)
		case fi.Mode().Perm()&0o077 != 0:
			return "", pinError("pin_file %s is accessible by group or others (mode %04o); chmod 600 it", file, fi.Mode().Perm())
		}
		b, err := fsutil.ReadSmallFile(file, maxPINFile)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return "", pinError("pin_file %s: %v", file, pathCause(err))
			}
			return "", pinError("pin_file %v", err)
		}
		pin := strings.TrimSpace(string(b))
		if pin == "" {
			return "", pinError("pin_file %s is empty", file)
		}
		return pin, nil
	}
	if env == "" {
		return "", pinError("no pin_file or pin_env configured")
	}
	pin := strings.TrimSpace(os.Getenv(env))
	if pin == "" {
		return "", pinError("pin_env %s: the environment variable is empty or unset", env)
	}
	return pin, nil
}

// loadPINError is a LoadPIN failure: it matches ErrLogin, since the token
// cannot be logged in to, but its text is only what went wrong.
type loadPINError struct{ msg string }

func (e *loadPINError) Error() string { return e.msg }
func (e *loadPINError) Unwrap() error { return ErrLogin }

func pinError(format string, args ...any) error {
	return &loadPINError{msg: fmt.Sprintf(format, args...)}
}

// pathCause is err without the operation and path an *fs.PathError repeats
// ("stat /x: no such file or directory" becomes "no such file or
// directory"), for messages that name the path themselves.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
