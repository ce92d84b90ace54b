package cluster

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter routes raft's hclog output into a slog.Logger. Its own level
// (shared by every logger derived from it, as hclog requires of SetLevel)
// filters before slog's handler does, so raft's chatter can be kept at Warn
// while the rest of the daemon logs at Info.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	args    []any
	level   *slog.LevelVar
	repeats *repeatLimiter[raftLineKind] // shared, like level
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// newHCLogAdapter returns an hclog.Logger writing to l at level and above.
func newHCLogAdapter(l *slog.Logger, name string, level slog.Level) *hclogAdapter {
	lv := new(slog.LevelVar)
	lv.Set(level)
	return &hclogAdapter{l: l, name: name, level: lv, repeats: newRepeatLimiter[raftLineKind](repeatWindow, raftRepeatBurst, maxRaftRepeatKinds)}
}

// levelTrace sits below slog.LevelDebug, as hclog's Trace sits below Debug.
const levelTrace = slog.LevelDebug - 4

func toSlogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel, DefaultLevel
		return slog.LevelInfo
	}
}

func toHCLogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= levelTrace:
		return hclog.Trace
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (a *hclogAdapter) enabled(l slog.Level) bool {
	return l >= a.level.Level() && a.l.Enabled(context.Background(), l)
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	l := toSlogLevel(level)
	if !a.enabled(l) {
		return
	}
	emit := func(args []any) {
		if a.name != "" {
			args = append([]any{"component", a.name}, args...)
		}
		a.l.Log(context.Background(), l, msg, args...)
	}
	// Debug and trace lines are asked for, to see everything: not limited.
	summary := func(held int) { emit(append([]any{"left_out", held, "within", a.repeats.window.String()}, args...)) }
	if l < slog.LevelInfo || a.repeats.allow(raftLineKind{l, a.name, msg}, summary) {
		emit(args)
	}
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(levelTrace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.l = a.l.With(args...)
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Set(toSlogLevel(level)) }

func (a *hclogAdapter) GetLevel() hclog.Level { return toHCLogLevel(a.level.Level()) }

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return &hclogWriter{a: a, level: level, infer: opts != nil && opts.InferLevels}
}

// hclogWriter turns lines written through the standard library logger into
// log records, taking the level from a "[WARN]"-style prefix when asked to.
type hclogWriter struct {
	a     *hclogAdapter
	level hclog.Level
	infer bool
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		line, level := sc.Text(), w.level
		if w.infer {
			line, level = inferLevel(line, level)
		}
		w.a.Log(level, line)
	}
	return len(p), nil
}

func inferLevel(line string, def hclog.Level) (string, hclog.Level) {
	for prefix, l := range map[string]hclog.Level{
		"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info,
		"[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error,
	} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(rest), l
		}
	}
	return line, def
}
