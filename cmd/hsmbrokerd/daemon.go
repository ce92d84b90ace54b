package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Shutdown deadlines.
const (
	grpcStopTimeout = 10 * time.Second
	httpStopTimeout = 5 * time.Second
	// leaderWait bounds how long the dev command waits for its node to
	// elect itself before it announces itself ready anyway.
	leaderWait = 30 * time.Second
)

// daemon is what dev and serve hand to runDaemon: the components'
// configurations, already resolved from flags or the config file.
type daemon struct {
	grpcAddr    string
	metricsAddr string
	kmsAddr     string // reserved; logged, not served
	region      string
	account     string

	hsm       hsm.Config // with the PIN
	cluster   cluster.Config
	serverTLS *tls.Config

	// createDomainKey makes a domain key in a partition that has none: on
	// the node that bootstraps a new cluster. Other nodes get theirs
	// HSM-to-HSM when they join.
	createDomainKey bool

	// onReady, if set, runs once the node serves, knows its leader and has
	// a first health verdict. It gets the addresses clients dial.
	onReady func(grpcAddr, metricsAddr string) error
}

// runDaemon opens the partition and the node, serves gRPC and HTTP until
// ctx ends, then shuts everything down in order. A clean shutdown returns
// nil.
func runDaemon(ctx context.Context, log *slog.Logger, d daemon) (err error) {
	if ctx.Err() != nil {
		return nil // stopped while preparing: nothing is running yet
	}
	// Bind first: a taken port fails before the HSM or Raft are touched.
	grpcLis, err := net.Listen("tcp", d.grpcAddr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	defer grpcLis.Close()
	metricsLis, err := net.Listen("tcp", d.metricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	defer metricsLis.Close()

	p, err := hsm.Open(d.hsm)
	if err != nil {
		return fmt.Errorf("open HSM partition: %w", err)
	}
	defer func() {
		if cerr := p.Close(); cerr != nil {
			log.Error("close HSM partition", "err", cerr)
		}
	}()
	if err := ensureDomainKey(ctx, log, p, d.createDomainKey); err != nil {
		return err
	}

	node, err := cluster.Open(d.cluster)
	if err != nil {
		return fmt.Errorf("open cluster node: %w", err)
	}
	defer func() {
		if serr := node.Shutdown(); serr != nil {
			log.Error("shut down cluster node", "err", serr)
		}
	}()

	svc, err := broker.New(broker.Config{
		NodeID: d.cluster.NodeID, Node: node, Partition: p,
		Region: d.region, Account: d.account, Logger: log,
	})
	if err != nil {
		return err
	}
	gs, hs := svc.NewGRPCServer(d.serverTLS)
	h := newHealthReporter(p, node, hs, log)
	h.set(errors.New("starting")) // the health server says SERVING until told otherwise

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", h.serveLive)
	mux.HandleFunc("GET /readyz", h.serveReady)
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	serveErr := make(chan error, 2)
	go func() {
		if err := gs.Serve(grpcLis); err != nil {
			serveErr <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	go func() {
		if err := httpSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("metrics server: %w", err)
		}
	}()
	grpcAddr, metricsAddr := dialable(grpcLis.Addr()), dialable(metricsLis.Addr())
	log.Info("serving", "node", d.cluster.NodeID, "grpc", grpcAddr, "raft", node.Addr(), "metrics", metricsAddr)
	if d.kmsAddr != "" {
		log.Info("the AWS KMS endpoint is not part of this build; kms address reserved", "kms", d.kmsAddr)
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.watch(watchCtx) }()

	if d.onReady != nil {
		lctx, cancel := context.WithTimeout(ctx, leaderWait)
		lerr := node.WaitForLeader(lctx)
		cancel()
		if ctx.Err() == nil {
			if lerr != nil {
				log.Warn("no Raft leader yet", "waited", leaderWait)
			}
			h.update(ctx)
			if err := d.onReady(grpcAddr, metricsAddr); err != nil {
				log.Error("announce readiness", "err", err)
			}
		}
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down; a second signal forces exit")
	case err = <-serveErr:
		log.Error("server failed; shutting down", "err", err)
	}
	stopWatch()
	wg.Wait()
	hs.Shutdown() // every service NOT_SERVING while connections drain

	hctx, cancel := context.WithTimeout(context.Background(), httpStopTimeout)
	if herr := httpSrv.Shutdown(hctx); herr != nil {
		log.Warn("metrics server did not stop cleanly", "err", herr)
	}
	cancel()

	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grpcStopTimeout):
		log.Warn("gRPC calls still running after the stop deadline; closing them", "deadline", grpcStopTimeout)
		gs.Stop()
		<-stopped
	}
	// The deferred calls shut the node down, then close the partition.
	log.Info("stopped")
	return err
}

// ensureDomainKey makes sure the partition holds the cluster's domain key,
// creating it when create is set.
func ensureDomainKey(ctx context.Context, log *slog.Logger, p *hsm.Partition, create bool) error {
	has, err := p.HasDomainKey(ctx)
	if err != nil {
		return fmt.Errorf("look for the domain key: %w", err)
	}
	switch {
	case has:
		return nil
	case create:
		if err := p.CreateDomainKey(ctx); err != nil {
			return fmt.Errorf("create the domain key: %w", err)
		}
		return nil
	default:
		log.Warn("the HSM partition holds no domain key; this node cannot use keys until it receives the cluster's domain key by joining")
		return nil
	}
}

// dialable turns a listener address into one a local client can dial: a
// wildcard bind becomes loopback.
func dialable(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := ta.IP
	if ip == nil || ip.IsUnspecified() {
		// Go's wildcard listeners are dual-stack, so IPv4 loopback reaches
		// them too.
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
}
