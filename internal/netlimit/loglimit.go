package netlimit

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Bounds of a LogLimiter: LogLineBurst lines at once, then
// LogLinesPerSecond; what is left out is counted and written as one summary
// line at most every LogSummaryEvery.
const (
	LogLineBurst      = 20
	LogLinesPerSecond = 1
	LogSummaryEvery   = 10 * time.Second
)

// LogLimiter bounds the lines that one kind of event, which anyone who can
// reach a port can cause without proving who they are, adds to the node's
// log: a failed TLS handshake, a connection refused for being one too many,
// a request refused because it proved no identity. Measured on `hsmbrokerd
// dev` before these bounds, one client made 1,000 garbage connections to
// the Raft port in 0.2 s and the node wrote 1,000 ERROR lines (202 KB); the
// KMIP port and the TDE endpoint over TLS wrote one line a connection too,
// and the AWS and TDE endpoints one per refused request. Left unbounded,
// that fills a disk or a log pipeline and buries the lines an operator
// needs.
//
// The first LogLineBurst events are written as they come (a misconfigured
// client keeps its lines), then LogLinesPerSecond; the others are counted,
// and LogSummaryEvery after the first of them one summary line gives the
// count, the first and last time and the last line left out. Close writes
// a pending summary at once.
type LogLimiter struct {
	log   *slog.Logger
	event string

	mu      sync.Mutex
	bucket  Bucket
	skipped uint64
	first   time.Time // of the events counted since the last summary
	latest  time.Time
	sample  string
	timer   *time.Timer // non-nil exactly while a summary is scheduled
	closed  bool
}

// NewLogLimiter returns a limiter writing to log; event names what it
// limits in its summary line (for example "TLS handshake failed").
func NewLogLimiter(log *slog.Logger, event string) *LogLimiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LogLimiter{log: log, event: event}
}

// Log writes the line if the bounds allow it, and otherwise counts it for
// the next summary.
func (l *LogLimiter) Log(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	if !l.admit(msg, time.Now()) {
		return
	}
	l.log.LogAttrs(ctx, level, msg, attrs...)
}

// admit takes a token for a line, or counts the line and schedules a
// summary if none is.
func (l *LogLimiter) admit(msg string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bucket.Take(now, LogLineBurst, LogLinesPerSecond) {
		return true
	}
	if l.skipped == 0 {
		l.first = now
	}
	l.skipped++
	l.latest = now
	l.sample = Truncate(msg, maxSampleLen)
	if l.timer == nil && !l.closed {
		l.timer = time.AfterFunc(LogSummaryEvery, l.summarize)
	}
	return false
}

// summarize writes the summary of the lines left out since the last one.
func (l *LogLimiter) summarize() {
	l.mu.Lock()
	n, first, latest, sample := l.skipped, l.first, l.latest, l.sample
	l.skipped, l.sample, l.timer = 0, "", nil
	l.mu.Unlock()
	if n == 0 {
		return
	}
	l.log.Warn("log lines left out: too many of one kind of event that needs no authentication",
		"event", l.event, "left_out", n, "first", first.UTC(), "last", latest.UTC(), "last_line", sample,
		"bound", fmt.Sprintf("%d lines at once, then %d a second", LogLineBurst, LogLinesPerSecond))
}

// Close writes any pending summary now; lines after Close are still
// limited, and their summary waits for the next Close.
func (l *LogLimiter) Close() {
	l.mu.Lock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.summarize()
}

// Bucket is a token bucket whose size and refill rate its owner gives
// Take. The zero value starts full at its first Take. It has no lock of
// its own.
type Bucket struct {
	tokens float64
	last   time.Time // zero until the first Take
}

// Take reports whether a token is left at now, and takes it if so, after
// refilling perSecond tokens a second since the last Take, up to burst.
func (b *Bucket) Take(now time.Time, burst, perSecond float64) bool {
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*perSecond)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// ErrorLog returns a logger for http.Server.ErrorLog that writes each of
// its lines through l at level. net/http writes there what a connection
// did wrong before any handler ran (a failed TLS handshake, a bad HTTP/2
// preface), one line a connection.
func (l *LogLimiter) ErrorLog(level slog.Level) *log.Logger {
	return log.New(errorLogWriter{l: l, level: level}, "", 0)
}

// maxSampleLen bounds the sample line kept for a summary.
const maxSampleLen = 512

// Truncate cuts s to n bytes, marking the cut with "...": for text a
// caller sent, or an error that may quote it, in a log line or a message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

type errorLogWriter struct {
	l     *LogLimiter
	level slog.Level
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	w.l.Log(context.Background(), w.level, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
