package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/client/clienttest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestKeysCreateAndDescribe(t *testing.T) {
	e := newEnv(t)
	var k keyJSON
	e.okJSON(&k, "keys", "create", "--alias", "alias/payments", "--description", "card data", "--tag", "team=pay", "--tag", "env=prod")
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(k.KeyID) {
		t.Errorf("keyId %q", k.KeyID)
	}
	want := keyJSON{
		KeyID: k.KeyID, Arn: "arn:aws:kms:us-east-1:111122223333:key/" + k.KeyID, Aliases: []string{"alias/payments"},
		Description: "card data", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT", KeyState: "Enabled",
		CreateTime: k.CreateTime, CurrentVersion: 1, EncryptionAlgorithms: []string{"SYMMETRIC_DEFAULT"},
		Creator: k.Creator, Tags: map[string]string{"team": "pay", "env": "prod"},
	}
	if fmt.Sprint(k) != fmt.Sprint(want) {
		t.Errorf("created key\n got %+v\nwant %+v", k, want)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(k.CreateTime) {
		t.Errorf("createTime %q", k.CreateTime)
	}

	// The JSON output names its fields as scripts expect.
	raw := e.ok("keys", "describe", "alias/payments", "-o", "json")
	for _, field := range []string{`"keyId"`, `"arn"`, `"aliases"`, `"keySpec"`, `"keyUsage"`, `"keyState"`, `"createTime"`, `"tags"`} {
		if !strings.Contains(raw, field) {
			t.Errorf("describe -o json lacks %s:\n%s", field, raw)
		}
	}

	text := e.ok("keys", "describe", k.KeyID)
	for _, line := range []string{
		"KeyId:                 " + k.KeyID,
		"Aliases:               alias/payments",
		"Description:           card data",
		"KeySpec:               SYMMETRIC_DEFAULT",
		"KeyState:              Enabled",
		"CurrentVersion:        1",
		"EncryptionAlgorithms:  SYMMETRIC_DEFAULT",
		"Tags:                  env=prod, team=pay",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("describe text lacks %q:\n%s", line, text)
		}
	}
	if strings.Contains(text, "DeletionDate") || strings.Contains(text, "SigningAlgorithms") {
		t.Errorf("describe text shows empty fields:\n%s", text)
	}

	var ec keyJSON
	e.okJSON(&ec, "keys", "create", "--alias", "alias/sig", "--spec", "ecc_nist_p256")
	if ec.KeySpec != "ECC_NIST_P256" || ec.KeyUsage != "SIGN_VERIFY" || strings.Join(ec.SigningAlgorithms, ",") != "ECDSA_SHA_256" {
		t.Errorf("ECC key %+v", ec)
	}
}

func TestKeysList(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 3 {
		ids = append(ids, e.createKey(fmt.Sprintf("alias/k%d", i)))
	}
	var page struct {
		Keys          []keyJSON `json:"keys"`
		NextPageToken string    `json:"nextPageToken"`
	}
	e.okJSON(&page, "keys", "list", "--limit", "2")
	if len(page.Keys) != 2 || page.NextPageToken == "" {
		t.Fatalf("first page: %d keys, token %q", len(page.Keys), page.NextPageToken)
	}
	first := page.NextPageToken
	page.NextPageToken = ""
	e.okJSON(&page, "keys", "list", "--limit", "2", "--page-token", first)
	if len(page.Keys) != 1 || page.NextPageToken != "" {
		t.Fatalf("second page: %d keys, token %q", len(page.Keys), page.NextPageToken)
	}
	e.okJSON(&page, "keys", "list", "--limit", "1", "--all")
	if len(page.Keys) != 3 || page.NextPageToken != "" {
		t.Fatalf("--all: %d keys, token %q", len(page.Keys), page.NextPageToken)
	}
	slices.Sort(ids)
	for i, k := range page.Keys {
		if k.KeyID != ids[i] {
			t.Errorf("--all: key %d is %s, want %s (ordered by key id)", i, k.KeyID, ids[i])
		}
	}

	r := e.run("keys", "list", "--limit", "2")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "KEY ID") || !strings.Contains(lines[1], "Enabled") {
		t.Fatalf("text list:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "More keys follow: add --all, or --page-token "+first) {
		t.Errorf("no hint about the next page: %q", r.stderr)
	}

	empty := newEnv(t)
	var none struct {
		Keys []keyJSON `json:"keys"`
	}
	if out := empty.ok("keys", "list", "-o", "json"); !strings.Contains(out, `"keys": []`) {
		t.Errorf("empty list is not an empty array: %s", out)
	}
	empty.okJSON(&none, "keys", "list")
}

