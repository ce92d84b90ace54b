package drill

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// pollInterval is how often the drill asks the nodes about leadership and
// readiness while it waits: the resolution of the times it reports.
const pollInterval = 20 * time.Millisecond

// probeTimeout bounds one status call to one node.
const probeTimeout = 500 * time.Millisecond

// Node is a member of the cluster under drill.
type Node struct {
	ID   string
	Addr string // gRPC address
}

// discover asks the first endpoint that answers for the members and their
// gRPC addresses.
func discover(ctx context.Context, base client.Config) ([]Node, string, error) {
	cfg := base
	cfg.Retries = len(base.Endpoints)
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	resp, err := c.Cluster.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		return nil, "", fmt.Errorf("cluster status: %w", err)
	}
	var nodes []Node
	for _, n := range resp.GetNodes() {
		if n.GetGrpcAddress() == "" {
			return nil, "", fmt.Errorf("member %s has no gRPC address recorded yet; wait until every node has started", n.GetId())
		}
		nodes = append(nodes, Node{ID: n.GetId(), Addr: n.GetGrpcAddress()})
	}
	if len(nodes) < 3 {
		return nil, "", fmt.Errorf("the cluster has %d member(s); a drill needs at least 3, so that it keeps a quorum while one is away", len(nodes))
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes, resp.GetLeaderId(), nil
}

// nodeView is one node's answer about itself.
type nodeView struct {
	leader  string // the leader it knows, "" for none
	isLead  bool   // it is the leader
	healthy bool   // it serves key and crypto calls
	err     error  // it did not answer
}

// prober asks single nodes about themselves, with no retries and short
// deadlines, over connections of its own.
type prober struct {
	base  client.Config
	mu    sync.Mutex
	conns map[string]*client.Client
}

func newProber(base client.Config) *prober {
	return &prober{base: base, conns: map[string]*client.Client{}}
}

func (p *prober) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[string]*client.Client{}
}

// forget drops the connection to n, so that the next view dials afresh:
// a restarted node answers at once rather than after gRPC's reconnection
// backoff.
func (p *prober) forget(n Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[n.ID]; ok {
		_ = c.Close()
		delete(p.conns, n.ID)
	}
}

func (p *prober) conn(ctx context.Context, n Node) (*client.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[n.ID]; ok {
		return c, nil
	}
	cfg := p.base
	cfg.Endpoints = []string{n.Addr}
	cfg.Retries = -1
	cfg.Timeout = probeTimeout
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.conns[n.ID] = c
	return c, nil
}

// view asks n about itself.
func (p *prober) view(ctx context.Context, n Node) nodeView {
	c, err := p.conn(ctx, n)
	if err != nil {
		return nodeView{err: err}
	}
	resp, err := c.Cluster.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		return nodeView{err: err}
	}
	if resp.GetNodeId() != n.ID {
		return nodeView{err: fmt.Errorf("%s answers as %s", n.Addr, resp.GetNodeId())}
	}
	v := nodeView{leader: resp.GetLeaderId()}
	for _, s := range resp.GetNodes() {
		if s.GetId() == n.ID {
			v.isLead = s.GetRole() == pb.NodeRole_NODE_ROLE_LEADER
			v.healthy = s.GetHealthy()
		}
	}
	return v
}

// views asks every node at once.
func (p *prober) views(ctx context.Context, nodes []Node) []nodeView {
	out := make([]nodeView, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = p.view(ctx, n)
		}()
	}
	wg.Wait()
	return out
}

var errTimeout = errors.New("timed out")

// waitFor polls until cond holds for the nodes' views, ctx ends or timeout
// passes. It returns the time cond first held.
func (p *prober) waitFor(ctx context.Context, nodes []Node, timeout time.Duration, cond func([]nodeView) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		if cond(p.views(ctx, nodes)) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, errTimeout
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// leaderOf returns the node that the nodes agree leads, "" when there is
// none yet: one that says it leads, and is named leader by every other
// node that answers.
func leaderOf(nodes []Node, vs []nodeView) string {
	lead := ""
	for i, v := range vs {
		if v.err == nil && v.isLead {
			lead = nodes[i].ID
		}
	}
	if lead == "" {
		return ""
	}
	for _, v := range vs {
		if v.err == nil && v.leader != lead {
			return ""
		}
	}
	return lead
}
