package broker

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"sync"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
)

// Authorization (package authz) happens in two steps, on whichever node
// receives the request, against that node's replicated copy of
// principals, policies and grants: the role gate (authz.Gate), which a
// front applies before the operation runs, and the key check
// (authz.Authorizer.DecideKey), which resolve and keyByID apply to every
// key the operation reaches. This file is the plumbing around them.
//
// A front marks each request with a *request in its context; the core
// finds it there. The node's own work (automatic rotation, heartbeats,
// joining, restoring a backup) carries an explicit internal request made
// by Internal, which passes the key check and is audited under the node's
// name. A context with neither is refused (Internal error) and the refusal
// is logged and audited: a code path that forgot to attach its request
// must fail closed, never run as trusted.

// Fronts a request can arrive on, as audit lines name them.
const (
	FrontGRPC = "grpc"
	FrontAWS  = "aws"
	FrontXKS  = "xks"
	// FrontInternal is the node's own work, marked with Internal.
	FrontInternal = "internal"
)

// grpcActions maps gRPC method names to the AWS action where the names
// differ, so that one policy statement covers both fronts.
var grpcActions = map[string]string{
	"RotateKey":       "RotateKeyOnDemand",
	"ListKeyVersions": "ListKeyRotations",
	"TagKey":          "TagResource",
	"UntagKey":        "UntagResource",
	"ListKeyTags":     "ListResourceTags",
}

// grpcAction is the action of a gRPC method ("/hsmbroker.v1.KeyService/TagKey"
// is kms:TagResource).
func grpcAction(fullMethod string) string {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return fullMethod
	}
	switch svc {
	case "hsmbroker.v1.KeyService", "hsmbroker.v1.CryptoService", "hsmbroker.v1.RawService":
		if m, ok := grpcActions[method]; ok {
			method = m
		}
		return "kms:" + method
	case "hsmbroker.v1.ClusterService", "hsmbroker.v1.AccessService", "hsmbroker.v1.AuditService", "hsmbroker.v1.DataObjectService":
		return "hsmbroker:" + method
	case "hsmbroker.v1.TDEService":
		return "hsmbroker:TDE" + method
	}
	return fullMethod
}

// RequestContexts are the encryption contexts a request carries, for key
// policy conditions and grant constraints: EncryptionContext for most
// operations, Source and Destination for ReEncrypt.
type RequestContexts struct {
	EncryptionContext map[string]string
	Source            map[string]string
	Destination       map[string]string
	// KeyRef is the key the request names (KeyId, or SourceKeyId), for the
	// audit line of a request refused before the key is looked up.
	KeyRef string
}

// request is one API request as authorization and audit see it. The front
// that receives it makes it; the core fills in the keys it reaches and the
// decision as the request runs.
type request struct {
	front, requestID, peer string

	mu         sync.Mutex
	action     string
	id         authz.Caller
	identified bool
	contexts   RequestContexts
	keyIDs     []string
	denied     string // why authorization refused the request
	// aheadSeq is the seq of the line written before the request's first
	// replicated change (0: none).
	aheadSeq uint64
	finished bool
}

type requestKey struct{}

