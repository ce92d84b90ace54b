// Package vault serves the read side of the Vault KV version 2 API for
// database TDE keys: what MariaDB's hashicorp_key_management plugin (and
// other TDE key providers speaking the same API) asks for.
//
// It is a thin adapter: it bounds and decodes the request, calls one core
// method (broker.TDEKeys.ReadKey or ReadMount, which authenticate the
// token, authorize its principal, write the audit line and open the key in
// the HSM), and encodes the answer in Vault's shapes:
//
//	GET /v1/sys/mounts/<mount>/tune           {"options":{"version":"2"},...}
//	GET /v1/<mount>/data/<name>[?version=N]   {"data":{"data":{"data":"<hex>"},"metadata":{"version":N}}}
//
// A missing key or version is 404 {"errors":[]}, a missing, unknown or
// revoked token, or a principal not allowed kms:Decrypt on the mount's KMS
// key, 403 {"errors":["permission denied"]}. Writes get 405 and other
// paths 404, each with a message; these refusals, and those of a URI or
// version that cannot be read, are audited through the core too
// (RefuseRead).
//
// A read the node cannot serve for a passing reason (it is not ready, its
// HSM or the cluster's leader is unreachable, its audit log cannot be
// written) gets no answer: the connection is closed. MariaDB's plugin
// keeps using its cached key after a transport failure, but takes any
// HTTP error other than 404 as final, and InnoDB then stops the server;
// a node that answered 503 would take a running database down where a
// node that is down does not.
package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"google.golang.org/grpc/codes"
)

// Bounds on what a caller sends, checked before anything is decoded.
const (
	// MaxURLLen bounds the request URI (path and query).
	MaxURLLen = 1024
	// MaxHeaderBytes bounds all request headers; the daemon's http.Server
	// uses it.
	MaxHeaderBytes = 16 << 10
)

// TokenHeader carries the token, as in Vault.
const TokenHeader = "X-Vault-Token"

// Core is the part of the broker the endpoint calls (*broker.TDEKeys, from
// broker.Service.TDE).
type Core interface {
	ReadKey(ctx context.Context, in broker.TDERequest) (broker.TDEMaterial, error)
	ReadMount(ctx context.Context, in broker.TDERequest) error
	RefuseRead(ctx context.Context, in broker.TDERequest, refusal error) error
}

// Handler serves the endpoint.
type Handler struct {
	core Core
	log  *slog.Logger
	// anonLog takes the lines of reads refused for a token that proves no
	// identity, which anyone can send (netlimit.LogLimiter).
	anonLog *netlimit.LogLimiter
	// unservedLog takes the lines of reads not served for a passing
	// reason, which a database repeats while the reason lasts.
	unservedLog *netlimit.LogLimiter
}

// New returns a handler over core; log may be nil.
func New(core Core, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{core: core, log: log, anonLog: netlimit.NewLogLimiter(log, "TDE key read refused: no valid token"),
		unservedLog: netlimit.NewLogLimiter(log, "TDE key read not served now: connection closed")}
}

type route uint8

const (
	routeNone route = iota
	routeTune
	routeData
)

