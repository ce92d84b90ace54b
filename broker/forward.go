package broker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Writes reach Raft through the leader. A follower that is asked for a
// write encodes the command and forwards it to the leader over the
// internal ClusterService.ForwardCommand RPC, authenticated with its node
// certificate; the leader applies it and answers once it is committed.
// The follower then waits until it has applied the entry itself, so that a
// client reads its own writes from the node it wrote through.

// peers caches one client connection per peer gRPC address.
type peers struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool // Close ran: no more connections
}

func (s *Service) peerConn(addr string) (*grpc.ClientConn, error) {
	s.peers.mu.Lock()
	defer s.peers.mu.Unlock()
	if s.peers.closed {
		return nil, newError(codes.Unavailable, ExcDependencyTimeout, "node %s is shutting down", s.node.ID())
	}
	if c, ok := s.peers.conns[addr]; ok {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if s.cfg.PeerTLS != nil {
		creds = credentials.NewTLS(s.cfg.PeerTLS)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	if s.peers.conns == nil {
		s.peers.conns = map[string]*grpc.ClientConn{}
	}
	s.peers.conns[addr] = c
	return c, nil
}

// Close writes the pending summary lines of unauthenticated refusals
// (audit_anonymous.go) and releases the connections to peers. Call it
// after the servers have stopped and before the audit log is closed.
func (s *Service) Close() {
	s.writeAnonymousSummaries()
	s.peers.mu.Lock()
	defer s.peers.mu.Unlock()
	s.peers.closed = true
	for a, c := range s.peers.conns {
		_ = c.Close()
		delete(s.peers.conns, a)
	}
}

// leaderClient returns a ClusterService client for the current leader,
// waiting for an election to finish if there is none. Its errors are
// marked NotCarriedOut: nothing was passed to a leader.
func (s *Service) leaderClient(ctx context.Context) (lc pb.ClusterServiceClient, leader string, err error) {
	defer func() {
		if err != nil {
			err = notCarriedOut(err)
		}
	}()
	// An election takes about a second on the default timeouts; a node
	// that sees no leader for longer is most likely in a cluster that lost
	// its quorum, and says so while its caller still listens, rather than
	// at the caller's deadline, which the caller sees only as its own.
	wait := leaderWait
	if d, ok := ctx.Deadline(); ok {
		// Answer a little before the caller's deadline, for it to read.
		wait = max(min(wait, time.Until(d)-leaderAnswerMargin), 0)
	}
	giveUp := time.NewTimer(wait)
	defer giveUp.Stop()
	for {
		id, _ := s.node.Leader()
		if id != "" {
			if id == s.node.ID() {
				return nil, id, nil
			}
			n, ok := s.node.State().Node(id)
			if !ok || n.GRPCAddr == "" {
				return nil, id, newError(codes.Unavailable, ExcDependencyTimeout, "the leader %s has not published its gRPC address", id)
			}
			c, err := s.peerConn(n.GRPCAddr)
			if err != nil {
				return nil, id, err
			}
			return pb.NewClusterServiceClient(c), id, nil
		}
		if why := s.knownRemoved(); why != "" {
			// No leader will come: waiting only hides why.
			return nil, "", newError(codes.FailedPrecondition, ExcInvalidState, "node %s was removed from the cluster (%s); ask a member", s.node.ID(), why)
		}
		select {
		case <-ctx.Done():
			return nil, "", newError(codes.Unavailable, ExcDependencyTimeout, "no cluster leader: %v", ctx.Err())
		case <-giveUp.C:
			if s.node.Unlisted() {
				return nil, "", newError(codes.Unavailable, ExcDependencyTimeout,
					"no cluster leader for %s: node %s is not in the cluster configuration it knows; it was removed from the cluster", wait.Round(time.Millisecond), s.node.ID())
			}
			return nil, "", newError(codes.Unavailable, ExcDependencyTimeout,
				"no cluster leader for %s: the cluster may have lost its quorum (a majority of its voters must be up and reach each other), "+
					"or this node was removed while it was away; retry", wait.Round(time.Millisecond))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// leaderWait is how long leaderClient waits for a leader to be elected,
// well over an election's second or two; leaderAnswerMargin is how long
// before the caller's deadline it answers, if that comes first.
const (
	leaderWait         = 5 * time.Second
	leaderAnswerMargin = 250 * time.Millisecond
)

// apply replicates one command, through the leader, and waits until this
// node has applied it.
func (s *Service) apply(ctx context.Context, c cluster.Command) (any, error) {
	if task := requestOf(ctx); task != nil && task.front == FrontInternal {
		return s.applyInternal(ctx, task, c)
	}
	if err := s.auditBeforeChange(ctx, c); err != nil {
		return nil, err
	}
	return s.replicate(ctx, c)
}

// applyInternal makes one change of the node's own work (Internal). Each
// such change is a request of its own in the audit log, an intent line
// before it is proposed and an outcome line after, so that every intent
// has its outcome whatever else the task does. Two kinds write no line:
// the node's member record (heartbeat and registration: liveness,
// rewritten every 30 s, not a change anyone made) and audit checkpoints
// (a line for a checkpoint would itself call for the next checkpoint).
func (s *Service) applyInternal(ctx context.Context, task *request, c cluster.Command) (any, error) {
	switch c.Type() {
	case cluster.TypeUpsertNode, cluster.TypeAuditCheckpoint:
		return s.replicate(ctx, c)
	}
	id, _ := task.identity()
	task.mu.Lock()
	rq := &request{front: task.front, action: task.action, requestID: task.requestID, peer: task.peer, id: id, identified: true}
	task.mu.Unlock()
	rq.addKey(commandKeyID(c))
	if err := s.auditAhead(rq); err != nil {
		return nil, err
	}
	res, err := s.replicate(context.WithValue(ctx, requestKey{}, rq), c)
	_ = s.endGRPC(rq, err) // the intent is written: a failed outcome line is logged, and verify reports it
	return res, err
}

// replicate proposes c through the leader and waits until this node has
// applied it.
func (s *Service) replicate(ctx context.Context, c cluster.Command) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	for {
		res, err := s.node.Apply(ctx, c)
		if !errors.Is(err, cluster.ErrNotLeader) {
			if err != nil {
				return nil, fmt.Errorf("replicate %s: %w", c.Type(), err)
			}
			return res, nil
		}
		res, retry, err := s.forward(ctx, c)
		if !retry {
			return res, err
		}
		// Answer with the refusal while the caller still listens, rather
		// than retry into its deadline, which it would see only as its own.
		if d, ok := ctx.Deadline(); ok && time.Until(d) < leaderAnswerMargin {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// forward sends c to the leader. retry is true only when the command
// certainly was not applied (there is no leader, or the node we reached was
// no longer the leader), so a retry cannot apply it twice.
func (s *Service) forward(ctx context.Context, c cluster.Command) (any, bool, error) {
	b, err := cluster.EncodeCommand(c)
	if err != nil {
		return nil, false, err
	}
	lc, leader, err := s.leaderClient(ctx)
	if err != nil {
		// No leader yet is worth waiting for; a node that knows it was
		// removed will have none.
		var e *Error
		removed := errors.As(err, &e) && e.Code == codes.FailedPrecondition
		return nil, ctx.Err() == nil && !removed, err
	}
	if lc == nil { // we became the leader meanwhile
		return nil, true, cluster.ErrNotLeader
	}
	var p peer.Peer
	resp, err := lc.ForwardCommand(outgoing(ctx), &pb.ForwardCommandRequest{Command: b}, grpc.Peer(&p))
	if err != nil {
		st, _ := status.FromError(err)
		// Safe to retry: the node reached was not the leader, or the request
		// never left this process (no connection to the old leader).
		switch {
		case st.Code() == codes.Unavailable && reasonOf(st) == reasonNotLeader:
			return nil, true, notCarriedOut(newError(codes.Unavailable, ExcDependencyTimeout,
				"node %s, which this node took for the cluster leader, no longer leads: an election is under way; retry", leader))
		case st.Code() == codes.Unavailable && p.Addr == nil:
			return nil, true, leaderUnreachable(leader, st)
		}
		return nil, false, s.leaderError(ctx, st)
	}
	return nil, false, s.waitApplied(ctx, resp.GetIndex())
}

// leaderUnreachable is the error of a call to the leader that never left
// this node: nothing reached the leader, and the caller may retry.
func leaderUnreachable(leader string, st *status.Status) error {
	return notCarriedOut(newError(codes.Unavailable, ExcDependencyTimeout,
		"the cluster leader %s does not answer (%s): it may have failed; a new leader is elected once the other voters notice, "+
			"if a majority of them are up and reach each other; retry", leader, st.Message()))
}

// passToLeader returns the error of a call passed on to the leader as
// it came, unless the call never reached it (leaderUnreachable) or the
// leader refused this node: the caller was authorized here, and the
// leader checks only that a member passed the call on, so a refusal means
// this node is no member (it was removed), not that the caller may not.
func (s *Service) passToLeader(leader string, p *peer.Peer, err error) error {
	st, _ := status.FromError(err)
	switch {
	case err == nil:
		return nil
	case st.Code() == codes.Unavailable && p.Addr == nil:
		return leaderUnreachable(leader, st)
	case st.Code() == codes.PermissionDenied:
		return notCarriedOut(newError(codes.FailedPrecondition, ExcInvalidState,
			"the leader %s does not take node %s for a member (%s): this node was removed from the cluster; ask a member", leader, s.node.ID(), st.Message()))
	}
	return err
}

// leaderError is the error of a ForwardCommand that reached the leader:
// the leader's own answer (a refusal of the command, with its exception)
// as it gave it, or, when the call broke off (the leader died, the
// connection dropped), an Unavailable error saying that the write may or
// may not have been applied. Either way every front answers it as such,
// not as an internal error.
func (s *Service) leaderError(ctx context.Context, st *status.Status) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() != "" {
			e := &Error{Code: st.Code(), Exception: info.GetReason(), Message: st.Message()}
			if e.Code == codes.FailedPrecondition && e.Exception == ExcInvalidState {
				// The leader's apply refused the command for the state it
				// found: the same cause as on the leader, so that callers
				// that tell such refusals apart (a create past a bound)
				// answer the same through any node.
				e.Err = cluster.ErrInvalidState
			}
			return e
		}
	}
	s.log.Warn("a forwarded write broke off at the leader", "code", st.Code().String(), "err", st.Message())
	return newError(codes.Unavailable, ExcDependencyTimeout,
		"the leader was lost while it handled the write, which may or may not have been applied; re-read before retrying (%s)", st.Message())
}

// outgoing carries the request's id to the node a call is passed on to, so
// that its log lines and audit line name the request the client sent.
func outgoing(ctx context.Context) context.Context {
	if id := RequestID(ctx); id != "" {
		return metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
	}
	return ctx
}

// waitApplied waits until this node has applied the log up to index.
func (s *Service) waitApplied(ctx context.Context, index uint64) error {
	for {
		if applied, _ := s.node.State().LastApplied(); applied >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return newError(codes.Unavailable, ExcDependencyTimeout, "the write was committed by the leader but this node has not applied it yet; retry the read")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// reasonNotLeader marks a ForwardCommand refused because the receiver is
// not the leader: nothing was applied, so the sender may retry.
const reasonNotLeader = "NotLeader"

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if r, ok := d.(interface{ GetReason() string }); ok {
			return r.GetReason()
		}
	}
	return ""
}

// ForwardCommand applies a command forwarded by a follower. Only cluster
// nodes (certificates with server authentication from the cluster CA) may
// call it. A node that is not the leader refuses rather than passing the
// command on.
func (s *Service) ForwardCommand(ctx context.Context, req *pb.ForwardCommandRequest) (*pb.ForwardCommandResponse, error) {
	if err := s.requireNode(ctx); err != nil {
		return nil, err
	}
	if !s.node.IsLeader() {
		return nil, newError(codes.Unavailable, reasonNotLeader, "node %s is not the leader", s.node.ID())
	}
	cmd, err := cluster.DecodeCommand(req.GetCommand())
	if err != nil {
		return nil, err
	}
	// The audit line says what was forwarded.
	nameObject(ctx, "command:"+cmd.Type().String())
	if err := s.checkForwarded(ctx, cmd); err != nil {
		return nil, err
	}
	_, err = s.node.Apply(ctx, cmd)
	if errors.Is(err, cluster.ErrNotLeader) {
		return nil, newError(codes.Unavailable, reasonNotLeader, "node %s lost leadership", s.node.ID())
	}
	if err != nil {
		return nil, err
	}
	index, _ := s.node.State().LastApplied()
	return &pb.ForwardCommandResponse{Index: index}, nil
}

// maxForwardedClockSkew is how far from the leader's clock the time a
// member puts in a forwarded join token may be.
const maxForwardedClockSkew = 2 * time.Minute

// checkForwarded refuses a forwarded command that the member passing it on
// has no business sending, or whose time the leader does not believe:
//   - a join token added or revoked far from the leader's clock (a
//     compromised member could otherwise mint one dated years ahead, which
//     would outlive its removal, since a token lives at most a day from
//     its time; or revoke one as of a time at which it has expired);
//   - a node record for another node, or an admission: a member writes its
//     own record only (its health, which the leader's promotion of a
//     non-voter trusts), and only the leader admits a node, which also
//     brings back an id that was removed.
func (s *Service) checkForwarded(ctx context.Context, cmd cluster.Command) error {
	var at time.Time
	switch c := cmd.(type) {
	case *cluster.AddJoinToken:
		at = c.At
	case *cluster.RevokeJoinToken:
		at = c.At
	case *cluster.UpsertNode:
		if s.cfg.InsecureNoClientAuth {
			return nil // no identities to compare
		}
		if c.Admit {
			return newError(codes.PermissionDenied, ExcAccessDenied, "only the leader admits a node; a member may not pass on an admission of node %.64q", c.Node.ID)
		}
		if from := Principal(ctx); c.Node.ID != from {
			return newError(codes.PermissionDenied, ExcAccessDenied, "node %s may write only its own record, not node %.64q's", from, c.Node.ID)
		}
		return nil
	default:
		return nil
	}
	if d := at.Sub(s.now()); d > maxForwardedClockSkew || d < -maxForwardedClockSkew {
		return errInvalidArg(ExcValidation, "a forwarded %s dated %s, %s from the leader's clock (at most %s)",
			cmd.Type(), at.UTC().Format(time.RFC3339), d.Round(time.Second), maxForwardedClockSkew)
	}
	return nil
}

// peerCert is the verified client certificate of the request, nil on a
// plaintext (test) server.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// isNodeCert: node certificates, unlike client certificates, are valid for
// server authentication (a node serves gRPC and Raft).
func isNodeCert(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth {
			return true
		}
	}
	return false
}

// requireNode admits only cluster nodes (and anyone on a server run with
// InsecureNoClientAuth, which has no identities at all).
func (s *Service) requireNode(ctx context.Context) error {
	if s.cfg.InsecureNoClientAuth {
		return nil
	}
	if c := peerCert(ctx); c != nil && isNodeCert(c) {
		return nil
	}
	return newError(codes.PermissionDenied, ExcAccessDenied, "only cluster nodes may call this")
}

// ReadIndex answers a follower's read barrier: the leader confirms its
// leadership with a quorum and returns its read index
// (cluster.Node.ReadIndex).
func (s *Service) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexResponse, error) {
	if err := s.requireNode(ctx); err != nil {
		return nil, err
	}
	if !s.node.IsLeader() {
		return nil, newError(codes.Unavailable, reasonNotLeader, "node %s is not the leader", s.node.ID())
	}
	index, err := s.node.ReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ReadIndexResponse{CommitIndex: index}, nil
}

// syncWithLeader waits until this node has applied everything the leader
// had committed when asked. Nodes call it before answering "not found", so
// that a key acknowledged through another node a moment ago is found; the
// leader asks itself (its own read index, confirmed with a quorum). It
// fails when no leader can confirm, and then "not found" cannot be told
// from "not applied yet".
//
// Callers share round trips (leaderSync): a caller joins the next round to
// start, never one already under way, so the round it waits for asked the
// leader after it called, and a node has one round in flight at a time.
// Each round costs the leader a quorum check and an audit line.
func (s *Service) syncWithLeader(ctx context.Context) error {
	return s.syncVia(ctx, &s.leaderSync)
}

// syncUnauthenticated is syncWithLeader for a lookup made before the
// caller has proved an identity, which anyone can cause: a made-up TDE
// token on a follower cost a round each, 7,805 in 3 s in one test, and the
// leader's audit log grew 3.5 MB, past the bound on the lines of
// unauthenticated refusals (docs/SECURITY.md item 13). These rounds are
// apart from the others and start at most every anonSyncSpacing, so a
// token issued through another node a moment ago still works, a little
// later, and a flood costs the leader at most 10 rounds a second. On the
// leader itself such a lookup waits only until the leader has applied what
// it knows to be committed (cluster.Node.LocalReadIndex), with no round.
func (s *Service) syncUnauthenticated(ctx context.Context) error {
	return s.syncVia(ctx, &s.anonSync)
}

// anonSyncSpacing is the least time between the starts of two rounds of
// syncUnauthenticated.
const anonSyncSpacing = 100 * time.Millisecond

func (s *Service) syncVia(ctx context.Context, l *leaderSync) error {
	if l.localOnLeader && s.node.IsLeader() {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.MaxStaleness)
		defer cancel()
		if err := s.readIndexHere(ctx, false); err != nil {
			return s.errCannotSync()
		}
		return nil
	}
	r := l.join(s.syncRound)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return s.errCannotSync()
	}
}

// syncRound is one round trip of syncWithLeader: ReadIndex on the leader,
// then waiting until this node has applied what it had committed. The
// leader itself takes its read index too: a leader elected a moment ago
// may not have applied what the previous one acknowledged, and one that
// lost its quorum without knowing it must not answer "not found".
func (s *Service) syncRound() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.MaxStaleness)
	defer cancel()
	if s.node.IsLeader() {
		if err := s.readIndexHere(ctx, true); err != nil {
			return s.errCannotSync()
		}
		return nil
	}
	lc, _, err := s.leaderClient(ctx)
	if err == nil && lc != nil {
		var resp *pb.ReadIndexResponse
		if resp, err = lc.ReadIndex(ctx, &pb.ReadIndexRequest{}); err == nil {
			err = s.waitApplied(ctx, resp.GetCommitIndex())
		}
	}
	if err != nil || lc == nil {
		return s.errCannotSync()
	}
	return nil
}

