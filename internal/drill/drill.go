// Package drill runs failover drills against a live hsmbroker cluster: a
// steady mixed workload from several clients while the leader, or one
// node's HSM, is taken away and brought back, round after round; then a
// check that everything the cluster acknowledged during the drill still
// works on every node. hsmctl drill is its command line; tests drive it
// with in-process clusters.
//
// Times are measured by the drill's clients and probes, as an application
// would see them: a new leader is noticed by polling every node's own
// status every 20ms, so reported times are late by up to that much plus a
// round trip.
package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Mode is what a drill takes away.
type Mode string

const (
	// ModeTransfer hands leadership to another node (Raft leadership
	// transfer): the planned-maintenance case.
	ModeTransfer Mode = "transfer"
	// ModeKill takes the leader away with Config.Take (typically a kill
	// -9) and brings it back with Config.Restore.
	ModeKill Mode = "kill"
	// ModeHSMLoss takes one node's HSM away with Config.Take and gives it
	// back with Config.Restore; the node itself keeps running.
	ModeHSMLoss Mode = "hsm-loss"
)

// Action acts on one node: takes it, or its HSM, away or brings it back.
// It returns once the act is done (a killed process is gone; a started
// one has been launched), not when the cluster has noticed.
type Action func(ctx context.Context, n Node) error

// Config describes a drill. The zero value of every optional field means
// its default.
type Config struct {
	// Client is how the drill's clients connect: TLS material and at least
	// one endpoint. The drill finds the other members from cluster status
	// and gives every client all of them.
	Client client.Config
	// Mode is what each round takes away. Required.
	Mode Mode
	// Rounds is how many times (default 3).
	Rounds int
	// Clients is how many concurrent clients run the workload (default 4).
	Clients int
	// Steady is how long the load runs before each fault and after each
	// recovery (default 5s); those windows give the before and after
	// latencies.
	Steady time.Duration
	// Hold is how long a killed node or a lost HSM stays away once the
	// cluster has noticed (default 2s).
	Hold time.Duration
	// Timeout bounds each wait: for a new leader, a first write, a node to
	// stop or resume serving (default 60s).
	Timeout time.Duration
	// Take and Restore are the operator's actions for ModeKill and
	// ModeHSMLoss. Required for those modes.
	Take, Restore Action
	// Target is, for ModeHSMLoss, the node whose HSM is taken; "" takes a
	// follower's, a different one each round.
	Target string
	// Progress, when set, receives a line per event and a load summary
	// every few seconds.
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Clients <= 0 {
		c.Clients = 4
	}
	if c.Steady <= 0 {
		c.Steady = 5 * time.Second
	}
	if c.Hold <= 0 {
		c.Hold = 2 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
}

func (c *Config) check() error {
	switch c.Mode {
	case ModeTransfer:
	case ModeKill, ModeHSMLoss:
		if c.Take == nil || c.Restore == nil {
			return fmt.Errorf("drill: mode %s needs both actions: take a node away and bring it back", c.Mode)
		}
	default:
		return fmt.Errorf("drill: unknown mode %q (want transfer, kill or hsm-loss)", c.Mode)
	}
	if len(c.Client.Endpoints) == 0 {
		return errors.New("drill: no endpoint given")
	}
	return nil
}

// run is one drill in progress.
type run struct {
	cfg    Config
	nodes  []Node
	l      *ledger
	probe  *prober
	rep    *Report
	id     string
	writer *client.Client // the write probe's client
	probeK string         // key the write probe tags
	cursor time.Time      // where the next phase begins

	progressMu sync.Mutex // progress lines come from several goroutines
}

// Run performs the drill and returns its report. An error means the drill
// could not be carried out (the cluster was not reachable, an action
// failed, the cluster did not recover in time); the report then holds what
// was measured up to that point. A completed drill returns a nil error
// even when it lost data: the report says so (Lost > 0).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	nodes, leader, err := discover(ctx, cfg.Client)
	if err != nil {
		return nil, err
	}
	if cfg.Target != "" && !slices.ContainsFunc(nodes, func(n Node) bool { return n.ID == cfg.Target }) {
		return nil, fmt.Errorf("drill: %s is not a member (members: %s)", cfg.Target, nodeIDs(nodes))
	}
	r := &run{cfg: cfg, nodes: nodes, probe: newProber(cfg.Client), id: runID()}
	defer r.probe.close()
	r.rep = &Report{ID: r.id, Mode: string(cfg.Mode), Nodes: nodeIDs(nodes), Clients: cfg.Clients, Rounds: []Round{},
		StartTime: time.Now().UTC(), ErrorKinds: map[string]int{}}
	r.progressf("drill %s: %d nodes (%s), leader %s; %d clients, mode %s, %d round(s)",
		r.id, len(nodes), nodeAddrs(nodes), dashIfEmpty(leader), cfg.Clients, cfg.Mode, cfg.Rounds)

	// A drill starts from a whole cluster: every node serving, one leader.
	if _, err := r.probe.waitFor(ctx, nodes, cfg.Timeout, func(vs []nodeView) bool {
		for _, v := range vs {
			if v.err != nil || !v.healthy {
				return false
			}
		}
		return leaderOf(nodes, vs) != ""
	}); err != nil {
		return nil, fmt.Errorf("drill: the cluster is not whole (every node ready, one leader) after %s; the drill starts from a healthy cluster: %w", cfg.Timeout, err)
	}
	all := cfg.Client
	all.Endpoints = endpointsFrom(nodes, 0)
	setupCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	w, err := r.setup(setupCtx, all)
	cancel()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range w.clients {
			_ = c.Close()
		}
		_ = r.writer.Close()
	}()

	r.l.start = time.Now()
	r.cursor = r.l.start
	w.start()
	stopTicker := r.ticker()
	var runErr error
	for i := 1; i <= cfg.Rounds && runErr == nil; i++ {
		runErr = r.round(ctx, i)
	}
	w.halt()
	stopTicker()
	r.rep.Duration = ms(time.Since(r.l.start))
	r.rep.samples, _ = r.l.since(0)
	r.rep.summarize(r.rep.samples)
	if runErr != nil {
		return r.rep, runErr
	}
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := r.verify(checkCtx); err != nil {
		return r.rep, err
	}
	return r.rep, nil
}

