package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: levelTrace}))
	a := newHCLogAdapter(l, "raft", slog.LevelWarn)

	a.Info("chatty", "k", 1)
	a.Debug("chattier")
	if buf.Len() != 0 {
		t.Fatalf("below Warn got through: %s", buf.String())
	}
	if a.IsInfo() || !a.IsWarn() {
		t.Fatal("level guards disagree with the level")
	}
	a.Named("transport").With("peer", "n2").Warn("slow", "rtt", "1s")
	out := buf.String()
	for _, want := range []string{"level=WARN", "msg=slow", "component=raft.transport", "peer=n2", "rtt=1s"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q missing from %q", want, out)
		}
	}

	// SetLevel reaches every derived logger.
	child := a.Named("snapshot")
	a.SetLevel(hclog.Debug)
	buf.Reset()
	child.Debug("now visible")
	if !strings.Contains(buf.String(), "level=DEBUG") || a.GetLevel() != hclog.Debug {
		t.Fatalf("after SetLevel(Debug): %q, level %v", buf.String(), a.GetLevel())
	}

	buf.Reset()
	a.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] broken pipe")
	if out := buf.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, `msg="broken pipe"`) {
		t.Fatalf("standard logger: %q", out)
	}
}
