package vault_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/vault"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// readIndexServed is how many ReadIndex calls the process's gRPC servers
// have answered (only a leader answers them).
func readIndexServed(t *testing.T) float64 {
	return hsmtest.Gathered(t, "hsmbroker_requests_total", map[string]string{"method": "ReadIndex"})
}

// followerEndpoint starts a cluster of three (with audit logs if audited),
// makes TDE key 1 of mount tde through the leader, and serves a follower's
// TDE key endpoint. It returns the leader's TDE service, as admin.
func followerEndpoint(t *testing.T, audited bool) (pb.TDEServiceClient, *httptest.Server) {
	t.Helper()
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = audited
	for range 3 {
		c.AddNode()
	}
	leader, follower := c.Leader(t), c.Followers(t)[0]
	conn := c.Dial(leader.Index, "admin")
	keys, tde := pb.NewKeyServiceClient(conn), pb.NewTDEServiceClient(conn)
	ctx := context.Background()
	if _, err := keys.CreateKey(ctx, &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT,
		KeyUsage: pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, AliasName: "alias/tde"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tde.CreateKey(ctx, &pb.TDEServiceCreateKeyRequest{Name: "1"}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(vault.New(follower.Service.TDE(), hsmtest.QuietLogger()))
	t.Cleanup(srv.Close)
	return tde, srv
}

// TestMadeUpTokensOnFollowerBoundLeaderRoundTrips: a follower that does
// not know a token asks the leader before refusing it, so that a token
// issued through another node a moment ago works. Before, every made-up
// token cost the leader a ReadIndex (a quorum check and an audit line):
// 7,805 of them in 3 s, and 3.5 MB of the leader's audit log, from a client
// with no credentials. Now those rounds are shared and start at most every
// 100 ms, and a token issued through the leader during the flood still
// reads on the follower.
func TestMadeUpTokensOnFollowerBoundLeaderRoundTrips(t *testing.T) {
	tde, srv := followerEndpoint(t, true)
	ctx := context.Background()
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/tde/data/1", nil)
		req.Header.Set(vault.TokenHeader, token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	before := readIndexServed(t)
	start := time.Now()
	floodCtx, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	var refused, other atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for floodCtx.Err() == nil {
				b := make([]byte, 32)
				_, _ = rand.Read(b)
				if get("hbt."+base64.RawURLEncoding.EncodeToString(b)) == http.StatusForbidden {
					refused.Add(1)
				} else {
					other.Add(1)
				}
			}
		})
	}
	// During the flood, a token issued through the leader reads on the
	// follower at once.
	time.Sleep(500 * time.Millisecond)
	tok, err := tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if code := get(tok.GetToken()); code != http.StatusOK {
		t.Errorf("a token issued through the leader got %d on the follower during the flood, want 200", code)
	}
	wg.Wait()
	elapsed := time.Since(start)
	rounds := readIndexServed(t) - before
	if other.Load() != 0 || refused.Load() == 0 {
		t.Fatalf("%d made-up tokens refused, %d answered otherwise", refused.Load(), other.Load())
	}
	// One round per 100 ms, and a few from the cluster's own work.
	if limit := elapsed.Seconds()/0.1 + 10; rounds > limit {
		t.Errorf("%d made-up tokens on a follower in %v cost the leader %.0f ReadIndex calls, want at most %.0f",
			refused.Load(), elapsed.Round(time.Millisecond), rounds, limit)
	}
	t.Logf("%d made-up tokens refused in %v; the leader answered %.0f ReadIndex calls", refused.Load(), elapsed.Round(time.Millisecond), rounds)
}

// TestFollowerServesAVersionJustRotated: MariaDB asks for a key's latest
// version and then for that version, and behind one name the two requests
// can reach different nodes. A follower asked for a version the leader
// committed a moment ago catches up with the leader rather than answer 404
// ("no such version"), which fails a MariaDB start or a page read.
func TestFollowerServesAVersionJustRotated(t *testing.T) {
	tde, srv := followerEndpoint(t, false)
	ctx := context.Background()
	tok, err := tde.IssueToken(ctx, &pb.TDEServiceIssueTokenRequest{Principal: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		r, err := tde.RotateKey(ctx, &pb.TDEServiceRotateKeyRequest{Name: "1"})
		if err != nil {
			t.Fatal(err)
		}
		// At once, as a client that read "latest" from the leader would.
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/tde/data/1?version=%d", srv.URL, r.GetKey().GetCurrentVersion()), nil)
		req.Header.Set(vault.TokenHeader, tok.GetToken())
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("version %d, just rotated through the leader, on the follower: %d %s; want 200", r.GetKey().GetCurrentVersion(), resp.StatusCode, body)
		}
	}
}