// setup makes the drill's shared keys and clients.
func (r *run) setup(ctx context.Context, all client.Config) (*workload, error) {
	all.Retries = max(all.Retries, 2*len(r.nodes))
	if all.Timeout == 0 {
		// Fail over quickly: a node being killed must not hold a call for
		// the default 10s.
		all.Timeout = 3 * time.Second
	}
	admin, err := client.Dial(ctx, all)
	if err != nil {
		return nil, err
	}
	r.writer = admin
	sym, err := admin.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/drill-" + r.id + "-sym", Description: "hsmctl drill " + r.id})
	if err != nil {
		return nil, fmt.Errorf("drill: create the shared AES key: %w", err)
	}
	sig, err := admin.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/drill-" + r.id + "-sign", Description: "hsmctl drill " + r.id,
		KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256, KeyUsage: pb.KeyUsage_KEY_USAGE_SIGN_VERIFY})
	if err != nil {
		return nil, fmt.Errorf("drill: create the shared P-256 key: %w", err)
	}
	r.probeK = sym.GetKeyMetadata().GetKeyId()
	r.l = &ledger{}
	w := &workload{l: r.l, symKey: sym.GetKeyMetadata().GetKeyId(), signKey: sig.GetKeyMetadata().GetKeyId(), run: r.id}
	r.l.keys = append(r.l.keys, ackedKey{id: w.symKey, alias: "alias/drill-" + r.id + "-sym"})
	for i := 0; i < r.cfg.Clients; i++ {
		cfg := all
		// Each client starts on another node, so the load spreads.
		cfg.Endpoints = endpointsFrom(r.nodes, i)
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		w.clients = append(w.clients, c)
	}
	return w, nil
}

