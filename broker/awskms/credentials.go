package awskms

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/hsmbroker/hsmbroker/authz"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Credentials finds the secret of an access key and the principal it
// authenticates. Implementations must be safe for concurrent use; Lookup is
// called once per request.
type Credentials interface {
	// Lookup returns the secret access key and principal of accessKeyID,
	// and ok=false for an access key it does not know.
	Lookup(accessKeyID string) (secret, principal string, ok bool)
}

// AccessKey is one SigV4 credential and the principal it stands for.
type AccessKey struct {
	ID        string `json:"access_key_id"`
	Secret    string `json:"secret_access_key"`
	Principal string `json:"principal"`
	// Role is the role the key gives its principal (admin, user or
	// auditor), as a client certificate names one; "" means user. A role
	// the cluster records for the principal (hsmctl principals set-role)
	// overrides it.
	Role authz.Role `json:"role,omitempty"`
	// XKS marks an external key store proxy credential
	// (GenerateXKSAccessKey): it carries no role, and TrentService
	// refuses it, so that one put in kms.credentials_file by mistake
	// does not act as a user's key.
	XKS bool `json:"xks,omitempty"`
}

// String names the key without its secret, so that printing or logging an
// AccessKey cannot leak it.
func (k AccessKey) String() string { return k.ID + " (" + k.Principal + ")" }

// LogValue keeps the secret out of structured logs.
func (k AccessKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("access_key_id", k.ID), slog.String("principal", k.Principal))
}

// GenerateAccessKey makes a fresh access key for principal in the form AWS
// uses: an id of "AKIA" and 16 characters of upper-case base32, and a
// 40-character secret.
func GenerateAccessKey(principal string) (AccessKey, error) {
	return generate(principal, 10, 30)
}

// GenerateXKSAccessKey makes a credential for the XKS proxy API in the form
// AWS KMS accepts for an external key store (CreateCustomKeyStore): an id of
// 20 to 30 characters of A-Z and 2-7 (here "AKIA" and 24 more), and a
// secret of 43 to 64 base64 characters (here 44, 256 random bits).
func GenerateXKSAccessKey(principal string) (AccessKey, error) {
	k, err := generate(principal, 15, 32)
	k.XKS = true
	return k, err
}

func generate(principal string, idBytes, secretBytes int) (AccessKey, error) {
	if problem := authz.NewPrincipalProblem(principal); problem != "" {
		return AccessKey{}, fmt.Errorf("awskms: an access key's principal %s (got %q)", problem, principal)
	}
	b := make([]byte, idBytes+secretBytes)
	if _, err := rand.Read(b); err != nil {
		return AccessKey{}, err
	}
	id := "AKIA" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:idBytes])
	return AccessKey{ID: id, Secret: base64.StdEncoding.EncodeToString(b[idBytes:]), Principal: principal}, nil
}

// StaticCredentials is a fixed set of access keys.
type StaticCredentials map[string]AccessKey

// NewStaticCredentials returns the credentials of keys, indexed by id.
func NewStaticCredentials(keys map[string]AccessKey) StaticCredentials {
	c := make(StaticCredentials, len(keys))
	for id, k := range keys {
		if k.ID == "" {
			k.ID = id
		}
		c[k.ID] = k
	}
	return c
}

// Lookup implements Credentials.
func (c StaticCredentials) Lookup(id string) (string, string, bool) {
	k, ok := c[id]
	if !ok || k.Secret == "" {
		return "", "", false
	}
	return k.Secret, k.Principal, true
}

// credentialsFile is the JSON form of a credentials file:
//
//	{"access_keys": [{"access_key_id": "AKIA...", "secret_access_key": "...", "principal": "admin", "role": "admin"}]}
type credentialsFile struct {
	AccessKeys []AccessKey `json:"access_keys"`
}

// FileCredentials are access keys read from a JSON file. Reload rereads
// the file, so that keys can be added and retired (credential rotation)
// without a restart.
type FileCredentials struct {
	path string
	mu   sync.RWMutex
	keys StaticCredentials
}

// LoadCredentialsFile reads a credentials file. The file must not be
// readable or writable by group or others (0600 or stricter), since it
// holds secrets.
func LoadCredentialsFile(path string) (*FileCredentials, error) {
	c := &FileCredentials{path: path}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload rereads the file. On error the keys loaded before stay in use.
func (c *FileCredentials) Reload() error {
	keys, err := readCredentialsFile(c.path)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.keys = keys
	c.mu.Unlock()
	return nil
}

// Lookup implements Credentials.
func (c *FileCredentials) Lookup(id string) (string, string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.keys.Lookup(id)
}

func readCredentialsFile(path string) (StaticCredentials, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("awskms: credentials file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("awskms: credentials file %s has mode %04o; it holds secrets and must be 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("awskms: credentials file: %w", err)
	}
	var f credentialsFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		// The decoder's message may quote the file; name the file only.
		return nil, fmt.Errorf("awskms: credentials file %s is not a JSON object of access_keys", path)
	}
	keys := make(StaticCredentials, len(f.AccessKeys))
	for i, k := range f.AccessKeys {
		switch {
		case k.ID == "" || k.Secret == "" || k.Principal == "":
			return nil, fmt.Errorf("awskms: credentials file %s: access key %d needs access_key_id, secret_access_key and principal", path, i+1)
		case strings.ContainsAny(k.ID, "/ ,="):
			return nil, fmt.Errorf("awskms: credentials file %s: access key id %q has a character that SigV4 cannot carry", path, k.ID)
		case k.XKS && k.Role != "":
			return nil, fmt.Errorf("awskms: credentials file %s: access key %s is an external key store proxy credential (xks) and carries no role", path, k.ID)
		case k.Role != "" && !k.Role.Issuable():
			return nil, fmt.Errorf("awskms: credentials file %s: access key %s has role %q; the roles are admin, user and auditor", path, k.ID, k.Role)
		}
		if _, dup := keys[k.ID]; dup {
			return nil, fmt.Errorf("awskms: credentials file %s: access key id %s appears twice", path, k.ID)
		}
		keys[k.ID] = k
	}
	return keys, nil
}

// WriteCredentialsFile writes keys to path with mode 0600, replacing the
// file atomically.
func WriteCredentialsFile(path string, keys []AccessKey) error {
	b, err := json.MarshalIndent(credentialsFile{AccessKeys: keys}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return fmt.Errorf("awskms: write credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("awskms: write credentials: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("awskms: write credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("awskms: write credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("awskms: write credentials: %w", err)
	}
	return nil
}