func TestKeysLifecycle(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/life")

	if out := e.ok("keys", "disable", id); out != "Key "+id+" is Disabled\n" {
		t.Errorf("disable: %q", out)
	}
	var st map[string]string
	e.okJSON(&st, "keys", "enable", id)
	if st["keyId"] != id || st["keyState"] != "Enabled" {
		t.Errorf("enable: %v", st)
	}

	var rot struct {
		KeyID   string `json:"keyId"`
		Version int    `json:"version"`
	}
	e.okJSON(&rot, "keys", "rotate", id)
	if rot.KeyID != id || rot.Version != 2 {
		t.Errorf("rotate: %+v", rot)
	}
	if out := e.ok("keys", "rotate", id); out != "Key "+id+" rotated: version 3 is current\n" {
		t.Errorf("rotate text: %q", out)
	}
	var vers struct {
		Versions []struct {
			Version int  `json:"version"`
			Current bool `json:"current"`
		} `json:"versions"`
	}
	e.okJSON(&vers, "keys", "versions", "alias/life")
	if len(vers.Versions) != 3 || !vers.Versions[2].Current || vers.Versions[0].Current {
		t.Errorf("versions: %+v", vers)
	}
	if out := e.ok("keys", "versions", id); !regexp.MustCompile(`(?m)^3\s+\S+Z\s+\*$`).MatchString(out) {
		t.Errorf("versions text:\n%s", out)
	}

	var del map[string]any
	e.okJSON(&del, "keys", "schedule-deletion", id, "--days", "7")
	if del["keyState"] != "PendingDeletion" || del["pendingWindowDays"] != float64(7) || del["deletionDate"] == "" {
		t.Errorf("schedule-deletion: %v", del)
	}
	e.fails(1, "hsmctl: key "+id+" is already pending deletion (on ", "keys", "schedule-deletion", id)
	e.fails(1, "(KMSInvalidStateException)", "keys", "enable", id)
	if out := e.ok("keys", "cancel-deletion", id); !strings.Contains(out, "the key is Disabled") {
		t.Errorf("cancel-deletion: %q", out)
	}
	e.fails(2, "--days must be 7 to 30", "keys", "schedule-deletion", id, "--days", "3")

	e.ok("keys", "update-description", id, "new words")
	var k keyJSON
	e.okJSON(&k, "keys", "describe", id)
	if k.Description != "new words" || k.KeyState != "Disabled" {
		t.Errorf("after update-description: %+v", k)
	}
}

func TestKeysTags(t *testing.T) {
	e := newEnv(t)
	id := e.createKey("alias/tagged", "--tag", "a=1")
	if out := e.ok("keys", "tag", id, "b=2", "c="); out != "Key "+id+" tagged: b=2, c=\n" {
		t.Errorf("tag: %q", out)
	}
	e.ok("keys", "untag", id, "a", "nonexistent")
	var tags struct {
		KeyID string            `json:"keyId"`
		Tags  map[string]string `json:"tags"`
	}
	e.okJSON(&tags, "keys", "tags", "alias/tagged")
	if tags.KeyID != id || len(tags.Tags) != 2 || tags.Tags["b"] != "2" || tags.Tags["c"] != "" {
		t.Errorf("tags: %+v", tags)
	}
	if out := e.ok("keys", "tags", id); out != "KEY  VALUE\nb    2\nc    \n" {
		t.Errorf("tags text: %q", out)
	}
	e.fails(1, `invalid Tags: tag keys starting with "aws:" are reserved (ValidationException)`, "keys", "tag", id, "aws:x=1")
	e.fails(2, `invalid tag "b"`, "keys", "tag", id, "b")
	e.fails(2, "needs at least 2 argument(s)", "keys", "untag", id)
}

func TestAliases(t *testing.T) {
	e := newEnv(t)
	k1 := e.createKey("alias/one")
	k2 := e.createKey("alias/two")
	var al aliasJSON
	e.okJSON(&al, "aliases", "create", "alias/extra", k1)
	if al.AliasName != "alias/extra" || al.TargetKeyID != k1 || al.AliasArn != "arn:aws:kms:us-east-1:111122223333:alias/extra" {
		t.Errorf("create: %+v", al)
	}
	e.fails(1, "hsmctl: alias alias/extra already exists (AlreadyExistsException)", "aliases", "create", "alias/extra", k2)
	e.fails(1, `invalid AliasName: the "alias/aws/" prefix is reserved (ValidationException)`, "aliases", "create", "alias/aws/mine", k2)

	if out := e.ok("aliases", "update", "alias/extra", k2); !strings.Contains(out, "TargetKeyId:  "+k2) {
		t.Errorf("update text:\n%s", out)
	}
	var list struct {
		Aliases []aliasJSON `json:"aliases"`
	}
	e.okJSON(&list, "aliases", "list", "--key", k2)
	if len(list.Aliases) != 2 || list.Aliases[0].AliasName != "alias/extra" || list.Aliases[1].AliasName != "alias/two" {
		t.Errorf("list --key: %+v", list)
	}
	out := e.ok("aliases", "list")
	if !strings.HasPrefix(out, "ALIAS") || strings.Count(out, "\n") != 4 {
		t.Errorf("list text:\n%s", out)
	}
	if out := e.ok("aliases", "delete", "alias/extra"); out != "Alias alias/extra deleted\n" {
		t.Errorf("delete: %q", out)
	}
	e.fails(1, "(NotFoundException)", "aliases", "delete", "alias/extra")
}

