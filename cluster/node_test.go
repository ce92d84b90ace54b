package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hsmbroker/hsmbroker/keys"
)

// logBuffer collects a test's logs and prints them only if it fails, so
// that raft goroutines winding down after the test never call t.Log late.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is what has been logged so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", lb)
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a node on a free loopback port with its own data dir.
func testConfig(t *testing.T, id string, bootstrap bool) Config {
	t.Helper()
	return Config{
		NodeID:    id,
		RaftAddr:  "127.0.0.1:0",
		DataDir:   filepath.Join(t.TempDir(), id),
		Bootstrap: bootstrap,
		Logger:    testLogger(t),
	}
}

func openNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return n
}

// openLoggedLeader opens a bootstrapped one-node cluster whose logs go to
// the returned buffer, and waits for it to lead.
func openLoggedLeader(t *testing.T, id string) (*Node, Config, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	cfg := testConfig(t, id, true)
	cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n := openNode(t, cfg)
	if err := n.WaitForLeader(testContext(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return n, cfg, lb
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeader waits until one of nodes leads and the others know it.
func waitLeader(t *testing.T, nodes ...*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, 10*time.Second, "a leader", func() bool {
		leader = nil
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range nodes {
			if id, _ := n.Leader(); id != leader.ID() {
				return false
			}
		}
		return true
	})
	return leader
}

// waitSameDigest waits until all nodes hold identical state.
func waitSameDigest(t *testing.T, nodes ...*Node) {
	t.Helper()
	waitFor(t, 10*time.Second, "identical state on every node", func() bool {
		d := nodes[0].State().Digest()
		for _, n := range nodes[1:] {
			if n.State().Digest() != d {
				return false
			}
		}
		return true
	})
}

func mustApply(t *testing.T, n *Node, c Command) any {
	t.Helper()
	res, err := n.Apply(testContext(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("apply %s on %s: %v", c.Type(), n.ID(), err)
	}
	return res
}

// addVoters makes each of nodes a voter through leader, and waits until
// all of them agree on a leader.
func addVoters(t *testing.T, ctx context.Context, leader *Node, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		if err := leader.AddVoter(ctx, n.ID(), n.Addr()); err != nil {
			t.Fatalf("add %s: %v", n.ID(), err)
		}
	}
	waitLeader(t, append([]*Node{leader}, nodes...)...)
}

// threeVoters opens n1 (which bootstraps), n2 and n3 with testConfig,
// and makes the three voters under n1's leadership.
func threeVoters(t *testing.T, ctx context.Context) (n1, n2, n3 *Node) {
	t.Helper()
	n1 = openNode(t, testConfig(t, "n1", true))
	n2 = openNode(t, testConfig(t, "n2", false))
	n3 = openNode(t, testConfig(t, "n3", false))
	waitLeader(t, n1)
	addVoters(t, ctx, n1, n2, n3)
	return n1, n2, n3
}

func TestSingleNodeRestart(t *testing.T) {
	cfg := testConfig(t, "solo", true)
	n := openNode(t, cfg)
	if err := n.WaitForLeader(testContext(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !n.IsLeader() {
		t.Fatal("bootstrapped single node is not the leader")
	}
	res := mustApply(t, n, &CreateKey{Key: symKey("k1"), Alias: "alias/k1"})
	if k, ok := res.(Key); !ok || k.ID != "k1" {
		t.Fatalf("result = %#v", res)
	}
	// A snapshot in the middle, so the restart restores it and replays
	// the entries after it.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	mustApply(t, n, &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 2, Wrapped: []byte("w2"), CreatedAt: t0}})
	_, err := n.Apply(testContext(t, 5*time.Second), &CreateAlias{Name: "alias/k1", KeyID: "k1", At: t0})
	wantErrIs(t, err, ErrAlreadyExists)

	digest := n.State().Digest()
	lastIndex := n.Stats().LastLogIndex
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	_, err = n.Apply(context.Background(), &SetDomainKeyID{ID: "x"})
	wantErrIs(t, err, ErrShutdown)

	// Reopen with Bootstrap still set: the existing state wins.
	n2 := openNode(t, cfg)
	waitFor(t, 10*time.Second, "state replayed after restart", func() bool { return n2.State().Digest() == digest })
	st := n2.Stats()
	if len(st.Servers) != 1 || st.Servers[0].ID != "solo" || !st.Servers[0].Voter {
		t.Fatalf("configuration after restart = %+v", st.Servers)
	}
	if st.LastLogIndex < lastIndex {
		t.Fatalf("log index went back from %d to %d: re-bootstrapped?", lastIndex, st.LastLogIndex)
	}
	mustApply(t, n2, &AddVersion{KeyID: "k1", Version: KeyVersion{Number: 3, Wrapped: []byte("w3"), CreatedAt: t0}})
	if k, _ := n2.State().Key("k1"); k.CurrentVersion != 3 {
		t.Fatalf("current version = %d", k.CurrentVersion)
	}
}

// A transfer with no one to hand over to is refused up front, with an
// error that says why (raft's own are "cannot find peer" and "cannot
// transfer leadership to itself"), and leaves the leader in place.
func TestTransferLeadershipRefusals(t *testing.T) {
	solo := openNode(t, testConfig(t, "solo", true))
	waitLeader(t, solo)
	ctx := testContext(t, 10*time.Second)
	tests := []struct {
		name, to string
		wantErr  error
		wantMsg  string
	}{
		{"no other voter", "", ErrInvalidState, "no other voter to hand leadership to"},
		{"to itself", "solo", ErrInvalidState, "node solo is already the leader"},
		{"unknown node", "nobody", ErrNotFound, `node "nobody"`},
	}
	check := func(t *testing.T, to string, wantErr error, wantMsg string) {
		t.Helper()
		err := solo.TransferLeadership(ctx, to)
		wantErrIs(t, err, wantErr)
		if !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("TransferLeadership(%q) = %q, want it to say %q", to, err, wantMsg)
		}
		if !solo.IsLeader() {
			t.Fatalf("solo lost leadership after a refused transfer to %q", to)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.to, tt.wantErr, tt.wantMsg) })
	}
	// A non-voter cannot take over either, named or not.
	learner := openNode(t, testConfig(t, "learner", false))
	if err := solo.wait(ctx, solo.raft.AddNonvoter("learner", raft.ServerAddress(learner.Addr()), 0, 0)); err != nil {
		t.Fatal(err)
	}
	check(t, "", ErrInvalidState, "no other voter to hand leadership to")
	check(t, "learner", ErrInvalidState, `node "learner" is not a voter`)
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no id":       {RaftAddr: "127.0.0.1:0", DataDir: t.TempDir()},
		"no addr":     {NodeID: "a", DataDir: t.TempDir()},
		"no dir":      {NodeID: "a", RaftAddr: "127.0.0.1:0"},
		"wildcard":    {NodeID: "a", RaftAddr: "0.0.0.0:0", DataDir: t.TempDir()},
		"bad timeout": {NodeID: "a", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), LeaderLeaseTimeout: time.Second},
	} {
		if n, err := Open(cfg); err == nil {
			n.Shutdown()
			t.Errorf("%s: Open succeeded", name)
		}
	}
	// A data dir in use by another node fails fast instead of hanging on
	// bbolt's lock.
	cfg := testConfig(t, "a", true)
	openNode(t, cfg)
	if n, err := Open(cfg); err == nil {
		n.Shutdown()
		t.Error("second Open of the same data dir succeeded")
	} else if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), cfg.DataDir+" is locked by another process") ||
		!strings.Contains(err.Error(), "same data_dir") {
		t.Errorf("second Open of the same data dir: %v", err)
	}
	// So does HasState, which serve and restore ask first.
	if _, err := HasState(cfg.DataDir); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("HasState of a data dir in use: %v", err)
	}
}

func TestThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node failover in -short mode")
	}
	small := func(cfg Config) Config {
		// Snapshot and truncate often so that a returning member has to
		// catch up through InstallSnapshot.
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = 50 * time.Millisecond
		return cfg
	}
	cfg1 := small(testConfig(t, "n1", true))
	n1 := openNode(t, cfg1)
	n2 := openNode(t, small(testConfig(t, "n2", false)))
	n3 := openNode(t, small(testConfig(t, "n3", false)))
	if l := waitLeader(t, n1); l != n1 {
		t.Fatal("n1 does not lead")
	}
	if n1.HasPeers() {
		t.Fatal("n1 alone reports peers")
	}
	ctx := testContext(t, 30*time.Second)
	addVoters(t, ctx, n1, n2, n3)
	if !n1.HasPeers() {
		t.Fatal("n1 reports no peers in a cluster of three")
	}

	// 200 commands from 8 concurrent proposers.
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= 200 {
					return
				}
				var c Command
				if i%2 == 0 {
					c = &CreateKey{Key: symKey(fmt.Sprintf("key-%03d", i)), Alias: fmt.Sprintf("alias/key-%03d", i)}
				} else {
					c = &UpsertNode{Node: NodeInfo{ID: fmt.Sprintf("n%d", i%3+1), LastSeen: t0.Add(time.Duration(i) * time.Second)}}
				}
				if _, err := n1.Apply(ctx, c); err != nil {
					errs <- fmt.Errorf("command %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitSameDigest(t, n1, n2, n3)
	if got := len(n3.State().Keys()); got != 100 {
		t.Fatalf("follower has %d keys, want 100", got)
	}

	t.Run("follower refuses writes and names the leader", func(t *testing.T) {
		_, err := n2.Apply(ctx, &SetDomainKeyID{ID: "dk"})
		var nle *NotLeaderError
		if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) {
			t.Fatalf("error = %v, want *NotLeaderError", err)
		}
		if nle.LeaderID != "n1" || nle.LeaderAddr != n1.Addr() {
			t.Fatalf("leader named %q at %q, want n1 at %s", nle.LeaderID, nle.LeaderAddr, n1.Addr())
		}
		for name, err := range map[string]error{
			"Barrier":      n2.Barrier(ctx),
			"VerifyLeader": n2.VerifyLeader(ctx),
			"AddVoter":     n2.AddVoter(ctx, "x", "127.0.0.1:1"),
			"RemoveServer": n2.RemoveServer(ctx, "n3"),
		} {
			if !errors.Is(err, ErrNotLeader) {
				t.Errorf("%s on a follower: %v", name, err)
			}
		}
		if err := n1.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n1.VerifyLeader(ctx); err != nil {
			t.Fatal(err)
		}
	})

	// Kill the leader; the others elect a new one and take writes.
	if err := n1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	leader := waitLeader(t, n2, n3)
	for i := range 40 {
		mustApply(t, leader, &CreateKey{Key: symKey(fmt.Sprintf("after-%02d", i))})
	}
	// Compact the new leader's log past what n1 has, so n1 must take a
	// snapshot when it comes back.
	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}

	// n1 comes back on a new port; the leader learns its new address.
	var restored atomic.Bool
	cfg1.Observer = func(ev Event) {
		if ev.Type == TypeRestore {
			restored.Store(true)
		}
	}
	n1 = openNode(t, cfg1)
	if err := leader.AddVoter(ctx, "n1", n1.Addr()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, leader, &SetDomainKeyID{ID: "dk-after-failover"})
	waitSameDigest(t, n1, n2, n3)
	if n1.State().DomainKeyID() != "dk-after-failover" || len(n1.State().Keys()) != 140 {
		t.Fatalf("returning member did not catch up")
	}
	if !restored.Load() {
		t.Error("returning member caught up without a snapshot restore")
	}
	st := leader.Stats()
	if st.Role != "Leader" || len(st.Servers) != 3 || st.CommitIndex == 0 || st.AppliedIndex < st.CommitIndex {
		t.Fatalf("leader stats = %+v", st)
	}

	t.Run("leadership transfer", func(t *testing.T) {
		if err := leader.TransferLeadership(ctx, "n1"); err != nil {
			t.Fatal(err)
		}
		if l := waitLeader(t, n1, n2, n3); l != n1 {
			t.Fatalf("%s leads, want n1", l.ID())
		}
		mustApply(t, n1, &UpdateDescription{KeyID: "after-00", Description: "written by n1 again"})
		waitSameDigest(t, n1, n2, n3)
	})
}

