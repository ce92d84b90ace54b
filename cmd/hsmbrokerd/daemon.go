package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// How long dev waits to be ready, and how long shutdown waits. The
// broker.Daemon times its own loops.
const (
	// readyWait bounds how long dev waits to be ready before it writes
	// dev.env anyway.
	readyWait = 30 * time.Second

	grpcStopTimeout = 10 * time.Second
	httpStopTimeout = 5 * time.Second
)

// daemon is what dev and serve hand to runDaemon: the components'
// configurations, already resolved from flags or the config file.
type daemon struct {
	grpcAddr string
	// grpcAdvertise is the gRPC address published to the other members;
	// "" means the listener's own address, made dialable.
	grpcAdvertise string
	metricsAddr   string
	// kms, when set, serves the AWS KMS JSON endpoint.
	kms *kmsEndpoint
	// vault, when set, serves the TDE key endpoint (vault.go).
	vault *vaultEndpoint
	// kmip, when set, serves KMIP (kmip.go).
	kmip    *kmipEndpoint
	region  string
	account string

	// auditFile is the node's audit log, continued across restarts.
	auditFile string

	hsm hsm.Config // with the PIN
	// preload warms the handle cache with the cluster's keys (hsm.preload).
	preload bool
	cluster cluster.Config
	// promoteSettle is how long a joined node stays ready before the
	// leader makes it a voter (raft.promote_settle).
	promoteSettle time.Duration
	serverTLS     *tls.Config // gRPC server: node certificate, client certificates required
	peerTLS       *tls.Config // calls to other nodes: node certificate

	// createDomainKey makes a domain key in a partition that has none: on
	// the node that founds a cluster. Other nodes get theirs HSM-to-HSM
	// when they join.
	createDomainKey bool

	// join, when set, makes this node (no Raft state, not bootstrapping)
	// join an existing cluster once it serves.
	join *broker.JoinConfig
	// peers are the join list: members to ask whether this node is still
	// one while it hears from no leader (broker.Config.Peers).
	peers []string

	// onReady, if set, runs once the node reports ready (or readyWait has
	// passed). It gets the addresses clients dial.
	onReady func(endpoints) error
}

// endpoints are the addresses a local client dials to reach this node.
type endpoints struct {
	grpc    string
	metrics string
	kmsURL  string // "" when the AWS KMS endpoint is not served
	// vaultURL is the TDE key endpoint, "" when not served.
	vaultURL string
	// kmip is the KMIP server's address, "" when not served.
	kmip string
}

