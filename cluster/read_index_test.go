package cluster

import (
	"testing"
	"time"
)

// TestReadIndexSkipsEntriesTheStateNeverSees: after a configuration change
// and after an election, the last entries of the log are ones raft does not
// hand to the FSM (a configuration entry, the new leader's no-op), so no
// member's State ever reaches the commit index until the next command.
// ReadIndex answers the last command's index instead, which every member
// reaches, and after a command exactly that command's index.
func TestReadIndexSkipsEntriesTheStateNeverSees(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node cluster in -short mode")
	}
	n1 := openNode(t, testConfig(t, "n1", true))
	n2 := openNode(t, testConfig(t, "n2", false))
	waitLeader(t, n1)
	ctx := testContext(t, 30*time.Second)
	mustApply(t, n1, &CreateKey{Key: symKey("k1"), Alias: "alias/k1"})
	if err := n1.AddVoter(ctx, n2.ID(), n2.Addr()); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n1, n2)
	reached := func(leader *Node, what string) {
		t.Helper()
		index, err := leader.ReadIndex(ctx)
		if err != nil {
			t.Fatalf("%s: ReadIndex: %v", what, err)
		}
		if commit := leader.Stats().CommitIndex; index >= commit {
			t.Fatalf("%s: ReadIndex %d, commit index %d: the last entries change no state and should be skipped", what, index, commit)
		}
		for _, n := range []*Node{n1, n2} {
			waitFor(t, 10*time.Second, what+": "+n.ID()+"'s state reaches the read index", func() bool {
				applied, _ := n.State().LastApplied()
				return applied >= index
			})
		}
	}
	reached(n1, "after a configuration change")

	if err := n1.TransferLeadership(ctx, n2.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 leads", n2.IsLeader)
	reached(n2, "after an election")

	mustApply(t, n2, &CreateKey{Key: symKey("k2"), Alias: "alias/k2"})
	index, err := n2.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if applied, _ := n2.State().LastApplied(); index != applied || index != n2.Stats().CommitIndex {
		t.Fatalf("after a command: ReadIndex %d, leader's state at %d, commit index %d; want all three equal", index, applied, n2.Stats().CommitIndex)
	}
	if _, err := n1.ReadIndex(ctx); err == nil {
		t.Fatal("ReadIndex answered on a follower")
	}
}
