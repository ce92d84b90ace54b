package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Followers are replicated by request and answer, never through raft's
// pipeline: its send loop can wedge for good after a follower's answer
// ends the pipeline (see the transport settings in Open). Both transports
// are checked, on a live two-node cluster whose raft logs are read back.
func TestReplicationIsNotPipelined(t *testing.T) {
	if testing.Short() {
		t.Skip("two-node cluster in -short mode")
	}
	ca := newTestCA(t, "hsmbroker test cluster CA")
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			logs := &logBuffer{}
			cfgA := testConfig(t, "a", true)
			cfgA.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfgA.RaftLogLevel = slog.LevelDebug
			cfgB := testConfig(t, "b", false)
			if withTLS {
				cfgA.TLS, cfgB.TLS = ca.nodeTLS(t, "a"), ca.nodeTLS(t, "b")
			}
			a, b := openNode(t, cfgA), openNode(t, cfgB)
			waitLeader(t, a)
			ctx := testContext(t, 20*time.Second)
			if err := a.AddVoter(ctx, b.ID(), b.Addr()); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range baseSetup() {
				mustApply(t, a, cmd)
			}
			waitSameDigest(t, a, b)

			p, err := a.trans.AppendEntriesPipeline(raft.ServerID(b.ID()), raft.ServerAddress(b.Addr()))
			if p != nil {
				_ = p.Close()
			}
			if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
				t.Fatalf("the transport offers a replication pipeline (err %v)", err)
			}
			text := logs.String()
			if !strings.Contains(text, "starting replication") {
				t.Fatalf("the leader's raft log does not show replication to b starting:\n%s", tail(text))
			}
			if strings.Contains(text, "pipelining replication") {
				t.Fatalf("the leader replicated through raft's pipeline:\n%s", tail(text))
			}
		})
	}
}

func tail(s string) string {
	const n = 4000
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
