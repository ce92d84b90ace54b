package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestServersDropSilentConnections: a client that connects to any of the
// node's ports and sends nothing is disconnected by the node (gRPC and
// Raft at their 10 s handshake bound, the HTTP servers at their 5 s header
// bound), and the metrics server serves at most metricsLimits.MaxConns
// connections at once, idle keep-alives included. Before these bounds a
// silent connection held a file descriptor for 2 minutes (gRPC) or as
// long as the client liked (Raft; metrics keep-alives), and enough of them
// took the node to its descriptor limit.
func TestServersDropSilentConnections(t *testing.T) {
	t.Parallel()
	module := requireSoftHSM(t)
	buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	var addrs []string
	startDev(t, module, dir, &addrs)

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
	if err := healthz(extra, 500*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("metrics connection %d served while %d were open (%v)", metricsLimits.MaxConns+1, metricsLimits.MaxConns, err)
	}
	held[0].Close()
	if err := healthz(extra, 20*time.Second); err != nil {
		t.Fatalf("the waiting metrics connection was not served once a slot was free: %v", err)
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
	kms := &kmsEndpoint{addr: "127.0.0.1:0"}
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
