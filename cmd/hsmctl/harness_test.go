package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/client/clienttest"
)

// env is a fake broker and a way to run hsmctl against it in-process.
// Tests of the real daemon point run at it the same way, with its address
// and certificate files.
type env struct {
	t   *testing.T
	srv *clienttest.Server
	dir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, srv: clienttest.NewServer(t), dir: t.TempDir()}
}

// connFlags are the flags that reach the fake broker. --tls-key rather
// than --key, because on commands that name a KMS key --key is that key.
func (e *env) connFlags() []string {
	p := e.srv.PKI
	return []string{"--addr", e.srv.Addr, "--ca", p.CAFile, "--cert", p.CertFile, "--tls-key", p.KeyFile}
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn("", args...)
}

func (e *env) runIn(stdin string, args ...string) result {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	code := runWith(context.Background(), append(args, e.connFlags()...), strings.NewReader(stdin), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

// ok runs a command that must succeed and returns its stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("hsmctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// okJSON runs a command with -o json and decodes its output into v.
func (e *env) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("hsmctl %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs a command that must fail with the exit status and a stderr
// containing want.
func (e *env) fails(code int, want string, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		e.t.Fatalf("hsmctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
	return r
}

// createKey makes a key and returns its id.
func (e *env) createKey(alias string, extra ...string) string {
	e.t.Helper()
	var k keyJSON
	e.okJSON(&k, append([]string{"keys", "create", "--alias", alias}, extra...)...)
	if k.KeyID == "" {
		e.t.Fatal("no keyId")
	}
	return k.KeyID
}
