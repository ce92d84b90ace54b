package vault_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/vault"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// BenchmarkTDERead measures one key read as MariaDB makes it (HTTP GET with
// X-Vault-Token over loopback, one connection kept alive) against the same
// read made by calling the core directly, in the same run: p50 of each and
// their ratio. Each read authenticates the token, authorizes, writes an
// audit line and unwraps the version in SoftHSM.
func BenchmarkTDERead(b *testing.B) {
	e := newKeyEnv(b)
	ctx := context.Background()
	svc := e.c.Nodes[0].Service.TDE()
	in := broker.TDERequest{Token: e.token, Mount: "tde", Name: "1"}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/tde/data/1", nil)
	req.Header.Set(vault.TokenHeader, e.token)
	client := e.srv.Client()
	httpRead := func() {
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("read: %v %v", err, resp)
		}
		_, _ = resp.Body.Read(make([]byte, 512))
		resp.Body.Close()
	}
	coreRead := func() {
		m, err := svc.ReadKey(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		clear(m.Material)
	}
	var viaHTTP, direct []time.Duration
	b.ResetTimer()
	timed := func(f func()) time.Duration {
		t0 := time.Now()
		f()
		return time.Since(t0)
	}
	for i := 0; i < b.N; i++ {
		// The sides swap order every iteration, so neither always runs
		// right after the other has warmed a cache.
		if i%2 == 0 {
			viaHTTP = append(viaHTTP, timed(httpRead))
			direct = append(direct, timed(coreRead))
		} else {
			direct = append(direct, timed(coreRead))
			viaHTTP = append(viaHTTP, timed(httpRead))
		}
	}
	b.StopTimer()
	p50 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	h, c := p50(viaHTTP), p50(direct)
	b.ReportMetric(float64(h.Microseconds()), "http-p50-µs")
	b.ReportMetric(float64(c.Microseconds()), "core-p50-µs")
	b.ReportMetric(float64(h)/float64(c), "http/core")
}

// keyEnv is an env with TDE key "1" and an admin's token.
type keyEnv struct {
	*env
	token string
}

func newKeyEnv(tb testing.TB) keyEnv {
	e := newEnvTB(tb)
	ctx := context.Background()
	if _, err := e.tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "1"}); err != nil {
		tb.Fatal(err)
	}
	tok, err := e.tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "admin"})
	if err != nil {
		tb.Fatal(err)
	}
	return keyEnv{env: e, token: tok.GetToken()}
}
