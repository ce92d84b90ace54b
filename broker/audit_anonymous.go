package broker

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/prometheus/client_golang/prometheus"
)

// A request that proves no identity (no signature, an unknown access key,
// a wrong signature, an unknown or revoked TDE token) costs its sender
// nothing and cost the node an audit line of about 640 bytes. Measured on
// `hsmbrokerd dev`: 16 clients with a made-up Vault token got 16,000
// refusals a second, and the audit log grew by 10 MB a second. Nothing
// bounded that, and a node that cannot write its audit log refuses every
// request. So the lines of such refusals are bounded:
//
//   - anonymousLinesPerSecond of them a second are written as usual, after
//     a burst of anonymousLineBurst (a misconfigured database or SDK that
//     retries keeps its lines);
//   - beyond that, a refusal gets no line of its own: it is counted by
//     front and source address (the host, without the port; at most
//     maxAnonymousSources of them, then "other"), and every
//     anonymousSummaryEvery the counts become one line per source, with
//     operation anonymousSummaryOperation, the count and the interval in
//     its reason. hsmbroker_audit_anonymous_unlined_total counts them too.
//
// A request that named a principal it proved (a valid signature or token)
// always gets its line, refused or not, and so does every answer that is
// not a refusal.
const (
	anonymousLinesPerSecond   = 20
	anonymousLineBurst        = 200
	anonymousSummaryEvery     = 10 * time.Second
	maxAnonymousSources       = 256
	anonymousSummaryOperation = "hsmbroker:UnauthenticatedRefusals"
	anonymousOtherSources     = "other"
)

var anonymousUnlined = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "hsmbroker_audit_anonymous_unlined_total",
	Help: "Refused requests that proved no identity and got no audit line of their own (over the rate limit); their counts are in summary lines.",
}, []string{"front"})

func init() { prometheus.MustRegister(anonymousUnlined) }

// anonymousRefusals is the rate limit and the pending counts. The zero
// value is ready: its bucket starts full. pending is non-nil exactly while
// a summary is scheduled.
type anonymousRefusals struct {
	mu      sync.Mutex
	bucket  netlimit.Bucket
	pending map[anonymousSource]*unlined
}

type anonymousSource struct{ front, peer string }

type unlined struct {
	count       uint64
	first, last time.Time
}

// admit reports whether a refusal that proved no identity may have its own
// line now, and counts it for the next summary if not.
func (a *anonymousRefusals) admit(front, peer string, now time.Time) (line, schedule bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bucket.Take(now, anonymousLineBurst, anonymousLinesPerSecond) {
		return true, false
	}
	src := anonymousSource{front: front, peer: hostOf(peer)}
	schedule = a.pending == nil
	if schedule {
		a.pending = map[anonymousSource]*unlined{}
	}
	u, ok := a.pending[src]
	if !ok && len(a.pending) >= maxAnonymousSources {
		src.peer = anonymousOtherSources
		u, ok = a.pending[src]
	}
	if !ok {
		u = &unlined{first: now}
		a.pending[src] = u
	}
	u.count++
	u.last = now
	anonymousUnlined.WithLabelValues(front).Inc()
	return false, schedule
}

// take returns the pending counts and clears them.
func (a *anonymousRefusals) take() map[anonymousSource]*unlined {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pending
	a.pending = nil
	return p
}

// hostOf is a peer address without its port, so that one client's
// connections count as one source.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// lineAnonymous reports whether rq, a refusal, gets its own audit line;
// if not it is counted, and a summary is scheduled when none is.
func (s *Service) lineAnonymous(rq *request) bool {
	line, schedule := s.anonymous.admit(rq.front, rq.peer, time.Now())
	if schedule {
		time.AfterFunc(anonymousSummaryEvery, s.writeAnonymousSummaries)
	}
	return line
}

// writeAnonymousSummaries writes one line per source of the refusals that
// got none of their own since the last summary.
func (s *Service) writeAnonymousSummaries() {
	log := s.cfg.AuditLog
	pending := s.anonymous.take()
	if log == nil {
		return
	}
	for src, u := range pending {
		rec := &audit.Record{Node: s.cfg.NodeID, Front: src.front, Peer: src.peer, Operation: anonymousSummaryOperation,
			Decision: "deny", Result: "Unauthenticated", Code: "Unauthenticated",
			Reason: fmt.Sprintf("%d requests that proved no identity were refused between %s and %s without a line each (over %d lines a second)",
				u.count, u.first.UTC().Format(time.RFC3339Nano), u.last.UTC().Format(time.RFC3339Nano), anonymousLinesPerSecond)}
		if _, err := log.Append(rec, false); err != nil {
			s.log.Error("audit log write failed; a summary of unauthenticated refusals is lost", "front", src.front,
				"peer", src.peer, "count", u.count, "err", err)
		}
	}
}
