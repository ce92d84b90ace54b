package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

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

// TestHCLogRepeatsLimited: a node that cannot reach its peers logs the same
// failed election again and again. Past raftRepeatBurst lines of one kind in a
// window the rest are counted and summed up in one line when it ends;
// other kinds, and debug lines, are not held back.
func TestHCLogRepeatsLimited(t *testing.T) {
	var lb logBuffer
	l := slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: levelTrace}))
	a := newHCLogAdapter(l, "raft", slog.LevelDebug)
	a.repeats = newRepeatLimiter[raftLineKind](200*time.Millisecond, raftRepeatBurst, maxRaftRepeatKinds)

	for i := range 20 {
		a.Error("failed to make requestVote RPC", "target", fmt.Sprintf("node%d", i))
		a.Debug("sending heartbeat")
	}
	a.Named("transport").Error("failed to make requestVote RPC")
	a.Warn("Election timeout reached, restarting election")

	count := func(s string) int { return strings.Count(lb.String(), s) }
	if n := count(`msg="failed to make requestVote RPC" component=raft target=`); n != raftRepeatBurst {
		t.Errorf("%d lines of the repeated kind got through, want %d:\n%s", n, raftRepeatBurst, lb.String())
	}
	if n := count("sending heartbeat"); n != 20 {
		t.Errorf("%d of 20 debug lines got through", n)
	}
	if count("component=raft.transport") != 1 || count("Election timeout reached") != 1 {
		t.Errorf("lines of other kinds were held back:\n%s", lb.String())
	}
	if count("left_out=") != 0 {
		t.Fatalf("summary before the window ended:\n%s", lb.String())
	}

	// The window ends: one line says how many were left out, with the
	// attributes of the first of them.
	want := `msg="failed to make requestVote RPC" component=raft left_out=15 within=200ms target=node5`
	deadline := time.Now().Add(10 * time.Second)
	for count(want) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary %q:\n%s", want, lb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The summary opened the next window: four more lines pass, then the
	// kind is held back again.
	for i := range 10 {
		a.Error("failed to make requestVote RPC", "target", fmt.Sprintf("again%d", i))
	}
	if n := count("target=again"); n != raftRepeatBurst-1 {
		t.Errorf("%d lines passed after the summary, want %d", n, raftRepeatBurst-1)
	}
}

// TestCutOffNodeLogsBounded: a node that lost its majority (here its only
// peer never existed) campaigns every second or so for as long as it lasts.
// Each kind of raft line it logs gets through at most raftRepeatBurst times a
// window, where before it logged a few lines per election.
func TestCutOffNodeLogsBounded(t *testing.T) {
	n, _, lb := openLoggedLeader(t, "node1")
	// A closed loopback port: the second voter never answers, so the
	// leader loses its majority and campaigns from then on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_ = n.AddVoter(testContext(t, 2*time.Second), "node2", dead)
	time.Sleep(8 * time.Second)

	perKind := map[string]int{}
	for line := range strings.Lines(lb.String()) {
		if !strings.Contains(line, "component=raft") {
			continue
		}
		_, msg, _ := strings.Cut(line, " msg=")
		msg, _, _ = strings.Cut(msg, " component=")
		perKind[msg]++
	}
	most := 0
	for msg, n := range perKind {
		if n > raftRepeatBurst {
			t.Errorf("%d lines of %s, want at most %d", n, msg, raftRepeatBurst)
		}
		most = max(most, n)
	}
	if most < raftRepeatBurst {
		t.Fatalf("the cut-off node repeated no line %d times; nothing was limited: %v", raftRepeatBurst, perKind)
	}
}
