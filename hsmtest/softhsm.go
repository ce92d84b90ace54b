// Package hsmtest holds test fixtures for hsmbroker: throwaway SoftHSMv2
// tokens, partitions opened on them, fault injection on top of the real
// token, and a conformance suite (TestPartition) that every partition
// configuration must pass. It is imported by tests only.
//
// A PKCS#11 library is a process-wide singleton: SoftHSM reads
// SOFTHSM2_CONF once, at C_Initialize. So every test process gets one
// SoftHSM configuration and token directory (created on first use, removed
// by Main), and every test gets its own token in it, with its own label and
// random PINs.
package hsmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/hsmtest/gate"
)

// DefaultModule is where Debian's softhsm2 package installs the library.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

var (
	setupOnce sync.Once
	setupErr  error
	baseDir   string
	tokenSeq  atomic.Int64
)

// ModulePath is the SoftHSM library the fixtures use: $HSMBROKER_TEST_MODULE,
// else DefaultModule.
func ModulePath() string {
	if p := os.Getenv("HSMBROKER_TEST_MODULE"); p != "" {
		return p
	}
	return DefaultModule
}

// Main runs the tests of a package that uses hsmtest and removes the
// process's SoftHSM directory afterwards. Call it from TestMain. Tests
// about to run out of -test.timeout end with a digest of what is stuck
// (watchTimeout).
func Main(m *testing.M) {
	stop := watchTimeout()
	code := m.Run()
	stop()
	if baseDir != "" {
		_ = os.RemoveAll(baseDir)
	}
	os.Exit(code)
}

// RequireSoftHSM makes sure the SoftHSM library is present and configured
// for this process, and returns its path. Without it the test is skipped,
// except under CI=true, where a missing dependency fails the run.
func RequireSoftHSM(t testing.TB) string {
	t.Helper()
	mod := ModulePath()
	if _, err := os.Stat(mod); err != nil {
		gate.Missing(t, "SoftHSMv2 library %s is missing (apt-get install softhsm2): %v", mod, err)
	}
	setupOnce.Do(func() { setupErr = configure() })
	if setupErr != nil {
		t.Fatalf("configure SoftHSM: %v", setupErr)
	}
	return mod
}

// configure writes the process's softhsm2.conf and points SOFTHSM2_CONF at
// it, before anything loads the library.
func configure() error {
	dir, err := os.MkdirTemp("", "hsmbroker-softhsm-")
	if err != nil {
		return err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return err
	}
	baseDir = dir
	return os.Setenv("SOFTHSM2_CONF", conf)
}

// Token is a SoftHSM token made for one test.
type Token struct {
	Module string
	Label  string
	Serial string
	PIN    string // user PIN
	SOPIN  string // security officer PIN
}

// RandomPIN returns a fresh random PIN.
func RandomPIN() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NewToken initializes a fresh token with random PINs.
func NewToken(t testing.TB) Token {
	t.Helper()
	mod := RequireSoftHSM(t)
	label := fmt.Sprintf("t%d-%d", os.Getpid()%100000, tokenSeq.Add(1))
	tok := Token{Module: mod, Label: label, PIN: RandomPIN(), SOPIN: RandomPIN()}
	serial, err := hsm.InitToken(mod, label, tok.SOPIN, tok.PIN)
	if err != nil {
		t.Fatalf("init token: %v", err)
	}
	tok.Serial = serial
	return tok
}

// Config is the partition configuration for tok, with test-friendly
// timeouts.
func (tok Token) Config() hsm.Config {
	return hsm.Config{
		Module:      tok.Module,
		TokenLabel:  tok.Label,
		PIN:         tok.PIN,
		SessionWait: 5 * time.Second,
		CallTimeout: 20 * time.Second,
		Logger:      QuietLogger(),
	}
}

// Option adjusts a partition configuration.
type Option func(*hsm.Config)

// WithFaults injects faults from f.
func WithFaults(f *hsm.Faults) Option { return func(c *hsm.Config) { c.Faults = f } }

// WithConfig applies an arbitrary change.
func WithConfig(fn func(*hsm.Config)) Option { return Option(fn) }

// Open opens a partition on tok, closed when the test ends.
func Open(t testing.TB, tok Token, opts ...Option) *hsm.Partition {
	t.Helper()
	cfg := tok.Config()
	for _, o := range opts {
		o(&cfg)
	}
	p, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("open partition on token %s: %v", tok.Label, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// NewPartition makes a fresh token, opens it and creates a domain key: a
// partition ready to generate and use keys.
func NewPartition(t testing.TB, opts ...Option) *hsm.Partition {
	t.Helper()
	p := Open(t, NewToken(t), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.CreateDomainKey(ctx); err != nil {
		t.Fatalf("create domain key: %v", err)
	}
	return p
}

// SharedDomainPartitions returns n partitions, each on its own token, that
// share one domain key, transported HSM-to-HSM from the first to the others
// as a cluster join does.
func SharedDomainPartitions(t testing.TB, n int, opts ...Option) []*hsm.Partition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := NewPartition(t, opts...)
	out := []*hsm.Partition{first}
	for i := 1; i < n; i++ {
		p := Open(t, NewToken(t), opts...)
		pub, err := p.TransportKey(ctx)
		if err != nil {
			t.Fatalf("transport key: %v", err)
		}
		rk, err := hsm.ParseTransportPublicKey(pub)
		if err != nil {
			t.Fatalf("transport key: %v", err)
		}
		wrapped, mech, err := first.WrapDomainKeyFor(ctx, rk)
		if err != nil {
			t.Fatalf("wrap domain key: %v", err)
		}
		if err := p.ImportDomainKey(ctx, wrapped, mech); err != nil {
			t.Fatalf("import domain key: %v", err)
		}
		out = append(out, p)
	}
	return out
}

// Setup configures SoftHSM for this process outside a test (TestMain,
// benchmark set-up) and returns the library path.
func Setup() (string, error) {
	mod := ModulePath()
	if _, err := os.Stat(mod); err != nil {
		return "", fmt.Errorf("SoftHSMv2 library %s is missing (apt-get install softhsm2): %w", mod, err)
	}
	setupOnce.Do(func() { setupErr = configure() })
	return mod, setupErr
}

// QuietLogger drops everything below error level, so test output shows
// failures rather than routine events. HSMBROKER_TEST_LOG=debug shows all.
func QuietLogger() *slog.Logger {
	if os.Getenv("HSMBROKER_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// StorageDir is the directory in which SoftHSM keeps tok's objects, for
// tests that take a token's storage away under a running partition, as a
// lost disk or a replaced partition would.
func (tok Token) StorageDir(t testing.TB) string {
	t.Helper()
	if baseDir == "" {
		t.Fatal("SoftHSM is not configured for this process")
	}
	tokens := filepath.Join(baseDir, "tokens")
	dirs, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	// token.object holds the label padded with spaces to 32 bytes.
	label := []byte(fmt.Sprintf("%-32s", tok.Label))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(tokens, d.Name(), "token.object"))
		if err == nil && bytes.Contains(b, label) {
			return filepath.Join(tokens, d.Name())
		}
	}
	t.Fatalf("no SoftHSM token directory holds token %q", tok.Label)
	return ""
}