// TestUsageErrors checks that bad command lines exit with status 2 and say
// what is wrong, before any call.
func TestUsageErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "hsmctl"`},
		{[]string{"keys", "bogus"}, `unknown command "bogus" for "hsmctl keys"`},
		{[]string{"keys", "list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"keys", "describe"}, "needs 1 argument(s) (KEY), got 0"},
		{[]string{"keys", "describe", "a", "b"}, "needs 1 argument(s) (KEY), got 2"},
		{[]string{"keys", "describe", ""}, "KEY must not be empty"},
		{[]string{"keys", "create"}, "--alias is required"},
		{[]string{"keys", "create", "--alias", "alias/x", "--spec", "AES"}, `invalid --spec "AES": valid values are SYMMETRIC_DEFAULT, RSA_2048`},
		{[]string{"keys", "create", "--alias", "alias/x", "--usage", "SIGN"}, "valid values are ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC"},
		{[]string{"keys", "create", "--alias", "alias/x", "--tag", "novalue"}, `invalid --tag "novalue"`},
		{[]string{"keys", "list", "-o", "yaml"}, `invalid --output "yaml": valid values are text, json`},
		{[]string{"keys", "list", "--limit", "5000"}, "--limit must be 1 to 1000, got 5000"},
		{[]string{"keys", "list", "--limit", "0"}, "--limit must be 1 to 1000, got 0"},
		{[]string{"aliases", "list", "--limit", "0"}, "--limit must be 1 to 1000, got 0"},
		{[]string{"aliases", "list", "--limit", "1001"}, "--limit must be 1 to 1000, got 1001"},
		{[]string{"aliases", "list", "--limit", "-1"}, "--limit must be 1 to 1000, got -1"},
		{[]string{"keys", "list", "--limit", "x"}, `invalid argument "x" for "--limit"`},
		{[]string{"aliases", "create", "alias/x"}, "needs 2 argument(s) (alias/NAME KEY), got 1"},
		{[]string{"encrypt"}, "--key is required"},
		{[]string{"encrypt", "--key", "k", "--algorithm", "AES"}, "valid values are SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256"},
		{[]string{"encrypt", "--key", "k", "--context", "x"}, `invalid --context "x": want KEY=VALUE`},
		{[]string{"datakey", "--key", "k", "--spec", "AES_256", "--bytes", "16"}, "give --spec or --bytes, not both"},
		{[]string{"datakey", "--key", "k", "--bytes", "0"}, "--bytes must be 1 to 1024"},
		{[]string{"datakey", "--key", "k", "--spec", "AES_64"}, "valid values are AES_256, AES_128"},
		{[]string{"sign", "--key", "k"}, "--algorithm is required: one of RSASSA_PSS_SHA_256"},
		{[]string{"sign", "--key", "k", "--algorithm", "PSS"}, `invalid --algorithm "PSS"`},
		{[]string{"verify", "--key", "k", "--algorithm", "ECDSA_SHA_256"}, "--signature is required"},
		{[]string{"mac", "--key", "k", "--algorithm", "SHA256"}, "valid values are HMAC_SHA_256, HMAC_SHA_384, HMAC_SHA_512"},
		{[]string{"verify-mac", "--key", "k", "--algorithm", "HMAC_SHA_256"}, "--mac is required"},
		{[]string{"random"}, "--bytes is required"},
		{[]string{"random", "--bytes", "1025"}, "--bytes must be 1 to 1024"},
		{[]string{"pubkey"}, "needs 1 argument(s) (KEY)"},
		{[]string{"encrypt-file", "--key", "k", "--in", "x"}, "--out is required"},
		{[]string{"decrypt-file", "--out", "x"}, "--in is required"},
		{[]string{"keys", "list", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"grants", "create", "--key", "k", "--grantee", "g", "--operations", "Decrypt", "--context-subset", "a=b", "--context-equals", "c=d"},
			"give --context-subset or --context-equals, not both"},
		{[]string{"decrypt", "--algorithm", "RSAES_OAEP_SHA_1"}, "--key is required with --algorithm RSAES_OAEP_SHA_1: RSA ciphertext does not name its key"},
		{[]string{"decrypt", "--algorithm", "rsaes_oaep_sha_256", "--in", "x"}, "--key is required with --algorithm RSAES_OAEP_SHA_256"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := e.run(tt.args...)
			if r.code != exitUsage || !strings.HasPrefix(r.stderr, "hsmctl: ") || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help' for usage.") {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
	if calls := e.srv.Calls(); len(calls) != 0 {
		t.Errorf("usage errors made %d calls", len(calls))
	}
}

func TestHelp(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{"--help"}, {}, {"keys"}, {"keys", "create", "--help"}, {"help", "encrypt-file"}} {
		r := e.run(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("hsmctl %v: exit %d\n%s", args, r.code, r.stdout)
		}
	}
	r := e.run("keys", "create", "--help")
	if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "SYMMETRIC_DEFAULT, RSA_2048") {
		t.Errorf("keys create --help lacks examples or valid specs:\n%s", r.stdout)
	}
}

func TestErrorFormatting(t *testing.T) {
	broker := clienttest.Error(codes.NotFound, "NotFoundException", "key 1234 does not exist")
	tests := []struct {
		err  error
		want string
	}{
		{broker, "hsmctl: key 1234 does not exist (NotFoundException)"},
		{fmt.Errorf("client: decrypt data key: %w", broker), "hsmctl: decrypt data key: key 1234 does not exist (NotFoundException)"},
		{status.Error(codes.Unavailable, "connection refused"), "hsmctl: connection refused (Unavailable)"},
		{errors.New("open x: no such file or directory"), "hsmctl: open x: no such file or directory"},
	}
	for _, tt := range tests {
		if got := formatError(tt.err); got != tt.want {
			t.Errorf("formatError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}

	e := newEnv(t)
	r := e.fails(1, "hsmctl: alias alias/none does not exist (NotFoundException)\n", "keys", "describe", "alias/none")
	if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("error output: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = e.fails(1, "(NotFoundException)", "keys", "describe", "alias/none", "-v")
	if !regexp.MustCompile(`hsmctl: request id [0-9a-f]{32}, answered by the broker at 127\.0\.0\.1:\d+\n`).MatchString(r.stderr) {
		t.Errorf("--verbose: %q", r.stderr)
	}
}

func TestConnectionSettings(t *testing.T) {
	e := newEnv(t)
	p := e.srv.PKI
	run := func(args ...string) result {
		var stdout, stderr bytes.Buffer
		code := runWith(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
		return result{stdout.String(), stderr.String(), code}
	}

	// The environment alone.
	t.Setenv("HSMBROKER_ADDR", e.srv.Addr)
	t.Setenv("HSMBROKER_CA", p.CAFile)
	t.Setenv("HSMBROKER_CERT", p.CertFile)
	t.Setenv("HSMBROKER_KEY", p.KeyFile)
	if r := run("random", "--bytes", "4", "--base64"); r.code != 0 {
		t.Fatalf("from the environment: %+v", r)
	}

	// Flags win over the environment; --key is the TLS key where no KMS key is named.
	t.Setenv("HSMBROKER_ADDR", "127.0.0.1:1")
	t.Setenv("HSMBROKER_KEY", "/nonexistent")
	if r := run("keys", "list", "--addr", "127.0.0.1:1,"+e.srv.Addr, "--key", p.KeyFile); r.code != 0 {
		t.Fatalf("flags over the environment, with a dead endpoint first: %+v", r)
	}
	if r := run("encrypt", "--key", "alias/x", "--addr", e.srv.Addr); r.code != 1 || !strings.Contains(r.stderr, "/nonexistent") {
		t.Fatalf("on encrypt --key is the KMS key, so the TLS key comes from the environment: %+v", r)
	}

	t.Setenv("HSMBROKER_ADDR", "")
	t.Setenv("HSMBROKER_KEY", p.KeyFile)
	if r := run("keys", "list"); r.code != exitUsage || !strings.HasPrefix(r.stderr, "hsmctl: no broker address: give --addr host:port") {
		t.Fatalf("no address: %+v", r)
	}
	if r := run("keys", "list", "--addr", "127.0.0.1:1", "--timeout", "1s"); r.code != 1 || !strings.Contains(r.stderr, "(Unavailable; retry, or check --addr)") {
		t.Fatalf("nothing listening: %+v", r)
	}
}
