package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/config"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// devNode starts `hsmbrokerd dev` in a new data directory and returns it
// and its addresses: gRPC, Raft, metrics, AWS KMS, TDE, KMIP.
func devNode(t *testing.T) (*proc, []string) {
	t.Helper()
	module := requireSoftHSM(t)
	buildBinary(t)
	var addrs []string
	p := startDev(t, module, filepath.Join(t.TempDir(), "data"), &addrs)
	return p, addrs
}

// TestServersDropSilentConnections: a client that connects to any of the
// node's ports and sends nothing is disconnected by the node (gRPC and
// Raft at their 10 s handshake bound, the HTTP servers at their 5 s header
// bound), and the metrics server holds at most metricsLimits.MaxConns
// connections at once, closing the one idle the longest for a new client.
// Before these bounds a
// silent connection held a file descriptor for 2 minutes (gRPC) or as
// long as the client liked (Raft; metrics keep-alives), and enough of them
// took the node to its descriptor limit.
func TestServersDropSilentConnections(t *testing.T) {
	t.Parallel()
	_, addrs := devNode(t)

	var wg sync.WaitGroup
	for i, name := range []string{"gRPC", "Raft", "metrics", "AWS KMS", "TDE key endpoint", "KMIP"} {
		c, err := net.Dial("tcp", addrs[i])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(40 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s kept a silent connection open for 40 s (%v)", name, err)
			}
		})
	}

	// Keep-alive connections to the metrics server, each after one answer.
	metrics := addrs[2]
	healthz := func(c net.Conn, d time.Duration) error {
		_ = c.SetDeadline(time.Now().Add(d))
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	var held []net.Conn
	for i := range metricsLimits.MaxConns {
		c, err := net.Dial("tcp", metrics)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := healthz(c, 20*time.Second); err != nil {
			t.Fatalf("metrics connection %d of %d: %v", i+1, metricsLimits.MaxConns, err)
		}
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", metrics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { extra.Close() })
	// Every slot is held by a connection idle after its answer: the next
	// client is served, and the connection idle the longest is closed for
	// it, so that idle keep-alives cannot keep a probe out.
	if err := healthz(extra, 20*time.Second); err != nil {
		t.Fatalf("metrics connection %d not served while %d idle ones held every slot: %v", metricsLimits.MaxConns+1, metricsLimits.MaxConns, err)
	}
	_ = held[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := held[0].Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the metrics connection idle the longest was not closed for a new client: %v", err)
	}
	wg.Wait()
}

// TestEndpointListenersBound: the AWS KMS and TDE key endpoints' listeners
// accept at most their limits' MaxConns connections at once.
func TestEndpointListenersBound(t *testing.T) {
	t.Parallel()
	vault, err := newVaultEndpoint("127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	kms := &kmsEndpoint{cfg: config.KMS{Addr: "127.0.0.1:0"}, limits: kmsLimits}
	// One address may hold a quarter of each endpoint's connections
	// (netlimit's TestListenerBoundsConnectionsPerSource shows the
	// listener keeping to it).
	for name, l := range map[string]netlimit.Limits{"TDE key endpoint": vault.limits, "AWS KMS": kms.limits} {
		if l.MaxConnsPerSource != netlimit.DefaultMaxConns/4 {
			t.Errorf("%s: %d connections per source address, want %d", name, l.MaxConnsPerSource, netlimit.DefaultMaxConns/4)
		}
	}
	for name, listen := range map[string]func() (net.Listener, error){
		"TDE key endpoint": func() (net.Listener, error) { vault.limits.MaxConns = 2; return vault.listen() },
		"AWS KMS":          func() (net.Listener, error) { kms.limits.MaxConns = 2; return kms.listen() },
	} {
		lis, err := listen()
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan net.Conn, 3)
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		for range 3 {
			c, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		first := <-accepted
		<-accepted
		select {
		case <-accepted:
			t.Fatalf("%s: a third connection accepted with MaxConns 2", name)
		case <-time.After(300 * time.Millisecond):
		}
		first.Close()
		select {
		case c := <-accepted:
			c.Close()
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the third connection not accepted once a slot was free", name)
		}
		lis.Close()
	}
}

// TestUnauthenticatedClientsBoundLogLines: connections and requests that
// prove no identity cost the node's log a bounded number of lines. Before
// the bound each garbage connection to the Raft or KMIP port, and each
// request with a made-up AWS signature or TDE token, wrote a line of its
// own (Raft's at ERROR), as fast as a client could send them. Now the
// first netlimit.LogLineBurst of each kind are written, then
// netlimit.LogLinesPerSecond, and one summary line counts the others; the
// node writes it on shutdown at the latest.
func TestUnauthenticatedClientsBoundLogLines(t *testing.T) {
	t.Parallel()
	p, addrs := devNode(t)
	before := len(p.out.String())

	const n = 150
	start := time.Now()
	garbage := func(addr string) {
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write([]byte("\x16\x03\x01\x00\x05not TLS at all\r\n\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("%s did not close a garbage connection: %v", addr, err)
			}
			c.Close()
		}
	}
	garbage(addrs[1]) // Raft
	garbage(addrs[5]) // KMIP
	for range n {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addrs[3]+"/", strings.NewReader("{}"))
		req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIANOBODY/20261206/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-target, Signature=00")
		checkStatus(t, req, http.StatusBadRequest)
		req, _ = http.NewRequest(http.MethodGet, "http://"+addrs[4]+"/v1/tde/data/1", nil)
		req.Header.Set("X-Vault-Token", "made-up")
		checkStatus(t, req, http.StatusForbidden)
	}
	elapsed := time.Since(start)
	p.stop(t)

	out := p.out.String()[before:]
	maxLines := netlimit.LogLineBurst + int(elapsed.Seconds()+1)*netlimit.LogLinesPerSecond
	for _, c := range []struct{ line, event string }{
		{`msg="Raft connection refused: TLS handshake failed"`, "Raft TLS handshake failed"},
		{`msg="KMIP TLS handshake failed"`, "KMIP TLS handshake failed"},
		{`msg="kms request" front=aws operation="" principal=""`, "request refused before it proved an identity"},
		{`msg="TDE key read refused"`, "TDE key read refused: no valid token"},
	} {
		lines := strings.Count(out, c.line)
		leftOut := 0
		for _, m := range regexp.MustCompile(`event="`+regexp.QuoteMeta(c.event)+`" left_out=(\d+)`).FindAllStringSubmatch(out, -1) {
			k, _ := strconv.Atoi(m[1])
			leftOut += k
		}
		if lines > maxLines {
			t.Errorf("%s: %d lines for %d events in %v, want at most %d", c.event, lines, n, elapsed.Round(time.Millisecond), maxLines)
		}
		if lines+leftOut != n {
			t.Errorf("%s: %d lines and %d left out in summaries, want %d in all", c.event, lines, leftOut, n)
		}
	}
	if strings.Contains(out, "failed to decode incoming command") {
		t.Error("raft logged a garbage connection at ERROR")
	}
}

// checkStatus sends req and requires the status.
func checkStatus(t *testing.T, req *http.Request, want int) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d", req.Method, req.URL, resp.StatusCode, want)
	}
}
