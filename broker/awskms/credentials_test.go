package awskms

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestGenerateAccessKey(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		k, err := GenerateAccessKey("admin")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`).MatchString(k.ID) || len(k.Secret) != 40 || k.Principal != "admin" {
			t.Fatalf("access key %s with a %d-character secret", k.ID, len(k.Secret))
		}
		x, err := GenerateXKSAccessKey("aws-kms")
		if err != nil {
			t.Fatal(err)
		}
		// The forms AWS KMS's CreateCustomKeyStore accepts.
		if !regexp.MustCompile(`^[A-Z2-7]{20,30}$`).MatchString(x.ID) || !regexp.MustCompile(`^[A-Za-z0-9+/=]{43,64}$`).MatchString(x.Secret) {
			t.Fatalf("XKS access key %s with a %d-character secret", x.ID, len(x.Secret))
		}
		if seen[k.ID] || seen[x.ID] || seen[k.Secret] {
			t.Fatal("a generated value repeated")
		}
		seen[k.ID], seen[x.ID], seen[k.Secret] = true, true, true
	}
	if _, err := GenerateAccessKey(""); err == nil {
		t.Error("an access key without a principal was made")
	}
	for _, p := range []string{"bad name", "*", "arn:aws:iam::000000000000:user/x"} {
		if _, err := GenerateXKSAccessKey(p); err == nil || !strings.Contains(err.Error(), "principal") {
			t.Errorf("an access key for principal %q: %v, want refused", p, err)
		}
	}
}

func TestAccessKeyHidesSecret(t *testing.T) {
	k := AccessKey{ID: "AKIAEXAMPLE", Secret: "very-secret-value", Principal: "admin"}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("key", "k", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %s", k, k, k), logged.String()} {
		if strings.Contains(s, k.Secret) {
			t.Errorf("secret shown in %q", s)
		}
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	a, _ := GenerateAccessKey("admin")
	u, _ := GenerateAccessKey("app")
	if err := WriteCredentialsFile(path, []AccessKey{a, u}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v, %v", fi.Mode(), err)
	}
	c, err := LoadCredentialsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s, p, ok := c.Lookup(u.ID); !ok || s != u.Secret || p != "app" {
		t.Fatalf("lookup %s: %q %v", u.ID, p, ok)
	}
	if _, _, ok := c.Lookup("AKIANONE"); ok {
		t.Fatal("an unknown key was found")
	}

	// Rotation: a new key appears and the old one goes, on Reload.
	n, _ := GenerateAccessKey("app")
	if err := WriteCredentialsFile(path, []AccessKey{a, n}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.Lookup(u.ID); ok {
		t.Error("a retired key still works after Reload")
	}
	if _, _, ok := c.Lookup(n.ID); !ok {
		t.Error("a new key does not work after Reload")
	}

	bad := map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"group readable":  {`{"access_keys":[]}`, 0o640, "0600"},
		"world readable":  {`{"access_keys":[]}`, 0o644, "0600"},
		"not JSON":        {a.Secret, 0o600, "not a JSON object"},
		"unknown member":  {`{"keys":[]}`, 0o600, "not a JSON object"},
		"missing secret":  {`{"access_keys":[{"access_key_id":"AKIAX","principal":"p"}]}`, 0o600, "needs"},
		"duplicate id":    {`{"access_keys":[{"access_key_id":"AKIAX","secret_access_key":"s","principal":"p"},{"access_key_id":"AKIAX","secret_access_key":"t","principal":"q"}]}`, 0o600, "twice"},
		"slash in the id": {`{"access_keys":[{"access_key_id":"AKIA/X","secret_access_key":"s","principal":"p"}]}`, 0o600, "character"},
	}
	for name, tt := range bad {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if err := os.WriteFile(p, []byte(tt.body), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCredentialsFile(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), a.Secret) {
				t.Fatalf("the error shows a secret: %v", err)
			}
		})
	}
	if _, err := LoadCredentialsFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}
