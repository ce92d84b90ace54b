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
	return stalledRequestFrom(tb, "", addr, key, size, sent)
}

// stalledRequestFrom is stalledRequest from the local address local
// ("": any); on Linux every 127.x.y.z address is loopback, so a test can
// be several sources.
func stalledRequestFrom(tb testing.TB, local, addr string, key awskms.AccessKey, size, sent int) net.Conn {
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
	var d net.Dialer
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
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
// are bounded across requests and per source, by what they hold.
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
	// Requests that name a known key but stall their bodies (here with a
	// wrong secret: the signature covers the body, so it is checked once
	// the body is read) hold what has arrived, a first buffer each, not the
	// 60 KiB they announce. One source may hold its share of the bodies in
	// flight (a quarter of the 150 KiB, and at least one whole body: 64
	// KiB); its next request is refused at once, without its body being
	// read.
	forged := e.admin
	forged.Secret = strings.Repeat("x", len(e.admin.Secret))
	share := 64 << 10
	var held []net.Conn
	for {
		c := stalledRequest(t, addr, forged, 60<<10, 10)
		st, exc, err := answerWithin(c, time.Second)
		if err != nil { // admitted: the server waits for the body
			held = append(held, c)
			if len(held) > share/awskms.BodyFirstChunk {
				t.Fatalf("%d stalled bodies admitted from one source, more than its %d KiB share holds", len(held), share>>10)
			}
			continue
		}
		_ = c.Close()
		if st != http.StatusServiceUnavailable || exc != "ThrottlingException" {
			t.Fatalf("stalled body %d: %d %s, want ThrottlingException", len(held)+1, st, exc)
		}
		break
	}
	if len(held) != share/awskms.BodyFirstChunk {
		t.Fatalf("%d stalled bodies of 60 KiB admitted from one source before it was refused, want %d: a body holds what arrived",
			len(held), share/awskms.BodyFirstChunk)
	}
	// Its whole request is refused too, while another source is served:
	// one client cannot take the bodies in flight from the others.
	if st, exc := answer(stalledRequest(t, addr, e.admin, 2, 2)); st != http.StatusServiceUnavailable || exc != "ThrottlingException" {
		t.Errorf("a whole request from the source holding its share: %d %s, want ThrottlingException", st, exc)
	}
	if st, exc := answer(stalledRequestFrom(t, "127.0.0.2", addr, e.admin, 2, 2)); st != http.StatusOK {
		t.Errorf("a request from another source while one holds its share: %d %s, want 200", st, exc)
	}
	for _, c := range held {
		_ = c.Close()
	}
	deadline := time.Now().Add(60 * time.Second)
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

// TestBodiesReadWhole: bodies are read into a buffer that grows as they
// arrive; whatever their size up to the limit, with a length or chunked,
// the handler gets every byte (the signature covers them), and a chunked
// body over the limit is refused.
func TestBodiesReadWhole(t *testing.T) {
	e := newEnv(t)
	listKeys := func(size int) []byte { // {   ...   }: an empty ListKeys
		b := bytes.Repeat([]byte(" "), size)
		b[0], b[size-1] = '{', '}'
		return b
	}
	for _, c := range []struct {
		name    string
		size    int
		chunked bool
		status  int
		errType string
	}{
		{"small", 2, false, 200, ""},
		{"one first buffer", awskms.BodyFirstChunk, false, 200, ""},
		{"past the first buffer", awskms.BodyFirstChunk + 1, false, 200, ""},
		{"300 KiB", 300 << 10, false, 200, ""},
		{"the limit", awskms.DefaultMaxBodyBytes, false, 200, ""},
		{"chunked, small", 2, true, 200, ""},
		{"chunked, 300 KiB", 300 << 10, true, 200, ""},
		{"chunked, the limit", awskms.DefaultMaxBodyBytes, true, 200, ""},
		{"chunked, over the limit", awskms.DefaultMaxBodyBytes + 1, true, 400, "ValidationException"},
	} {
		r := e.do(signedRequest{target: "TrentService.ListKeys", body: listKeys(c.size), key: e.admin, chunked: c.chunked})
		if r.status != c.status || (c.errType != "" && r.errorType() != c.errType) {
			t.Errorf("%s (%d bytes): %d %.200s, want %d %s", c.name, c.size, r.status, r.body, c.status, c.errType)
		}
	}
}