// round runs one steady window, one fault and its recovery, and one more
// steady window.
func (r *run) round(ctx context.Context, i int) error {
	rd := Round{Round: i}
	tag := fmt.Sprintf("round %d/%d", i, r.cfg.Rounds)
	if !sleepCtx(ctx, r.cfg.Steady) {
		return ctx.Err()
	}
	rd.Before = r.phase()

	leader, err := r.currentLeader(ctx)
	if err != nil {
		r.rep.Rounds = append(r.rep.Rounds, rd)
		return err
	}
	rd.OldLeader = leader
	var node Node
	switch r.cfg.Mode {
	case ModeTransfer, ModeKill:
		node = r.node(leader)
	case ModeHSMLoss:
		node = r.hsmTarget(i, leader)
	}
	rd.Node = node.ID
	// The leader lookup belongs to the steady window too.
	r.cursor = time.Now()
	rd.Before.End = ms(r.cursor.Sub(r.l.start))
	t0 := r.cursor
	rd.FaultStart = ms(t0.Sub(r.l.start))
	var ferr error
	switch r.cfg.Mode {
	case ModeTransfer:
		ferr = r.transfer(ctx, tag, &rd, node, t0)
	case ModeKill:
		ferr = r.kill(ctx, tag, &rd, node, t0)
	case ModeHSMLoss:
		ferr = r.hsmLoss(ctx, tag, &rd, node, t0)
	}
	rd.During = r.phase()
	rd.FaultEnd = rd.During.End
	if ferr != nil {
		r.rep.Rounds = append(r.rep.Rounds, rd)
		return fmt.Errorf("%s: %w", tag, ferr)
	}
	if !sleepCtx(ctx, r.cfg.Steady) {
		r.rep.Rounds = append(r.rep.Rounds, rd)
		return ctx.Err()
	}
	rd.After = r.phase()
	r.rep.Rounds = append(r.rep.Rounds, rd)
	if r.cfg.Progress != nil {
		ss, _ := r.l.since(0)
		b, d, a := phaseOf(ss, rd.Before), phaseOf(ss, rd.During), phaseOf(ss, rd.After)
		r.progressf("%s: done; errors before/during/after %d/%d/%d; p99 before/during/after %s/%s/%s",
			tag, b.Errors, d.Errors, a.Errors, fmtMs(b.P99), fmtMs(d.P99), fmtMs(a.P99))
	}
	return nil
}

// phase closes the phase that began at the cursor: its bounds, since the
// drill started. Its figures are filled in from the samples at the end.
func (r *run) phase() Phase {
	now := time.Now()
	p := Phase{Start: ms(r.cursor.Sub(r.l.start)), End: ms(now.Sub(r.l.start))}
	r.cursor = now
	return p
}

func (r *run) transfer(ctx context.Context, tag string, rd *Round, old Node, t0 time.Time) error {
	r.progressf("%s: transferring leadership away from %s", tag, old.ID)
	tctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := r.writer.Cluster.TransferLeadership(tctx, &pb.TransferLeadershipRequest{})
		errc <- err
	}()
	if err := r.awaitNewLeader(ctx, tag, rd, old, t0); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		// The cluster has a new leader; the call's answer may have been lost
		// with the old leader's step-down. Worth saying, not failing.
		r.progressf("%s: the transfer call answered %v (the new leader was elected nonetheless)", tag, err)
	}
	return r.awaitWrite(ctx, tag, rd, t0)
}

