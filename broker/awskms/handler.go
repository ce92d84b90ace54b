package awskms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/hsmbroker/hsmbroker/keys"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes         = 1 << 20
	DefaultMaxInFlightBodyBytes = 64 << 20
	DefaultMaxSkew              = 5 * time.Minute
)

// Config configures a Handler. Zero values of optional fields mean their
// defaults.
type Config struct {
	// Service is the broker core every operation runs on. Required. Its
	// region and account name the ARNs, and requests must be signed for its
	// region.
	Service *broker.Service
	// Credentials authenticate TrentService requests: each access key
	// stands for a principal. Required.
	Credentials Credentials
	// Hosts, when set, are the names clients reach this endpoint by (host
	// names or IP addresses, without a port, compared without regard to
	// letter case): a request whose signed Host header names another is
	// refused with InvalidSignatureException, so that a request signed
	// for another service that shares the access key cannot be replayed
	// here. Empty: any Host is accepted.
	Hosts []string
	// XKS, when set, also serves the external key store proxy API.
	XKS *XKSConfig
	// Authorize, when set, is asked before every operation whether the
	// authenticated principal may perform action ("kms:Encrypt",
	// "kms-xks-proxy:Encrypt", ...); an error refuses the request with
	// AccessDeniedException. Roles, key policies and grants are enforced
	// by the core whether it is set or not (broker.Service.Authorize); this
	// hook is for further rules of the embedding program.
	Authorize func(ctx context.Context, principal, action string) error
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// MaxInFlightBodyBytes bounds the bodies held by all requests at once
	// (default DefaultMaxInFlightBodyBytes), and a quarter of it (at least
	// MaxBodyBytes) those of one source address: a request whose body
	// would exceed either is answered with ThrottlingException without
	// more of it being read. A body is counted at the buffer it is read
	// into, which grows as it arrives (bodyBudget).
	MaxInFlightBodyBytes int64
	// MaxSkew is how far a request's signing time may be from this
	// handler's clock, either way (default DefaultMaxSkew, as AWS).
	MaxSkew time.Duration
	// Logger receives one line per request (default slog.Default()).
	// Lines carry the operation, principal, request id and outcome, never
	// secrets, plaintext or key material.
	Logger *slog.Logger
	// Now is the clock for signature freshness (default time.Now).
	Now func() time.Time
}

