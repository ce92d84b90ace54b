package netlimit

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// records is a slog handler that keeps what it is given.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// split returns the number of lines with message msg and the summaries'
// left_out counts.
func (r *records) split(msg string) (lines int, leftOut []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		switch {
		case rec.Message == msg:
			lines++
		case strings.HasPrefix(rec.Message, "log lines left out"):
			rec.Attrs(func(a slog.Attr) bool {
				if a.Key == "left_out" {
					leftOut = append(leftOut, int64(a.Value.Uint64()))
				}
				return true
			})
		}
	}
	return lines, leftOut
}

// TestLogLimiterAdmit: a burst, then the refill rate; the rest is counted
// for one summary, which Close writes at once.
func TestLogLimiterAdmit(t *testing.T) {
	rec := &records{}
	l := NewLogLimiter(slog.New(rec), "test event")
	t0 := time.Now()
	admitted := 0
	for i := range 100 {
		// 100 events in the first 0.99 s: the burst and no refill yet.
		if l.admit("event", t0.Add(time.Duration(i)*10*time.Millisecond)) {
			admitted++
		}
	}
	if admitted != LogLineBurst {
		t.Fatalf("%d of 100 events at once admitted, want the burst %d", admitted, LogLineBurst)
	}
	// Ten seconds later, ten more lines' worth has refilled.
	later := 0
	for i := range 30 {
		if l.admit("event", t0.Add(11*time.Second+time.Duration(i)*time.Millisecond)) {
			later++
		}
	}
	if want := 10 * LogLinesPerSecond; later < want || later > want+1 {
		t.Fatalf("%d events admitted after 10 s more, want about %d", later, want)
	}
	l.Close()
	_, leftOut := rec.split("event")
	if len(leftOut) != 1 || leftOut[0] != int64(130-admitted-later) {
		t.Fatalf("summaries %v, want one of %d", leftOut, 130-admitted-later)
	}
	// Nothing pending: Close writes no second summary.
	l.Close()
	if _, leftOut := rec.split("event"); len(leftOut) != 1 {
		t.Fatalf("summaries %v after a second Close, want still one", leftOut)
	}
}

// TestLogLimiterSkipsDisabledLevels: a line the logger would not write is
// neither written nor counted.
func TestLogLimiterSkipsDisabledLevels(t *testing.T) {
	var b strings.Builder
	l := NewLogLimiter(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelWarn})), "quiet")
	for range 100 {
		l.Log(context.Background(), slog.LevelInfo, "not shown")
	}
	l.Close()
	if b.Len() != 0 {
		t.Fatalf("wrote %q for lines below the logger's level", b.String())
	}
}

// TestHTTPServerBoundsHandshakeLines: net/http writes a line for every
// connection whose TLS handshake fails; through NewHTTPServer at most the
// burst of them reach the log, and Shutdown writes one summary counting
// the rest. The clients are real TCP connections sending bytes that are
// not TLS to a real TLS server.
func TestHTTPServerBoundsHandshakeLines(t *testing.T) {
	rec := &records{}
	srv := NewHTTPServer(http.NotFoundHandler(), Limits{}, slog.New(rec))
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = srv.Server
	ts.StartTLS()
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()

	const conns = 100
	start := time.Now()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("\x16\x03\x01\x00\x05not TLS at all\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Read(make([]byte, 64)) // the server closes it
		c.Close()
	}
	elapsed := time.Since(start)
	// A real client still gets through.
	resp, err := ts.Client().Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// net/http logs a failed handshake after closing the connection, so
	// wait for all of them to be counted.
	deadline := time.Now().Add(10 * time.Second)
	counted := func() int {
		l := srv.ErrorLog.Writer().(errorLogWriter).l
		l.mu.Lock()
		defer l.mu.Unlock()
		return int(l.skipped)
	}
	for {
		lines, _ := rec.handshakeLines()
		if lines+counted() >= conns || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, leftOut := rec.handshakeLines()
	maxLines := LogLineBurst + int(elapsed.Seconds()+1)*LogLinesPerSecond
	if lines > maxLines {
		t.Fatalf("%d handshake lines for %d bad connections in %v, want at most %d", lines, conns, elapsed, maxLines)
	}
	if len(leftOut) != 1 || int(leftOut[0])+lines != conns {
		t.Fatalf("%d lines and summaries %v, want one summary of the other %d", lines, leftOut, conns-lines)
	}
}

// handshakeLines counts net/http's failed-handshake lines and the
// summaries' left_out counts.
func (r *records) handshakeLines() (lines int, leftOut []int64) {
	r.mu.Lock()
	var msgs []string
	for _, rec := range r.recs {
		msgs = append(msgs, rec.Message)
	}
	r.mu.Unlock()
	for _, m := range msgs {
		if strings.Contains(m, "TLS handshake error") {
			lines++
		}
	}
	_, leftOut = r.split("\x00")
	return lines, leftOut
}