func (r *run) kill(ctx context.Context, tag string, rd *Round, old Node, t0 time.Time) error {
	r.progressf("%s: taking leader %s away", tag, old.ID)
	if err := r.act(ctx, r.cfg.Take, old); err != nil {
		return fmt.Errorf("take %s away: %w", old.ID, err)
	}
	if err := r.awaitNewLeader(ctx, tag, rd, old, t0); err != nil {
		return err
	}
	if err := r.awaitWrite(ctx, tag, rd, t0); err != nil {
		return err
	}
	if !sleepCtx(ctx, r.cfg.Hold) {
		return ctx.Err()
	}
	r.progressf("%s: bringing %s back", tag, old.ID)
	if err := r.act(ctx, r.cfg.Restore, old); err != nil {
		return fmt.Errorf("bring %s back: %w", old.ID, err)
	}
	r.probe.forget(old)
	at, err := r.probe.waitFor(ctx, []Node{old}, r.cfg.Timeout, func(vs []nodeView) bool { return vs[0].err == nil && vs[0].healthy })
	if err != nil {
		return fmt.Errorf("%s did not serve again within %s: %w", old.ID, r.cfg.Timeout, err)
	}
	rd.TimeToRecover = ms(at.Sub(t0))
	r.progressf("%s: %s serving again, %s after it was taken away", tag, old.ID, fmtMs(rd.TimeToRecover))
	return nil
}

func (r *run) hsmLoss(ctx context.Context, tag string, rd *Round, target Node, t0 time.Time) error {
	r.progressf("%s: taking the HSM of %s away", tag, target.ID)
	if err := r.act(ctx, r.cfg.Take, target); err != nil {
		return fmt.Errorf("take the HSM of %s away: %w", target.ID, err)
	}
	// Writes need no HSM on other nodes; one must go through at once.
	first := make(chan error, 1)
	go func() { first <- r.awaitWrite(ctx, tag, rd, t0) }()
	at, err := r.probe.waitFor(ctx, []Node{target}, r.cfg.Timeout, func(vs []nodeView) bool { return vs[0].err == nil && !vs[0].healthy })
	if err != nil {
		return errors.Join(fmt.Errorf("%s still reports itself ready %s after its HSM was taken away: %w", target.ID, r.cfg.Timeout, err), <-first)
	}
	d := ms(at.Sub(t0))
	rd.TimeToNotReady = &d
	r.progressf("%s: %s stopped serving after %s", tag, target.ID, fmtMs(d))
	if err := <-first; err != nil {
		return err
	}
	if !sleepCtx(ctx, r.cfg.Hold) {
		return ctx.Err()
	}
	r.progressf("%s: giving %s its HSM back", tag, target.ID)
	if err := r.act(ctx, r.cfg.Restore, target); err != nil {
		return fmt.Errorf("give %s its HSM back: %w", target.ID, err)
	}
	at, err = r.probe.waitFor(ctx, []Node{target}, r.cfg.Timeout, func(vs []nodeView) bool { return vs[0].err == nil && vs[0].healthy })
	if err != nil {
		return fmt.Errorf("%s did not serve again within %s of getting its HSM back: %w", target.ID, r.cfg.Timeout, err)
	}
	rd.TimeToRecover = ms(at.Sub(t0))
	r.progressf("%s: %s serving again, %s after its HSM was taken away", tag, target.ID, fmtMs(rd.TimeToRecover))
	return nil
}