// runDaemon opens the partition and the node, serves gRPC and HTTP until
// ctx ends, then shuts everything down in order. A clean shutdown returns
// nil.
func runDaemon(ctx context.Context, log *slog.Logger, d daemon) (err error) {
	if ctx.Err() != nil {
		return nil // stopped while preparing: nothing is running yet
	}
	// Bind first: a taken port fails before the HSM or Raft are touched.
	grpcLis, err := listenLimited("gRPC", d.grpcAddr, grpcLimits)
	if err != nil {
		return err
	}
	defer grpcLis.Close()
	metricsLis, err := listenLimited("metrics", d.metricsAddr, metricsLimits)
	if err != nil {
		return err
	}
	defer metricsLis.Close()
	var kmsLis net.Listener
	if d.kms != nil {
		if kmsLis, err = d.kms.listen(); err != nil {
			return err
		}
		defer kmsLis.Close()
	}
	var vaultLis net.Listener
	if d.vault != nil {
		if vaultLis, err = d.vault.listen(); err != nil {
			return err
		}
		defer vaultLis.Close()
	}
	kmipLis, err := d.kmip.listen()
	if err != nil {
		return err
	}
	if kmipLis != nil {
		defer kmipLis.Close()
	}

	stopDrillSwitch, err := drillHSMFault(log, &d.hsm, d.cluster.NodeID)
	if err != nil {
		return err
	}
	defer stopDrillSwitch()
	// The audit log before anything that answers requests: a node that
	// cannot audit must not serve. Closed after the service (defers run
	// last in, first out).
	auditLog, err := audit.Open(d.auditFile, audit.Options{CheckpointEvery: broker.AuditCheckpointLines, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := auditLog.Close(); cerr != nil {
			log.Error("close the audit log", "err", cerr)
		}
	}()

	p, err := hsm.Open(d.hsm)
	if err != nil {
		return fmt.Errorf("open HSM partition: %w", err)
	}
	defer func() {
		if cerr := p.Close(); cerr != nil {
			log.Error("close HSM partition", "err", cerr)
		}
	}()
	if err := ensureDomainKey(ctx, log, p, d.createDomainKey, d.join != nil); err != nil {
		return err
	}

	cc := d.cluster
	var preloader *broker.Preloader
	if d.preload {
		preloader = broker.NewPreloader(p, log)
	}
	cc.Observer = broker.PreloadingObserver(p, preloader)
	node, err := cluster.Open(cc)
	if err != nil {
		return fmt.Errorf("open cluster node: %w", err)
	}
	defer func() {
		if serr := node.Shutdown(); serr != nil {
			log.Error("shut down cluster node", "err", serr)
		}
	}()

	svc, err := broker.New(broker.Config{
		NodeID: cc.NodeID, Node: node, Partition: p, PeerTLS: d.peerTLS,
		Region: d.region, Account: d.account, Logger: log, RequireCaughtUp: true, AuditLog: auditLog,
		Peers: d.peers,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	nodeMetrics := svc.NodeMetrics()
	if err := prometheus.Register(nodeMetrics); err != nil {
		return fmt.Errorf("register node metrics: %w", err)
	}
	defer prometheus.Unregister(nodeMetrics)
	gs, hs := svc.NewGRPCServer(d.serverTLS)
	setNotServing(hs) // until the first readiness check says otherwise

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", serveLive)
	mux.Handle("GET /readyz", readyHandler(svc))
	httpSrv := netlimit.NewHTTPServer(mux, metricsLimits, log.With("server", "metrics"))
	var kmsSrv *netlimit.Server
	if d.kms != nil {
		kmsLog := log.With("front", broker.FrontAWS)
		h, err := d.kms.handler(svc, kmsLog)
		if err != nil {
			return err
		}
		kmsSrv = d.kms.server(h, kmsLog)
	}

	fatal := make(chan error, 5)
	go func() {
		if err := gs.Serve(grpcLis); err != nil {
			fatal <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	go func() {
		if err := httpSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("metrics server: %w", err)
		}
	}()
	if kmsSrv != nil {
		go func() {
			if err := kmsSrv.Serve(kmsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fatal <- fmt.Errorf("AWS KMS endpoint: %w", err)
			}
		}()
	}
	vaultSrv, vaultURL := serveVault(d.vault, vaultLis, svc, log, fatal)
	ep := endpoints{grpc: dialable(grpcLis.Addr()), metrics: dialable(metricsLis.Addr()), vaultURL: vaultURL}
	if kmsLis != nil {
		ep.kmsURL = d.kms.url(kmsLis.Addr())
	}
	ep.kmip = kmipAddr(kmipLis)
	advertise := firstSet(d.grpcAdvertise, ep.grpc)
	log.Info("serving", "node", cc.NodeID, "grpc", ep.grpc, "grpc_advertise", advertise,
		"raft", node.Addr(), "metrics", ep.metrics, "kms", ep.kmsURL, "vault", ep.vaultURL,
		"gomaxprocs", runtime.GOMAXPROCS(0))
	if d.kms != nil && d.kms.tls == nil && !isLoopback(d.kms.cfg.Addr) {
		log.Warn("the AWS KMS endpoint serves plain HTTP on a non-loopback address; requests and answers (plaintext, data keys) cross the network unencrypted",
			"kms", d.kms.cfg.Addr)
	}

	bg, stopBg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	spawn := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }
	dm := broker.NewDaemon(svc, broker.DaemonConfig{GRPCAddr: advertise, Join: d.join, Health: hs, Preloader: preloader,
		PromoteSettle: d.promoteSettle})
	spawn(func() {
		if err := dm.Run(bg); err != nil {
			fatal <- err
		}
	})
	spawn(func() { reloadOnHangup(bg, log, d.kms) })
	spawn(func() { d.kmip.run(bg, log, svc, kmipLis, fatal) })
	if d.onReady != nil {
		spawn(func() {
			if waitReady(bg, svc) != nil && bg.Err() != nil {
				return
			}
			if err := d.onReady(ep); err != nil {
				log.Error("announce readiness", "err", err)
			}
		})
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down; a second signal forces exit")
	case err = <-fatal:
		log.Error("shutting down after a fatal error", "err", err)
	}
	stopBg()
	wg.Wait()
	hs.Shutdown() // every service NOT_SERVING while connections drain

	hctx, cancel := context.WithTimeout(context.Background(), httpStopTimeout)
	if kmsSrv != nil {
		if herr := kmsSrv.Shutdown(hctx); herr != nil {
			log.Warn("AWS KMS endpoint did not stop cleanly", "err", herr)
		}
	}
	if vaultSrv != nil {
		if herr := vaultSrv.Shutdown(hctx); herr != nil {
			log.Warn("TDE key endpoint did not stop cleanly", "err", herr)
		}
	}
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
	// The deferred calls close peer connections, shut the node down, then
	// close the partition.
	log.Info("stopped")
	return err
}

// waitReady waits until the node's health watch reports it ready, at most
// readyWait.
func waitReady(ctx context.Context, svc *broker.Service) error {
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if ok, _ := svc.Healthy(); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ensureDomainKey makes sure the partition holds a domain key, creating it
// when create is set. A node about to join gets the cluster's from the
// leader instead.
func ensureDomainKey(ctx context.Context, log *slog.Logger, p *hsm.Partition, create, joining bool) error {
	has, err := p.HasDomainKey(ctx)
	if err != nil {
		return fmt.Errorf("look for the domain key: %w", err)
	}
	switch {
	case has || joining:
		return nil
	case create:
		if err := p.CreateDomainKey(ctx); err != nil {
			return fmt.Errorf("create the domain key: %w", err)
		}
		return nil
	default:
		log.Warn("the HSM partition holds no domain key; this node cannot use keys until it receives the cluster's by joining")
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