// parse picks a request's route, mount and key name from its path.
func parse(path string) (route, string, string) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return routeNone, "", ""
	}
	if m, ok := strings.CutPrefix(rest, "sys/mounts/"); ok {
		if m, ok := strings.CutSuffix(m, "/tune"); ok && m != "" && !strings.Contains(m, "/") {
			return routeTune, m, ""
		}
		return routeNone, "", ""
	}
	mount, name, ok := strings.Cut(rest, "/data/")
	if !ok || mount == "" || name == "" || strings.Contains(mount, "/") || strings.Contains(name, "/") {
		return routeNone, "", ""
	}
	return routeData, mount, name
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.ContentLength != 0 {
		// A body (or a chunked one, -1), which no request this endpoint
		// serves has, and nothing here reads: answer and close.
		netlimit.DropUnreadBody(w)
	}
	token := r.Header.Get(TokenHeader)
	if len(token) > broker.MaxTDETokenLen {
		token = "" // refused as unauthenticated, and audited, without storing it
	}
	in := broker.TDERequest{Token: token, RequestID: requestID(), Peer: r.RemoteAddr}
	w.Header().Set("X-Request-Id", in.RequestID)
	// A request refused here is audited through the core too, as a read
	// of what it named (refuse).
	refuse := func(status int, msg string) {
		code, exc := codes.InvalidArgument, broker.ExcValidation
		if status == http.StatusNotFound {
			code, exc = codes.NotFound, broker.ExcNotFound
		}
		refusal := &broker.Error{Code: code, Exception: exc, Message: msg}
		if err := h.core.RefuseRead(r.Context(), in, refusal); err != error(refusal) {
			h.writeError(w, in, err) // the audit line could not be written
			return
		}
		writeErrors(w, status, msg)
	}
	if len(r.RequestURI) > MaxURLLen || len(r.URL.Path) > MaxURLLen {
		refuse(http.StatusRequestURITooLong, fmt.Sprintf("the request URI exceeds %d bytes", MaxURLLen))
		return
	}
	rt, mount, name := parse(r.URL.Path)
	if rt == routeNone {
		in.Name = r.URL.Path // bounded above, and cut for the audit line
		refuse(http.StatusNotFound, "hsmbroker serves only GET /v1/sys/mounts/<mount>/tune and GET /v1/<mount>/data/<name> of the Vault API")
		return
	}
	in.Mount, in.Name = mount, name
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		refuse(http.StatusMethodNotAllowed, "hsmbroker serves TDE keys read-only; make and rotate them with hsmctl tde")
		return
	}
	if rt == routeTune {
		if err := h.core.ReadMount(r.Context(), in); err != nil {
			h.writeError(w, in, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"request_id": in.RequestID, "description": "hsmbroker TDE keys", "type": "kv",
			"options": map[string]string{"version": "2"}})
		return
	}
	// A query string that does not parse is refused, not read in part:
	// url.Query drops the pairs it cannot decode, which would serve the
	// latest version to a request for "version=1%".
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		refuse(http.StatusBadRequest, "the query string is malformed; the one parameter read is version=N")
		return
	}
	if v, ok := q["version"]; ok {
		n, err := strconv.ParseUint(v[0], 10, 32)
		if len(v) != 1 || err != nil || n == 0 || n > cluster.MaxTDEVersions {
			refuse(http.StatusBadRequest, fmt.Sprintf("version must be one decimal number from 1 to %d", cluster.MaxTDEVersions))
			return
		}
		in.Version = uint32(n)
	}
	m, err := h.core.ReadKey(r.Context(), in)
	if err != nil {
		h.writeError(w, in, err)
		return
	}
	material := hex.EncodeToString(m.Material)
	clear(m.Material)
	writeJSON(w, http.StatusOK, map[string]any{"request_id": in.RequestID,
		"data": map[string]any{"data": map[string]string{"data": material}, "metadata": map[string]any{"version": m.Version}}})
}

// Close writes the summary of refusal lines left out by the bound, if
// any; the handler still serves after it. The daemon calls it on shutdown.
func (h *Handler) Close() { h.anonLog.Close(); h.unservedLog.Close() }

// writeError answers a refused or failed read in Vault's shapes.
func (h *Handler) writeError(w http.ResponseWriter, in broker.TDERequest, err error) {
	code, _, msg := broker.Classify(err)
	status := http.StatusInternalServerError
	switch code {
	case codes.NotFound:
		// Exactly what the plugin expects of a missing key or version.
		writeJSON(w, http.StatusNotFound, map[string][]string{"errors": {}})
		return
	case codes.Unauthenticated, codes.PermissionDenied:
		// The reason is in the audit line and the node's log, not the answer.
		attrs := []slog.Attr{slog.String("request_id", in.RequestID), slog.String("peer", in.Peer), slog.String("mount", in.Mount),
			slog.String("name", in.Name), slog.String("reason", msg)}
		if code == codes.Unauthenticated {
			h.anonLog.Log(context.Background(), slog.LevelInfo, "TDE key read refused", attrs...)
		} else {
			h.log.LogAttrs(context.Background(), slog.LevelInfo, "TDE key read refused", attrs...)
		}
		writeErrors(w, http.StatusForbidden, "permission denied")
		return
	case codes.InvalidArgument, codes.FailedPrecondition:
		status = http.StatusBadRequest
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Canceled:
		// A passing failure: no answer, so that the database keeps its
		// cached key (see the package comment). The request's audit line
		// has its outcome already.
		if code != codes.Canceled {
			h.unservedLog.Log(context.Background(), slog.LevelWarn, "TDE key read not served now: connection closed without an answer, so that the database keeps using its cached key",
				slog.String("request_id", in.RequestID), slog.String("peer", in.Peer), slog.String("mount", in.Mount),
				slog.String("name", in.Name), slog.String("reason", msg))
		}
		panic(http.ErrAbortHandler)
	default:
		h.log.Error("TDE key read failed", "request_id", in.RequestID, "mount", in.Mount, "name", in.Name, "err", err)
		msg = "internal error; see the node's log for request " + in.RequestID
	}
	writeErrors(w, status, msg)
}

func writeErrors(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string][]string{"errors": {msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errors":["internal error"]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func requestID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "unknown"
	}
	return hex.EncodeToString(b)
}
