package awskms

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// Every request the Handler answers is authorized and audited by the
// broker core: ServeHTTP begins the request (broker.BeginRequest), the
// TrentService path checks the caller's role before the operation runs
// (broker.Authorize; key policies and grants are checked by the core when
// the operation reaches a key), and the answer's status is only sent once
// its audit line is written (auditWriter). If the line cannot be written,
// the caller gets ServiceUnavailable instead of the answer.

// roleCredentials are Credentials that also name the role an access key
// carries, as a client certificate names its role. StaticCredentials and
// FileCredentials are.
type roleCredentials interface {
	Role(accessKeyID string) authz.Role
}

// Role implements roleCredentials: the key's role, "" for none.
func (c StaticCredentials) Role(id string) authz.Role { return c[id].Role }

// Role implements roleCredentials.
func (c *FileCredentials) Role(id string) authz.Role {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.keys.Role(id)
}

// xksCredentials are Credentials that tell external key store proxy
// credentials (AccessKey.XKS) from TrentService keys. StaticCredentials and
// FileCredentials are.
type xksCredentials interface {
	IsXKS(accessKeyID string) bool
}

// IsXKS implements xksCredentials.
func (c StaticCredentials) IsXKS(id string) bool { return c[id].XKS }

// IsXKS implements xksCredentials.
func (c *FileCredentials) IsXKS(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.keys.IsXKS(id)
}

// accessKeyRole is the role the access key of an authenticated request
// names ("" for none). It takes the key id the signature was verified
// for, rather than reading the Authorization header again.
func (h *Handler) accessKeyRole(accessKeyID string) authz.Role {
	rc, ok := h.trent.creds.(roleCredentials)
	if !ok {
		return ""
	}
	return rc.Role(accessKeyID)
}

// audited begins the request in the core and wraps w so that its audit
// line is written before the answer's first byte.
func (h *Handler) audited(w http.ResponseWriter, r *http.Request, reqID string) (*auditWriter, *http.Request) {
	c := broker.Call{Front: broker.FrontAWS, RequestID: reqID, Peer: r.RemoteAddr}
	xks := h.xks != nil && h.xks.owns(r.URL.Path)
	if xks {
		op, _ := h.xks.route(r.URL.Path)
		c.Front, c.Action = broker.FrontXKS, "kms-xks-proxy:"+op
	} else if name, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService."); ok && name != "" {
		c.Action = "kms:" + netlimit.Truncate(name, 64)
	}
	ctx := h.svc.BeginRequest(r.Context(), c)
	return &auditWriter{ResponseWriter: w, h: h, ctx: ctx, r: r, reqID: reqID, xks: xks}, r.WithContext(ctx)
}

// auditWriter holds back the status of an answer until its body starts,
// writes the audit line, and answers ServiceUnavailable instead if the
// line cannot be written.
type auditWriter struct {
	http.ResponseWriter
	h       *Handler
	ctx     context.Context
	r       *http.Request
	reqID   string
	xks     bool
	status  int  // held back by WriteHeader
	decided bool // the audit line was written, or failed
	refused bool // it failed: the answer is replaced
}

func (a *auditWriter) WriteHeader(status int) {
	if a.status == 0 && !a.decided {
		a.status = status
	}
}

func (a *auditWriter) Write(b []byte) (int, error) {
	if !a.decided {
		a.decide(b)
	}
	if a.refused {
		return len(b), nil
	}
	return a.ResponseWriter.Write(b)
}

// finish ends a request whose handler wrote no body.
func (a *auditWriter) finish() {
	if !a.decided {
		a.decide(nil)
	}
}

func (a *auditWriter) decide(body []byte) {
	a.decided = true
	if a.status == 0 {
		a.status = http.StatusOK
	}
	result := "OK"
	if a.status != http.StatusOK {
		result = a.Header().Get("X-Amzn-ErrorType")
		if result == "" {
			var x struct {
				ErrorName string `json:"errorName"`
			}
			_ = json.NewDecoder(bytes.NewReader(body)).Decode(&x)
			result = x.ErrorName
		}
		if result == "" {
			result = http.StatusText(a.status)
		}
	}
	err := a.h.svc.EndRequest(a.ctx, result, strconv.Itoa(a.status))
	if err == nil {
		a.ResponseWriter.WriteHeader(a.status)
		return
	}
	a.refused = true
	a.Header().Del("Content-Length")
	if a.xks {
		a.h.xks.writeError(a.ResponseWriter, a.r, &xksCall{start: time.Now(), reqID: a.reqID}, err)
		return
	}
	a.h.writeTrentError(a.ResponseWriter, "", a.reqID, "", err, time.Now())
}
