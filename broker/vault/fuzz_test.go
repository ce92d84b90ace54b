package vault_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/vault"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// FuzzRequest hands the endpoint arbitrary request lines and tokens, parsed
// as net/http's server parses them, on a real broker, and holds every
// answer to what the endpoint promises:
//   - a status from its documented set, never 500, always with a JSON body,
//     Content-Type application/json and Cache-Control no-store;
//   - key material only in a 200, only for a GET with the one token allowed
//     to read, and only the material of the key the decoded path names; the
//     mount check (tune) for any valid token, and without material;
//   - no material, of any key, in any other answer.
func FuzzRequest(f *testing.F) {
	ke := newKeyEnv(f) // key "1" and admin's token
	e, admin := ke.env, ke.token
	ctx := context.Background()
	if _, err := e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "2", Bytes: 16}); err != nil {
		f.Fatal(err)
	}
	// "db" has a token but no grant on the mount's KMS key: refused.
	db, err := e.tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "db"})
	if err != nil {
		f.Fatal(err)
	}
	material := map[string]string{} // decoded path -> hex material
	for _, name := range []string{"1", "2"} {
		m, _ := e.read("/v1/tde/data/"+name, admin)
		material["/v1/tde/data/"+name] = hex.EncodeToString(m)
	}
	const tune = "/v1/sys/mounts/tde/tune"
	// shown is a body fit for a failure message: never one with material.
	shown := func(body []byte) string {
		for _, m := range material {
			if bytes.Contains(body, []byte(m)) {
				return "(a body holding key material, not shown)"
			}
		}
		return string(body)
	}

	h := vault.New(e.c.Nodes[0].Service.TDE(), hsmtest.QuietLogger())
	// token picks the X-Vault-Token header: 0 none, 1 admin's, 2 db's, 3 raw.
	tokens := func(sel uint8, raw string) string {
		switch sel % 4 {
		case 1:
			return admin
		case 2:
			return db.GetToken()
		case 3:
			return raw
		}
		return ""
	}
	for _, s := range []struct {
		method, target string
		token          uint8
		raw            string
	}{
		{"GET", "/v1/tde/data/1", 1, ""},
		{"GET", "/v1/tde/data/2?version=1", 1, ""},
		{"GET", "/v1/tde/data/1?version=2", 1, ""},
		{"GET", tune, 1, ""},
		{"GET", "/v1/tde/data/%31", 1, ""},
		{"GET", "/v1/tde/data/1", 2, ""},
		{"GET", tune, 2, ""},
		{"GET", "/v1/tde/data/1", 3, "hbt.guess"},
		{"PUT", "/v1/tde/data/1", 1, ""},
		{"GET", "/v1/tde/data/1?version=1&version=1", 1, ""},
		{"GET", "/v1/other/data/1", 1, ""},
		{"GET", "/v1/tde/metadata/1", 1, ""},
		{"GET", "http://vault/v1/tde/data/1", 1, ""},
		{"GET", "/v1/tde/data/" + strings.Repeat("a", 1100), 1, ""},
		{"GET", "/v1/tde/data/1/x", 1, ""},
		{"GET", "/v1/tde/data/1/", 1, ""},
		{"GET", "/v1/tde/x/data/1", 1, ""},
		{"GET", "/v1//data/1", 1, ""},
		{"GET", "/v1/tde/data/..%2F1", 1, ""},
		{"GET", tune + "/", 1, ""},
	} {
		f.Add(s.method, s.target, s.token, s.raw)
	}
	f.Fuzz(func(t *testing.T, method, target string, tokenSel uint8, raw string) {
		token := tokens(tokenSel, raw)
		if strings.ContainsAny(method+target+token, "\r\n") || len(target) > 8<<10 || len(token) > 8<<10 {
			return // not one request line and header
		}
		text := method + " " + target + " HTTP/1.1\r\nHost: vault\r\n"
		if token != "" {
			text += vault.TokenHeader + ": " + token + "\r\n"
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(text + "\r\n")))
		if err != nil {
			return // net/http's server answers 400 before any handler runs
		}
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		code, body := rec.Code, rec.Body.Bytes()
		switch code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound,
			http.StatusMethodNotAllowed, http.StatusRequestURITooLong:
		default:
			t.Fatalf("%s %q: status %d: %s", method, target, code, shown(body))
		}
		if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
			t.Fatalf("%s %q: Content-Type %q, Cache-Control %q", method, target, ct, cc)
		}
		var answer struct {
			Errors []string `json:"errors"`
			Data   struct {
				Data struct {
					Data string `json:"data"`
				} `json:"data"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			t.Fatalf("%s %q: answer is not JSON (%v): %s", method, target, err, shown(body))
		}
		if code != http.StatusOK {
			for path, m := range material {
				if bytes.Contains(body, []byte(m)) {
					t.Fatalf("%s %q: status %d carries the material of %s", method, target, code, path)
				}
			}
			return
		}
		want, isKey := material[req.URL.Path]
		// The mount check answers any valid token (the plugin's start-up
		// call); a key only a principal allowed to decrypt with the mount's
		// KMS key.
		allowed := token == admin || !isKey && token == db.GetToken()
		if method != http.MethodGet || !allowed {
			t.Fatalf("%s %q with token selector %d: 200, want a refusal", method, target, tokenSel%4)
		}
		if !isKey && req.URL.Path != tune {
			t.Fatalf("GET %q (path %q): 200 for no key this broker holds", target, req.URL.Path)
		}
		if got := answer.Data.Data.Data; got != want {
			t.Fatalf("GET %q (path %q): other material than the key's", target, req.URL.Path)
		}
		for path, m := range material {
			if path != req.URL.Path && bytes.Contains(body, []byte(m)) {
				t.Fatalf("GET %q (path %q) carries the material of %s too", target, req.URL.Path, path)
			}
		}
	})
}