// readIndexHere waits, on the leader, until this node's state reflects
// every write acknowledged before the call (cluster.Node.ReadIndex), or,
// without confirm, every write it knows to be committed, with no round to
// the other voters (cluster.Node.LocalReadIndex).
func (s *Service) readIndexHere(ctx context.Context, confirm bool) error {
	readIndex := s.node.LocalReadIndex
	if confirm {
		readIndex = s.node.ReadIndex
	}
	index, err := readIndex(ctx)
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, index)
}

func (s *Service) errCannotSync() error {
	return newError(codes.Unavailable, ExcDependencyTimeout,
		"node %s cannot confirm the latest state with the cluster leader; retry or use another node", s.node.ID())
}

// leaderSync runs one round at a time and gathers the callers that come
// while one runs into the next, which starts when it ends, and asks the
// leader no sooner than spacing after the last one did. The zero value is
// ready, with no spacing.
type leaderSync struct {
	spacing time.Duration
	// localOnLeader: on the leader, a caller waits only until the leader
	// has applied what it knows to be committed (LocalReadIndex), alone,
	// with no round to the other voters. For lookups anyone can cause.
	localOnLeader bool

	mu        sync.Mutex
	running   bool
	lastStart time.Time
	next      *syncWait // callers waiting for a round that has not started
}

// syncWait is the outcome of one round, for the callers that joined it.
type syncWait struct {
	done chan struct{}
	err  error
}

// join returns the round the caller waits for, starting it (run) if none
// is running.
func (l *leaderSync) join(run func() error) *syncWait {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		l.next = &syncWait{done: make(chan struct{})}
	}
	w := l.next
	if !l.running {
		l.startLocked(run)
	}
	return w
}

// startLocked starts the waiting round; l.mu is held. Until it asks the
// leader (after the spacing), callers still join it.
func (l *leaderSync) startLocked(run func() error) {
	w := l.next
	l.running = true
	wait := time.Until(l.lastStart.Add(l.spacing))
	go func() {
		if wait > 0 {
			time.Sleep(wait)
		}
		l.mu.Lock()
		l.next = nil // callers from now on wait for the round after this one
		l.lastStart = time.Now()
		l.mu.Unlock()
		w.err = run()
		close(w.done)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.running = false
		if l.next != nil {
			l.startLocked(run)
		}
	}()
}