// awaitNewLeader waits until a node other than old says it leads.
func (r *run) awaitNewLeader(ctx context.Context, tag string, rd *Round, old Node, t0 time.Time) error {
	var newLeader string
	at, err := r.probe.waitFor(ctx, r.nodes, r.cfg.Timeout, func(vs []nodeView) bool {
		for i, v := range vs {
			if v.err == nil && v.isLead && r.nodes[i].ID != old.ID {
				newLeader = r.nodes[i].ID
				return true
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("no new leader within %s: %w", r.cfg.Timeout, err)
	}
	d := ms(at.Sub(t0))
	rd.NewLeader, rd.TimeToNewLeader = newLeader, &d
	r.progressf("%s: new leader %s after %s", tag, newLeader, fmtMs(d))
	return nil
}

// awaitWrite repeats a small write (a tag on the drill's key) until the
// cluster acknowledges one, and records how long after t0 that was.
func (r *run) awaitWrite(ctx context.Context, tag string, rd *Round, t0 time.Time) error {
	deadline := t0.Add(r.cfg.Timeout)
	for n := 0; ; n++ {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.writer.Keys.TagKey(wctx, &pb.TagKeyRequest{KeyId: r.probeK,
			Tags: map[string]string{"drill-round": strconv.Itoa(rd.Round), "drill-probe": strconv.Itoa(n)}})
		cancel()
		if err == nil {
			rd.TimeToFirstWrite = ms(time.Since(t0))
			r.progressf("%s: first acknowledged write after %s", tag, fmtMs(rd.TimeToFirstWrite))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no write acknowledged within %s: %w", r.cfg.Timeout, err)
		}
		sleepCtx(ctx, pollInterval)
	}
}

// currentLeader waits until the nodes agree on a leader.
func (r *run) currentLeader(ctx context.Context) (string, error) {
	var lead string
	_, err := r.probe.waitFor(ctx, r.nodes, r.cfg.Timeout, func(vs []nodeView) bool {
		lead = leaderOf(r.nodes, vs)
		return lead != ""
	})
	if err != nil {
		return "", fmt.Errorf("the nodes did not agree on a leader within %s: %w", r.cfg.Timeout, err)
	}
	return lead, nil
}

// hsmTarget picks whose HSM round i takes: the configured node, else the
// followers in turn.
func (r *run) hsmTarget(i int, leader string) Node {
	if r.cfg.Target != "" {
		return r.node(r.cfg.Target)
	}
	var followers []Node
	for _, n := range r.nodes {
		if n.ID != leader {
			followers = append(followers, n)
		}
	}
	return followers[(i-1)%len(followers)]
}

func (r *run) node(id string) Node {
	for _, n := range r.nodes {
		if n.ID == id {
			return n
		}
	}
	return Node{ID: id}
}

// act runs an operator action under the drill's timeout.
func (r *run) act(ctx context.Context, a Action, n Node) error {
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	return a(actx, n)
}

// ticker prints the load every few seconds until stopped.
func (r *run) ticker() func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		const every = 5 * time.Second
		t := time.NewTicker(every)
		defer t.Stop()
		next := 0
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var ss []Sample
			ss, next = r.l.since(next)
			errs := 0
			for _, s := range ss {
				if !s.OK() {
					errs++
				}
			}
			r.progressf("load: %.0f ops/s, %d error(s) in the last %s", float64(len(ss))/every.Seconds(), errs, every)
		}
	}()
	return func() { close(done); <-stopped }
}

func (r *run) progressf(format string, args ...any) {
	if r.cfg.Progress == nil {
		return
	}
	el := time.Duration(0)
	if r.l != nil && !r.l.start.IsZero() {
		el = time.Since(r.l.start)
	}
	line := fmt.Sprintf("[%6.1fs] %s\n", el.Seconds(), fmt.Sprintf(format, args...))
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	_, _ = io.WriteString(r.cfg.Progress, line)
}

// runID names a drill's keys and aliases.
func runID() string {
	return strconv.FormatInt(time.Now().Unix()%1e8, 36) + strconv.Itoa(int(time.Now().UnixNano()%1000))
}

func nodeIDs(nodes []Node) []string {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	return ids
}

func nodeAddrs(nodes []Node) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.ID + " " + n.Addr
	}
	return strings.Join(parts, ", ")
}

// endpointsFrom lists the nodes' addresses starting at the i-th.
func endpointsFrom(nodes []Node, i int) []string {
	out := make([]string, 0, len(nodes))
	for k := range nodes {
		out = append(out, nodes[(i+k)%len(nodes)].Addr)
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func excSuffix(exc string) string {
	if exc == "" {
		return ""
	}
	return " (" + exc + ")"
}