func TestDeletionReaper(t *testing.T) {
	var now atomic.Pointer[time.Time]
	setNow := func(t time.Time) { now.Store(&t) }
	setNow(t0)
	var deleted atomic.Int32
	cfg := testConfig(t, "reaper", true)
	cfg.ReapInterval = 50 * time.Millisecond
	cfg.Now = func() time.Time { return *now.Load() }
	cfg.Observer = func(ev Event) {
		if ev.Type == TypeDeleteKey {
			deleted.Add(1)
		}
	}
	n := openNode(t, cfg)
	waitLeader(t, n)
	mustApply(t, n, &CreateKey{Key: symKey("doomed"), Alias: "alias/doomed"})
	mustApply(t, n, &CreateKey{Key: symKey("kept")})
	mustApply(t, n, &ScheduleDeletion{KeyID: "doomed", DeletionDate: t0.Add(7 * 24 * time.Hour), PendingWindowDays: 7})

	ctx := testContext(t, 5*time.Second)
	if got := n.reapDue(ctx); got != 0 {
		t.Fatalf("reaped %d keys before their date", got)
	}
	setNow(t0.Add(7*24*time.Hour + time.Second))
	waitFor(t, 5*time.Second, "the reaper to delete the due key", func() bool {
		_, ok := n.State().Key("doomed")
		return !ok
	})
	if _, ok := n.State().Key("kept"); !ok {
		t.Fatal("reaper deleted a live key")
	}
	if _, ok := n.State().ResolveAlias("alias/doomed"); ok {
		t.Fatal("alias of a deleted key survived")
	}
	if deleted.Load() != 1 {
		t.Fatalf("%d delete events", deleted.Load())
	}
}