// Handler serves the AWS KMS JSON protocol (TrentService: POST / with an
// X-Amz-Target header) and, when configured, the XKS proxy API, with
// SigV4 authentication, over a broker.Service. It is safe for concurrent
// use.
type Handler struct {
	svc       *broker.Service
	region    string
	account   string
	trent     verifier
	xks       *xksServer
	authorize func(ctx context.Context, principal, action string) error
	maxBody   int64
	log       *slog.Logger
	// anonLog takes the lines of requests that proved no identity, which
	// anyone can send (logRequest).
	anonLog *netlimit.LogLimiter
	// bodies bounds the request bodies held at once (readBody).
	bodies *bodyBudget
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Service == nil {
		return nil, errors.New("awskms: a broker service is required")
	}
	if cfg.Credentials == nil {
		return nil, errors.New("awskms: credentials are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxInFlightBodyBytes <= 0 {
		cfg.MaxInFlightBodyBytes = DefaultMaxInFlightBodyBytes
	}
	if cfg.MaxInFlightBodyBytes < cfg.MaxBodyBytes {
		cfg.MaxInFlightBodyBytes = cfg.MaxBodyBytes
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{
		svc:     cfg.Service,
		region:  cfg.Service.Region(),
		account: cfg.Service.Account(),
		trent: verifier{creds: cfg.Credentials, service: "kms", region: cfg.Service.Region(), maxSkew: cfg.MaxSkew, now: cfg.Now,
			hosts: hostSet(cfg.Hosts), refuseXKS: true, requireSigned: []string{"x-amz-target"}},
		authorize: cfg.Authorize,
		maxBody:   cfg.MaxBodyBytes,
		log:       cfg.Logger,
		anonLog:   netlimit.NewLogLimiter(cfg.Logger, "request refused before it proved an identity"),
		bodies:    newBodyBudget(cfg.MaxInFlightBodyBytes, cfg.MaxBodyBytes),
	}
	if cfg.XKS != nil {
		x, err := newXKSServer(h, *cfg.XKS, cfg.MaxSkew, cfg.Now)
		if err != nil {
			return nil, err
		}
		h.xks = x
	}
	return h, nil
}

// ServeHTTP answers one request. It never panics: a bug in an operation
// is answered as an internal error and logged with its stack.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := keys.NewKeyID() // a random UUID, the form AWS request ids take
	w.Header().Set("x-amzn-RequestId", reqID)
	if r.ContentLength != 0 {
		// Until the body is read (readBody), an answer closes the
		// connection: net/http would otherwise read up to 256 KiB of an
		// unread body, from a client that may never send it, before
		// answering; and once the request is done, the body it left
		// unread is not read at all (netlimit.DropUnreadBody).
		w.Header().Set("Connection", "close")
		defer func(w http.ResponseWriter) {
			if w.Header().Get("Connection") == "close" {
				netlimit.DropUnreadBody(w)
			}
		}(w)
	}
	aw, r := h.audited(w, r, reqID)
	defer aw.finish()
	w = aw
	if h.xks != nil && h.xks.owns(r.URL.Path) {
		defer h.recoverTo(w, reqID, func() { h.xks.writeError(w, r, &xksCall{start: time.Now(), reqID: reqID}, errInternal) })
		h.xks.serve(w, r, reqID)
		return
	}
	defer h.recoverTo(w, reqID, func() {
		h.writeTrentError(w, "", reqID, "", &apiError{http.StatusInternalServerError, broker.ExcInternal, "internal error"}, time.Now())
	})
	h.serveTrent(w, r, reqID)
}

var errInternal = errors.New("internal error")

// errClientClosed ends a request whose client closed its connection before
// the answer was ready. No one reads the answer; its status (499, "client
// closed request" in nginx's and others' logs) and name keep the log, the
// metrics and the audit line from reading it as an outage of the HSM or
// the cluster, which DependencyTimeoutException and 503 would say.
var errClientClosed = &apiError{499, "ClientClosedRequest", "the client closed the connection before the answer was ready"}

func (h *Handler) recoverTo(w http.ResponseWriter, reqID string, answer func()) {
	if v := recover(); v != nil {
		if v == http.ErrAbortHandler {
			panic(v)
		}
		h.log.Error("panic serving request", "request_id", reqID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		answer()
	}
}

// errBusy answers a request whose body would take the bodies in flight
// over their bound.
var errBusy = &apiError{http.StatusServiceUnavailable, broker.ExcThrottling,
	"too many request bodies are being received at once; retry with backoff"}

// readBody reads the request body up to the limit, holding what it has
// read against the bounds on bodies in flight (bodyBudget); release gives
// it back once the request is done with the body. It is called once the
// request's headers have been authenticated as far as they can be without
// the body.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	limit := h.maxBody
	switch {
	case r.ContentLength > h.maxBody:
		return nil, func() {}, validation("the request body exceeds %d bytes", h.maxBody)
	case r.ContentLength >= 0:
		limit = r.ContentLength
	}
	src, held := source(r), int64(0)
	grow := func(to int64) bool {
		if !h.bodies.take(src, to-held) {
			return false
		}
		held = to
		return true
	}
	fail := func(err error) ([]byte, func(), error) {
		h.bodies.give(src, held)
		return nil, func() {}, err
	}
	if !grow(min(limit, bodyFirstChunk)) {
		return fail(errBusy)
	}
	in := r.Body
	if r.ContentLength < 0 {
		in = http.MaxBytesReader(w, r.Body, h.maxBody)
	}
	body = make([]byte, 0, held)
	for int64(len(body)) < limit {
		if len(body) == cap(body) {
			if !grow(min(2*held, limit)) {
				return fail(errBusy)
			}
			body = append(make([]byte, 0, held), body...)
		}
		n, rerr := in.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err == nil && r.ContentLength < 0 {
		// A body of unknown length that filled the limit: anything more
		// makes it too big.
		var one [1]byte
		if _, err = io.ReadFull(in, one[:]); err == nil {
			err = &http.MaxBytesError{Limit: h.maxBody}
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, err == io.EOF && (r.ContentLength < 0 || int64(len(body)) == limit):
		// The whole body; errors.As, which walks the error's type with
		// reflection, is left for the failures.
	case errors.As(err, &tooBig):
		return fail(validation("the request body exceeds %d bytes", h.maxBody))
	default:
		return fail(&apiError{http.StatusBadRequest, excSerialization, "the request body could not be read"})
	}
	w.Header().Del("Connection")
	return body, func() { h.bodies.give(src, held) }, nil
}

func (h *Handler) serveTrent(w http.ResponseWriter, r *http.Request, reqID string) {
	start := time.Now()
	refuse := func(err *apiError) {
		h.refusedUnproven(r, err.exception)
		h.writeTrentError(w, "", reqID, "", err, start)
	}
	if r.URL.Path != "/" {
		refuse(&apiError{http.StatusNotFound, excUnknownOperation, "the AWS KMS API is served at POST /"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(&apiError{http.StatusMethodNotAllowed, excUnknownOperation, "the AWS KMS API takes POST requests"})
		return
	}
	name, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	if !ok || name == "" || len(r.Header.Values("X-Amz-Target")) != 1 {
		refuse(&apiError{http.StatusBadRequest, excUnknownOperation,
			"X-Amz-Target must name one TrentService operation (TrentService.<Operation>)"})
		return
	}
	// Everything the headers can prove is checked before the body is
	// read: a request that is not signed by a known key costs no memory.
	pre, aerr := h.trent.verifyHeaders(r)
	if aerr != nil {
		h.authRefused(r, nil, aerr)
		h.writeTrentError(w, "", reqID, "", aerr, start)
		return
	}
	body, release, err := h.readBody(w, r)
	defer release()
	if err != nil {
		_, exc, _ := classify(err)
		h.refusedUnsigned(r, pre, exc)
		h.writeTrentError(w, "", reqID, "", err, start)
		return
	}
	principal, aerr := h.trent.verifyBody(pre, r, body)
	if aerr != nil {
		h.authRefused(r, pre, aerr)
		h.writeTrentError(w, "", reqID, "", aerr, start)
		return
	}
	// The SDKs send exactly the first; anything else is parsed.
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/x-amz-json-1.1" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/x-amz-json-1.1" && mt != "application/x-amz-json-1.0" && mt != "application/json") {
			h.writeTrentError(w, name, reqID, principal, &apiError{http.StatusBadRequest, excSerialization,
				"Content-Type must be application/x-amz-json-1.1"}, start)
			return
		}
	}
	op, ok := operations[name]
	if !ok {
		if unsupportedOperations[name] {
			err = unsupported("%s is not supported by this key service", name)
		} else {
			err = &apiError{http.StatusBadRequest, excUnknownOperation, "TrentService has no operation " + netlimit.Truncate(name, 64)}
		}
		h.writeTrentError(w, netlimit.Truncate(name, 64), reqID, principal, err, start)
		return
	}
	ctx := broker.WithPrincipal(r.Context(), principal)
	// Decoded once: authorization, the audit line and the operation read
	// this one value.
	req, err := op(body)
	if err != nil {
		h.writeTrentError(w, name, reqID, principal, err, start)
		return
	}
	if err := h.svc.Authorize(ctx, "kms:"+name, h.accessKeyRole(pre.a.accessKeyID), req.contexts); err != nil {
		h.writeTrentError(w, name, reqID, principal, err, start)
		return
	}
	if h.authorize != nil {
		if err := h.authorize(ctx, principal, "kms:"+name); err != nil {
			h.writeTrentError(w, name, reqID, principal, &apiError{http.StatusBadRequest, broker.ExcAccessDenied,
				fmt.Sprintf("%s is not authorized to perform kms:%s: %v", principal, name, err)}, start)
			return
		}
	}
	out, err := req.run(h, ctx)
	if err != nil {
		if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			err = errClientClosed
		}
		h.writeTrentError(w, name, reqID, principal, err, start)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		h.writeTrentError(w, name, reqID, principal, err, start)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	h.log.LogAttrs(ctx, slog.LevelDebug, "kms request", slog.String("operation", name), slog.String("principal", principal),
		slog.String("request_id", reqID), slog.Int("status", http.StatusOK), slog.Duration("took", time.Since(start)))
}

// authRefused records, for the request's audit line, that it was refused
// for proving no identity: the exception, and for a signature that does
// not verify under a known access key (pre set), whose key it claimed.
func (h *Handler) authRefused(r *http.Request, pre *preAuth, aerr *authError) {
	reason := aerr.exception
	if pre != nil && pre.principal != "" {
		reason += " with the access key of " + pre.principal
	}
	h.svc.RefuseUnauthenticated(r.Context(), reason)
}

// Close writes the summary of request lines left out by the bound, if
// any; the handler still serves after it. The daemon calls it on shutdown.
func (h *Handler) Close() { h.anonLog.Close() }

// logRequest writes a request's line. The line of one that proved no
// identity (principal "") goes through h.anonLog: anyone can send such
// requests, thousands a second, and its audit line is bounded too
// (broker/audit_anonymous.go).
func (h *Handler) logRequest(ctx context.Context, level slog.Level, msg, principal string, attrs ...slog.Attr) {
	if principal == "" {
		h.anonLog.Log(ctx, level, msg, attrs...)
		return
	}
	h.log.LogAttrs(ctx, level, msg, attrs...)
}

// refusedUnproven records that r is refused, with exception, before its
// signature was checked (a path, method or target of no operation, a body
// that cannot be read): it proved no identity, so its audit line is a
// denial, as a failed signature's is.
func (h *Handler) refusedUnproven(r *http.Request, exception string) {
	h.svc.RefuseUnauthenticated(r.Context(), exception+" before any identity was proved")
}

// refusedUnsigned records that r is refused with exception after its
// headers named a known access key (pre) and before its signature could
// be checked: its body could not be read, or not now. It proved no
// identity, but the line names the key it claimed, so that a flood under
// one key can be traced to that key.
func (h *Handler) refusedUnsigned(r *http.Request, pre *preAuth, exception string) {
	h.svc.RefuseUnauthenticated(r.Context(), exception+" before the signature was checked, with the access key of "+pre.principal)
}

// writeTrentError answers with an AWS JSON error body.
func (h *Handler) writeTrentError(w http.ResponseWriter, op, reqID, principal string, err error, start time.Time) {
	status, exc, msg := classify(err)
	level := slog.LevelInfo
	attrs := []slog.Attr{slog.String("operation", op), slog.String("principal", principal), slog.String("request_id", reqID),
		slog.Int("status", status), slog.String("exception", exc), slog.Duration("took", time.Since(start))}
	switch {
	case status >= 500 && status != http.StatusServiceUnavailable:
		// The caller sees a generic message; the cause goes to the log.
		level = slog.LevelError
		attrs = append(attrs, slog.String("error", err.Error()))
	case status == http.StatusServiceUnavailable:
		level = slog.LevelWarn
	}
	h.logRequest(context.Background(), level, "kms request", principal, attrs...)
	b, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{exc, msg})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", exc)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