func requestOf(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

// Internal marks ctx as carrying work the node does on its own, named by
// task ("rotation", "heartbeat", "join", "restore"): work no caller asked
// for. Such work passes the key check, and its replicated changes are
// audited with front "internal", operation "internal:TASK" and role
// "internal". Only code of the node itself may call it, never a front on
// behalf of a caller. Any request ctx carried is replaced.
func Internal(ctx context.Context, task string) context.Context {
	rq := &request{front: FrontInternal, action: "internal:" + task, identified: true,
		id: authz.Caller{Principal: "node", Role: authz.RoleInternal, Source: "internal", Internal: true}}
	return context.WithValue(ctx, requestKey{}, rq)
}

// errUnmarked is the answer to core work whose context carries neither a
// request nor the internal marker.
func errUnmarked(what string) error {
	return newError(codes.Internal, ExcInternal, "%s refused: the call carries no request and no internal marker", what)
}

// refuseUnmarked records, in the log and (when one is kept) the audit log,
// that work without a request or internal marker was refused, and returns
// the error to answer with.
func (s *Service) refuseUnmarked(what string) error {
	s.log.Error("refused work that carries no request and no internal marker; this is a bug in the caller", "what", what)
	if log := s.cfg.AuditLog; log != nil {
		rec := &audit.Record{Node: s.cfg.NodeID, Front: "none", Operation: what, Result: "Internal", Code: codes.Internal.String(),
			Decision: "deny", Reason: "no request and no internal marker"}
		if _, err := log.Append(rec, false); err != nil {
			s.log.Error("audit log write failed", "err", err)
		}
	}
	return errUnmarked(what)
}

func (r *request) addKey(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != "" && !slices.Contains(r.keyIDs, id) {
		r.keyIDs = append(r.keyIDs, id)
	}
}

func (r *request) deny(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.denied == "" {
		r.denied = reason
	}
}

func (r *request) setPrincipal(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.identified {
		r.id.Principal = p
	}
}

func (r *request) identity() (authz.Caller, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id, r.identified
}

// Call describes a request arriving at a front other than gRPC.
type Call struct {
	// Front is FrontAWS or FrontXKS.
	Front string
	// Action is the operation's action, if already known ("kms:Encrypt",
	// "kms-xks-proxy:Encrypt"); Authorize sets it otherwise.
	Action string
	// RequestID is the id the caller sees in the answer.
	RequestID string
	// Peer is the caller's network address.
	Peer string
}

// BeginRequest marks ctx as carrying one request of a front other than
// gRPC; the gRPC server does the same for its own. The principal is taken
// from WithPrincipal once the front has authenticated the caller. Every
// request begun must be ended with EndRequest, which writes its audit line.
func (s *Service) BeginRequest(ctx context.Context, c Call) context.Context {
	return context.WithValue(ctx, requestKey{}, &request{front: c.Front, action: c.Action, requestID: c.RequestID, peer: c.Peer})
}

// Authorize identifies the principal ctx carries (WithPrincipal) and checks
// that its role admits action; contexts are the request's encryption
// contexts, for the key check that follows when the operation reaches a
// key. defaultRole is the role the front's credential names for the
// principal ("" for none: the principal then has role user unless the
// cluster records another). An error is an AccessDeniedException to
// return as is. Requests of the external key store API (FrontXKS) are
// authorized by their own credentials, which only AWS KMS holds; key
// policies do not apply to them.
func (s *Service) Authorize(ctx context.Context, action string, defaultRole authz.Role, contexts RequestContexts) error {
	rq := requestOf(ctx)
	if rq == nil {
		return newError(codes.Internal, ExcInternal, "request not begun")
	}
	principal := Principal(ctx)
	id := authz.Caller{Principal: principal, Role: authz.RoleUser, Source: "default"}
	if defaultRole != "" {
		id.Role, id.Source = defaultRole, "credential"
	}
	if p, ok := s.node.State().Principal(principal); ok {
		id.Role, id.Source = p.Role, "record"
	}
	if principal == "" {
		id = authz.Caller{}
	}
	if err := s.roleGate(rq, id, action, contexts); err != nil {
		return err
	}
	// Every action a front authorizes here (TrentService's, TDE's) reads
	// the node's state or uses its HSM: a node that is not ready refuses
	// it, as the gRPC front does before the call.
	return s.refuseIfNotReady()
}

// ReadinessGate is the readiness gate for a front whose requests reach
// the core through more than one call (the XKS proxy API): nil when the
// node may serve requests that read its state or use its HSM, else the
// Unavailable error saying why it may not.
func (s *Service) ReadinessGate() error { return s.refuseIfNotReady() }

// roleGate records who the request comes from and applies the role gate.
func (s *Service) roleGate(rq *request, id authz.Caller, action string, contexts RequestContexts) error {
	rq.mu.Lock()
	rq.id, rq.identified, rq.action, rq.contexts = id, true, action, contexts
	rq.mu.Unlock()
	d := authz.Gate(id, action)
	switch d.Verdict {
	case authz.Allow:
		return nil
	case authz.DenyUnauthenticated:
		rq.deny(d.Reason)
		return errUnauthenticated()
	}
	rq.deny(d.Reason)
	if id.Role == authz.RoleOutsideNode {
		return newError(codes.PermissionDenied, ExcAccessDenied,
			"node %s is not a member of this cluster (it was removed, or has not joined): its certificate may not perform %s", id.Principal, action)
	}
	return newError(codes.PermissionDenied, ExcAccessDenied, "%s (role %s) is not authorized to perform %s", id.Principal, id.Role.Name(), action)
}

// RefuseRequest records that the front refused the request begun for ctx
// (BeginRequest) before it reached the core, for reason (a bound on
// connections, a message it could not read): its audit line says "deny"
// with that reason.
func (s *Service) RefuseRequest(ctx context.Context, reason string) {
	if rq := requestOf(ctx); rq != nil {
		rq.deny(reason)
	}
}

// RefuseUnauthenticated records that the request begun for ctx
// (BeginRequest) is refused because it proved no identity, for reason (the
// front's own, such as the signature check that failed): its audit line
// says "deny" with that reason, as the role gate's refusals do.
func (s *Service) RefuseUnauthenticated(ctx context.Context, reason string) {
	if rq := requestOf(ctx); rq != nil {
		rq.deny("unauthenticated: " + reason)
	}
}

func errUnauthenticated() error {
	return newError(codes.Unauthenticated, ExcUnauthenticated, "the caller is not authenticated")
}

// authorizeKey is the key check: resolve and keyByID call it for every key
// a request reaches. field is the request field that named the key.
func (s *Service) authorizeKey(ctx context.Context, field string, k cluster.Key) error {
	rq := requestOf(ctx)
	if rq == nil {
		return s.refuseUnmarked("use of key " + k.ID)
	}
	rq.addKey(k.ID)
	id, ok := rq.identity()
	// Requests of the external key store API are authorized by their own
	// credentials, which only AWS KMS holds; key policies do not apply.
	if rq.front == FrontXKS && id.Principal != "" {
		return nil
	}
	if !ok {
		id = authz.Caller{}
	}
	rq.mu.Lock()
	kr := authz.KeyRequest{Caller: id, Action: rq.action, Field: field, EncryptionContext: rq.contexts.EncryptionContext,
		SourceContext: rq.contexts.Source, DestinationContext: rq.contexts.Destination}
	rq.mu.Unlock()
	d := s.access.DecideKey(kr, s.keyTerms(k), s.grantsOn(k.ID, id.Principal))
	switch d.Verdict {
	case authz.Allow:
		return nil
	case authz.DenyUnauthenticated:
		rq.deny(d.Reason)
		return errUnauthenticated()
	case authz.DenyRole:
		rq.deny(d.Reason)
		return newError(codes.PermissionDenied, ExcAccessDenied, "%s (role %s) may not use key %s", id.Principal, id.Role.Name(), k.ID)
	}
	rq.deny(d.Reason)
	return newError(codes.PermissionDenied, ExcAccessDenied, "%s is not authorized to perform %s on key %s: %s", id.Principal, d.Action, k.ID, d.Reason)
}

// keyAllows evaluates k's policy and grants for one caller, action and
// encryption context (authz.Authorizer.Allows).
func (s *Service) keyAllows(k cluster.Key, id authz.Caller, action string, ec map[string]string) (bool, string) {
	return s.access.Allows(s.keyTerms(k), id, action, ec, s.grantsOn(k.ID, id.Principal))
}

// keyTerms is what of k decides access to it.
func (s *Service) keyTerms(k cluster.Key) authz.Key {
	return authz.Key{Creator: k.Creator, Policy: k.Policy, ID: k.ID}
}

// grantsOn reads the grants principal holds on a key from this node's
// state, when the key check asks for them.
func (s *Service) grantsOn(keyID, principal string) func() []authz.Grant {
	return func() []authz.Grant {
		var gs []authz.Grant
		for _, g := range s.node.State().Grants(keyID, principal) {
			gs = append(gs, g.Terms())
		}
		return gs
	}
}

// identifyPeer is the identity of a gRPC caller: its verified client
// certificate's principal, with the role the cluster records for it, else
// the certificate's own; cluster members' certificates are nodes.
func (s *Service) identifyPeer(ctx context.Context) authz.Caller {
	if s.cfg.InsecureNoClientAuth {
		return authz.Caller{Principal: Principal(ctx), Role: authz.RoleAdmin, Source: "open", Open: true}
	}
	c := peerCert(ctx)
	if c == nil {
		return authz.Caller{}
	}
	return s.certIdentity(c)
}

func (s *Service) certIdentity(c *x509.Certificate) authz.Caller {
	name := PrincipalFromCert(c)
	if isNodeCert(c) {
		// A node is its certificate's common name (JoinCluster holds a
		// joiner to it), and a member only while the cluster's
		// configuration names it: removing a node withdraws what its
		// certificate may do, though the certificate stays valid.
		if !s.node.IsMember(c.Subject.CommonName) {
			return authz.Caller{Principal: name, Role: authz.RoleOutsideNode, Source: "node"}
		}
		return authz.Caller{Principal: name, Role: authz.RoleNode, Source: "node"}
	}
	if p, ok := s.node.State().Principal(name); ok {
		return authz.Caller{Principal: name, Role: p.Role, Source: "record"}
	}
	if r := authz.RoleOf(c); r.Issuable() {
		return authz.Caller{Principal: name, Role: r, Source: "certificate"}
	}
	return authz.Caller{Principal: name, Role: "", Source: "certificate"}
}

// requestContexts are the encryption contexts of a gRPC request.
func requestContexts(req any) RequestContexts {
	var c RequestContexts
	if r, ok := req.(interface{ GetEncryptionContext() map[string]string }); ok {
		c.EncryptionContext = r.GetEncryptionContext()
	}
	if r, ok := req.(interface {
		GetSourceEncryptionContext() map[string]string
		GetDestinationEncryptionContext() map[string]string
	}); ok {
		c.Source, c.Destination = r.GetSourceEncryptionContext(), r.GetDestinationEncryptionContext()
	}
	switch r := req.(type) {
	case interface{ GetKeyId() string }:
		c.KeyRef = r.GetKeyId()
	case interface{ GetTargetKeyId() string }:
		c.KeyRef = r.GetTargetKeyId()
	case interface{ GetDestinationKeyId() string }:
		c.KeyRef = r.GetDestinationKeyId()
	}
	return c
}

// accessInterceptor authorizes and audits each gRPC request; it runs
// inside unaryInterceptor, which has authenticated the connection and
// given the request its id.
func (s *Service) accessInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isHealthOrReflection(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, rq, err := s.beginGRPC(ctx, info.FullMethod, requestContexts(req))
	var resp any
	if err == nil {
		resp, err = handler(ctx, req)
	}
	if aerr := s.endGRPC(rq, err); aerr != nil {
		return nil, aerr
	}
	return resp, err
}

// accessStreamInterceptor does for a streaming call what accessInterceptor
// does for a unary one, inside streamInterceptor. A stream's request
// arrives only once the handler runs, so the role gate sees no encryption
// context: a streaming method must not reach keys (Backup reaches none).
// Since a stream's messages leave before the handler returns, the audit
// line is written, and synced, before the first one is sent; if that
// fails, nothing is sent. A stream that fails after that gets a second
// line amending the first.
func (s *Service) accessStreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isHealthOrReflection(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, rq, err := s.beginGRPC(ss.Context(), info.FullMethod, RequestContexts{})
	if err == nil {
		err = handler(srv, &auditedStream{contextStream: contextStream{ServerStream: ss, ctx: ctx}, s: s, rq: rq})
	}
	if aerr := s.endGRPC(rq, err); aerr != nil {
		return aerr
	}
	return err
}

// beginGRPC marks ctx as carrying one gRPC request and applies the role
// gate to its caller. An error is the refusal to answer with; endGRPC must
// be called either way.
func (s *Service) beginGRPC(ctx context.Context, method string, contexts RequestContexts) (context.Context, *request, error) {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	rq := &request{front: FrontGRPC, requestID: RequestID(ctx), peer: addr}
	ctx = context.WithValue(ctx, requestKey{}, rq)
	return ctx, rq, s.roleGate(rq, s.identifyPeer(ctx), grpcAction(method), contexts)
}

// endGRPC writes the audit line of a gRPC request that ended with err. A
// non-nil result means the line could not be written, and is the answer
// to give instead of the operation's.
func (s *Service) endGRPC(rq *request, err error) error {
	if err == nil {
		return s.endRequest(rq, "OK", codes.OK.String())
	}
	st := toStatus(err)
	result := reasonOf(st)
	if result == "" {
		result = st.Code().String()
	}
	return s.endRequest(rq, result, st.Code().String())
}

// auditedStream writes its request's audit line before the first message
// leaves; its handler sees the context that carries the request.
type auditedStream struct {
	contextStream
	s    *Service
	rq   *request
	sent bool
}

func (a *auditedStream) SendMsg(m any) error {
	if !a.sent {
		if err := a.s.auditAhead(a.rq); err != nil {
			return err
		}
		a.sent = true
	}
	return a.contextStream.SendMsg(m)
}

// EndRequest writes the audit line of a request begun with BeginRequest,
// with its result ("OK" or the AWS exception name) and the front's own
// status code. A non-nil error means the line could not be written: the
// front must then answer with that error (ServiceUnavailable) instead of
// the operation's answer, so that nothing unaudited leaves the node.
func (s *Service) EndRequest(ctx context.Context, result, code string) error {
	rq := requestOf(ctx)
	if rq == nil {
		return nil
	}
	return s.endRequest(rq, result, code)
}

// auditUnavailable is the answer to a request whose audit line could not
// be written.
func (s *Service) auditUnavailable() *Error {
	return newError(codes.Unavailable, ExcDependencyTimeout,
		"node %s cannot write its audit log, so it refuses requests; %s", s.cfg.NodeID, s.retryHint())
}

// refuseIfNotReady is the readiness gate every front applies to the
// requests that use the node's state or HSM (gRPC key and crypto calls,
// TrentService and XKS, TDE reads, KMIP): once the gate is on
// (WatchHealth), a node that is not ready refuses them, saying why. The
// refusal comes before any work, so it is marked NotCarriedOut: a client
// may send even a write to another node.
func (s *Service) refuseIfNotReady() error {
	if s.gate.Load() {
		if ok, why := s.Healthy(); !ok {
			return notCarriedOut(newError(codes.Unavailable, ExcDependencyTimeout, "node %s is not ready (%s); %s", s.node.ID(), why, s.retryHint()))
		}
	}
	return nil
}

// retryHint is what an Unavailable answer from this node advises: another
// node only where the cluster has one, so that a one-node cluster
// (restarting, or with its HSM down) does not send its callers looking for
// a node that does not exist.
func (s *Service) retryHint() string {
	if s.node.HasPeers() {
		return "retry or use another node"
	}
	return "retry later"
}

// endRequest writes the line that ends a request: its outcome. When an
// intent line was written for it (auditAhead), this line names it
// (Record.Intent), so that an intent without an outcome stands out.
func (s *Service) endRequest(rq *request, result, code string) error {
	log := s.cfg.AuditLog
	rq.mu.Lock()
	defer rq.mu.Unlock()
	if log == nil || rq.finished {
		return nil
	}
	rq.finished = true
	if rq.id.Principal == "" && !rq.id.Open && rq.aheadSeq == 0 && result != "OK" && !s.lineAnonymous(rq) {
		return nil // counted for a summary line (audit_anonymous.go)
	}
	rec := rq.recordLocked(s.cfg.NodeID, result, code)
	rec.Intent = rq.aheadSeq
	if _, err := log.Append(rec, false); err != nil {
		if rq.aheadSeq != 0 {
			// The intent audited the request, and its effect may already
			// be made: answering Unavailable would invite a retry of a
			// change that happened. The intent stays without outcome,
			// which verify reports.
			s.log.Error("audit log write failed; the request's intent line has no outcome", "request_id", rq.requestID, "intent", rq.aheadSeq, "err", err)
			return nil
		}
		s.log.Error("audit log write failed; refusing the request", "request_id", rq.requestID, "err", err)
		return s.auditUnavailable()
	}
	return nil
}

// auditBeforeChange writes the request's intent line, synced to disk,
// before its first replicated change is proposed: a change whose line
// cannot be written is never made. apply calls it.
func (s *Service) auditBeforeChange(ctx context.Context, c cluster.Command) error {
	rq := requestOf(ctx)
	if rq == nil {
		return s.refuseUnmarked("replicated change " + c.Type().String())
	}
	rq.addKey(commandKeyID(c))
	return s.auditAhead(rq)
}

// auditAhead writes the request's intent line (result audit.ResultIntent),
// synced to disk, before the request has an effect that cannot be withheld
// once its answer is known: a replicated change, or a stream's first
// message. The intent says the effect is about to be attempted, not that
// it happened: the line written at the end (endRequest) is its outcome,
// and a node that stops in between leaves an intent without outcome, which
// hsmctl audit verify reports. Only the first call writes.
func (s *Service) auditAhead(rq *request) error {
	log := s.cfg.AuditLog
	if log == nil {
		return nil
	}
	rq.mu.Lock()
	defer rq.mu.Unlock()
	if rq.aheadSeq != 0 || rq.finished {
		return nil
	}
	seq, err := log.Append(rq.recordLocked(s.cfg.NodeID, audit.ResultIntent, ""), true)
	if err != nil {
		s.log.Error("audit log write failed; the request has no effect", "request_id", rq.requestID, "err", err)
		return s.auditUnavailable()
	}
	rq.aheadSeq = seq
	return nil
}

func (r *request) recordLocked(node, result, code string) *audit.Record {
	rec := &audit.Record{Node: node, Front: r.front, RequestID: r.requestID, Peer: r.peer,
		Principal: r.id.Principal, Role: string(r.id.Role), Operation: r.action, Result: result, Code: code,
		Decision: "allow", Reason: r.denied, EncryptionContext: r.contexts.EncryptionContext, KeyRef: r.contexts.KeyRef}
	if r.denied != "" {
		rec.Decision = "deny"
	}
	if r.action == "kms:ReEncrypt" {
		rec.EncryptionContext = nil
	}
	if len(r.keyIDs) > 0 {
		rec.KeyID = r.keyIDs[0]
	}
	if len(r.keyIDs) > 1 {
		rec.KeyIDs = slices.Clone(r.keyIDs)
	}
	if r.id.Open {
		rec.Role = ""
	}
	return rec
}

// commandKeyID is the key a replicated change concerns, "" for none.
func commandKeyID(c cluster.Command) string {
	switch c := c.(type) {
	case *cluster.CreateKey:
		return c.Key.ID
	case *cluster.UpdateDescription:
		return c.KeyID
	case *cluster.SetKeyState:
		return c.KeyID
	case *cluster.ScheduleDeletion:
		return c.KeyID
	case *cluster.CancelDeletion:
		return c.KeyID
	case *cluster.AddVersion:
		return c.KeyID
	case *cluster.SetRotation:
		return c.KeyID
	case *cluster.TagKey:
		return c.KeyID
	case *cluster.UntagKey:
		return c.KeyID
	case *cluster.CreateAlias:
		return c.KeyID
	case *cluster.UpdateAlias:
		return c.KeyID
	case *cluster.PutPolicy:
		return c.KeyID
	case *cluster.CreateGrant:
		return c.Grant.KeyID
	case *cluster.RemoveGrant:
		return c.KeyID
	}
	return ""
}
