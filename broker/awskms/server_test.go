package awskms_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// stalledRequest opens a connection to addr and sends the headers of a
// request with a Content-Length of size, signed by key (unsigned when key
// has no id), and the first sent bytes of its body; then it stalls.
func stalledRequest(tb testing.TB, addr string, key awskms.AccessKey, size, sent int) net.Conn {
	tb.Helper()
	body := bytes.Repeat([]byte(" "), size)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	if key.ID != "" {
		creds := aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hash, "kms", testRegion, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", addr, size)
	for k, vs := range req.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := c.Write(append([]byte(b.String()), body[:sent]...)); err != nil {
		tb.Fatal(err)
	}
	return c
}

// closedWithin reports whether the server closes c (after answering it or
// not) before the deadline.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil || !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestStalledConnections: clients that send part of a body and stall are
// disconnected by the read timeout, and no more than MaxConns connections
// are served at once; the one waiting is served once they are gone.
func TestStalledConnections(t *testing.T) {
	e := newEnv(t)
	limits := netlimit.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 4 * time.Second,
		IdleTimeout: time.Second, MaxConns: 4}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := netlimit.NewHTTPServer(e.h, limits, nil)
	go func() { _ = srv.Serve(netlimit.Listener(lis, limits)) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := lis.Addr().String()

	var stalled []net.Conn
	for range limits.MaxConns {
		stalled = append(stalled, stalledRequest(t, addr, e.admin, 512<<10, 64<<10))
	}
	// A fifth client, with a whole request, waits for a free slot.
	waiting := stalledRequest(t, addr, e.admin, 2, 2)
	_ = waiting.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := waiting.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a fifth connection was served while %d were open (read %d, %v)", limits.MaxConns, n, err)
	}
	for i, c := range stalled {
		if !closedWithin(c, 60*time.Second) {
			t.Fatalf("stalled connection %d still open after a minute (read timeout %s)", i, limits.ReadTimeout)
		}
	}
	_ = waiting.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(waiting), nil)
	if err != nil {
		t.Fatalf("the waiting connection was not served once the stalled ones were closed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Its body (two spaces, an empty request) is whole and signed.
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("waiting request: %d %s", resp.StatusCode, b)
	}
}

// TestBodyNotReadBeforeAuthentication: a request that is not signed by a
// known key is answered without its body being read, and bodies in flight
// are bounded across requests.
func TestBodyNotReadBeforeAuthentication(t *testing.T) {
	e := newEnv(t, func(c *awskms.Config) { c.MaxBodyBytes = 64 << 10; c.MaxInFlightBodyBytes = 150 << 10 })
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	answerWithin := func(c net.Conn, d time.Duration) (int, string, error) {
		_ = c.SetReadDeadline(time.Now().Add(d))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), nil
	}
	answer := func(c net.Conn) (int, string) {
		t.Helper()
		st, exc, err := answerWithin(c, 60*time.Second)
		if err != nil {
			t.Fatalf("no answer before the body was sent: %v", err)
		}
		return st, exc
	}
	unsigned := stalledRequest(t, addr, awskms.AccessKey{}, 60<<10, 10)
	if st, exc := answer(unsigned); st != http.StatusBadRequest || exc != "MissingAuthenticationTokenException" {
		t.Errorf("unsigned request: %d %s", st, exc)
	}
	// And the connection is closed at once: net/http would otherwise read
	// up to 256 KiB of the unread body after the answer, holding the
	// connection's slot until the read timeout.
	_ = unsigned.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := unsigned.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the unsigned request's connection stayed open after the answer: read %v, want EOF", err)
	}
	unknown := e.admin
	unknown.ID = "AKIAUNKNOWNUNKNOWN00"
	if st, exc := answer(stalledRequest(t, addr, unknown, 60<<10, 10)); st != http.StatusBadRequest || exc != "UnrecognizedClientException" {
		t.Errorf("unknown access key: %d %s", st, exc)
	}
	// Signed requests that stall each hold 60 KiB of the 150 KiB: two are
	// admitted (their bodies awaited, no answer), and the next is refused
	// at once, without its body being read. A request refused while an
	// earlier one's bytes are still being given back is simply not held.
	var held []net.Conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		c := stalledRequest(t, addr, e.admin, 60<<10, 10)
		st, exc, err := answerWithin(c, time.Second)
		if err != nil { // admitted: the server waits for the body
			held = append(held, c)
			if len(held) > 2 {
				t.Fatalf("%d stalled bodies of 60 KiB admitted under a 150 KiB bound", len(held))
			}
			continue
		}
		_ = c.Close()
		if len(held) == 2 && st == http.StatusServiceUnavailable && exc == "ThrottlingException" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a third body over the in-flight bound: %d %s (%d held)", st, exc, len(held))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range held {
		_ = c.Close()
	}
	for {
		r := e.do(signedRequest{target: "TrentService.ListKeys", body: []byte(`{}`), key: e.admin})
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bodies in flight not given back: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