func TestApplyRaw(t *testing.T) {
	n := openNode(t, testConfig(t, "raw", true))
	waitLeader(t, n)
	ctx := testContext(t, 5*time.Second)
	b, err := EncodeCommand(&CreateKey{Key: symKey("fwd"), Alias: "alias/fwd"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ApplyRaw(ctx, b); err != nil {
		t.Fatal(err)
	}
	_, err = n.ApplyRaw(ctx, b)
	wantErrIs(t, err, ErrAlreadyExists)

	before := n.Stats().LastLogIndex
	_, err = n.ApplyRaw(ctx, []byte("\x01{not json"))
	wantErrIs(t, err, ErrInvalidCommand)
	_, err = n.Apply(ctx, &CreateKey{})
	wantErrIs(t, err, ErrInvalidCommand)
	if after := n.Stats().LastLogIndex; after != before {
		t.Fatalf("invalid commands reached the log (%d -> %d)", before, after)
	}

	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Apply(cctx, &SetDomainKeyID{ID: "x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a cancelled context: %v", err)
	}
}

func TestBackupRestore(t *testing.T) {
	src := openNode(t, testConfig(t, "src", true))
	waitLeader(t, src)
	for _, c := range append(baseSetup(), &SetDomainKeyID{ID: "dk-1"}, &UpsertNode{Node: testNode("src")}) {
		mustApply(t, src, c)
	}
	rc, index, term, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	backup, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if li, lt := src.State().LastApplied(); index != li || term != lt || index == 0 {
		t.Fatalf("backup at %d/%d, state at %d/%d", index, term, li, lt)
	}

	ctx := testContext(t, 20*time.Second)
	dst := openNode(t, testConfig(t, "dst", true))
	waitLeader(t, dst)
	damaged := bytes.Clone(backup)
	damaged[len(damaged)/2] = 0x01 // valid nowhere in JSON
	for _, bad := range []struct {
		b    []byte
		want string
	}{
		{[]byte("garbage"), "not an hsmbroker backup"},
		{nil, "empty"},
		{backup[:len(backup)-10], "the backup is truncated"},
		{damaged, "damaged"},
	} {
		if _, err := ReadBackup(bad.b); err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "invalid character") {
			t.Errorf("ReadBackup of %q...: %v; want an error saying %q", bad.b[:min(len(bad.b), 16)], err, bad.want)
		}
	}
	b, err := ReadBackup(backup)
	if err != nil {
		t.Fatal(err)
	}
	if ks := b.Keys(); len(ks) != len(src.State().Keys()) || len(ks) == 0 || len(ks[0].Versions) == 0 || len(ks[0].Versions[0].Wrapped) == 0 {
		t.Fatalf("backup's keys: %+v, source holds %d", ks, len(src.State().Keys()))
	}
	if err := dst.RestoreFromBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	if dst.State().Digest() != src.State().Digest() {
		t.Fatal("restored state differs from the backup's source")
	}
	// The restored cluster takes writes and replicates the restored state
	// to new members.
	mustApply(t, dst, &UpdateDescription{KeyID: "k1", Description: "after restore"})
	member := openNode(t, testConfig(t, "member", false))
	if err := dst.AddVoter(ctx, member.ID(), member.Addr()); err != nil {
		t.Fatal(err)
	}
	waitSameDigest(t, dst, member)

	// A cluster that already holds keys refuses a restore.
	wantErrIs(t, dst.RestoreFromBackup(ctx, b), ErrInvalidState)
	// So does one with another domain key.
	other := openNode(t, testConfig(t, "other", true))
	waitLeader(t, other)
	mustApply(t, other, &SetDomainKeyID{ID: "dk-2"})
	wantErrIs(t, other.RestoreFromBackup(ctx, b), ErrInvalidState)
}

func TestStateReadsDuringApply(t *testing.T) {
	n := openNode(t, testConfig(t, "rw", true))
	waitLeader(t, n)
	ctx := testContext(t, 20*time.Second)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := n.State()
				for _, k := range s.Keys() {
					if k.State == keys.StateDisabled {
						s.Key(k.ID)
					}
				}
				s.Aliases("")
				s.Digest()
			}
		}()
	}
	for i := range 25 {
		id := fmt.Sprintf("k%02d", i)
		if _, err := n.Apply(ctx, &CreateKey{Key: symKey(id), Alias: "alias/" + id}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Apply(ctx, &SetKeyState{KeyID: id, State: keys.StateDisabled}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	readers.Wait()
}

// A transfer to a voter that does not take over in time (here, one that is
// down) is a precondition the operator can fix, and says so; raft's own
// answer, "leadership transfer timeout", became an internal error with no
// cause. The leader keeps leading.
func TestTransferLeadershipToAStoppedVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node in -short mode")
	}
	ctx := testContext(t, 30*time.Second)
	n1, n2, n3 := threeVoters(t, ctx)
	if err := n3.Shutdown(); err != nil {
		t.Fatal(err)
	}
	err := n1.TransferLeadership(ctx, "n3")
	wantErrIs(t, err, ErrInvalidState)
	if !strings.Contains(fmt.Sprint(err), "leadership was not handed to n3") {
		t.Fatalf("transfer to a stopped voter: %v", err)
	}
	if l := waitLeader(t, n1, n2); l != n1 {
		t.Errorf("%s leads after a failed transfer, want n1", l.ID())
	}
}
