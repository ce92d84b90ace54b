// Package bench is the load generator behind hsmctl bench: concurrent
// clients running one operation (or a mix) against a broker for a while,
// reporting throughput and latency percentiles; and, as a baseline, the
// same operations run directly on a PKCS#11 token through the partition
// layer the broker itself uses, in the same run.
//
// The two sides take turns in short windows (500ms by default), so that a
// machine whose speed drifts, or that other work shares, treats both
// alike; the ratio of their throughputs is the figure to compare across
// machines, more than either absolute number.
package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// Op is what the load does.
type Op string

// The operations. Signatures are over a SHA-256 digest (MessageType
// DIGEST), so neither side hashes; data keys are AES-256.
const (
	OpEncrypt  Op = "encrypt"   // AES-256-GCM Encrypt of Size bytes
	OpDecrypt  Op = "decrypt"   // Decrypt of a Size-byte plaintext's ciphertext
	OpSignRSA  Op = "sign-rsa"  // RSA-2048 PKCS#1 v1.5 SHA-256 signature
	OpSignP256 Op = "sign-p256" // ECDSA P-256 SHA-256 signature
	OpDataKey  Op = "datakey"   // GenerateDataKey AES_256
	OpMix      Op = "mix"       // the five above in turn
)

// Ops lists the valid operations.
var Ops = []Op{OpEncrypt, OpDecrypt, OpSignRSA, OpSignP256, OpDataKey, OpMix}

var mixCycle = []Op{OpEncrypt, OpDecrypt, OpSignP256, OpDataKey, OpSignRSA}

// Config describes a run. The zero value of every optional field means its
// default.
type Config struct {
	// Client reaches the broker: endpoints and TLS. Each concurrent client
	// gets a connection of its own.
	Client client.Config
	// Op is the operation. Required.
	Op Op
	// Concurrency is how many clients run at once (default 1).
	Concurrency int
	// Duration is how long each side is measured (default 10s); with a
	// baseline the run takes twice that, plus setup.
	Duration time.Duration
	// Window is how long one side runs before the other takes over
	// (default 500ms).
	Window time.Duration
	// Keys is how many keys of each kind the load spreads over, picking
	// one at random per operation (default 1).
	Keys int
	// Size is the plaintext size of encrypt and decrypt, 1 to 4096 bytes
	// (default 4096).
	Size int
	// Direct, when set, opens this token and runs the same operations on
	// it directly as the baseline. Its token must hold an hsmbroker domain
	// key (a broker node's token does) unless CreateDomainKey is set. The
	// baseline needs a cgo build (it loads the PKCS#11 library); without
	// cgo, Run refuses a Config that sets it.
	Direct *DirectConfig
	// CreateDomainKey lets the baseline create a domain key (a persistent
	// token object) in a token that has none: for scratch tokens only.
	CreateDomainKey bool
	// Progress, when set, receives a line per phase.
	Progress io.Writer
	// MetricsAddr is the broker's metrics address (host:port). When set,
	// the broker's CPU time (process_cpu_seconds_total) is read around
	// each of its windows, and the result gives CPU per operation for the
	// broker as well as for this process.
	MetricsAddr string
}

// DirectConfig names the token the baseline opens. It is plain data, so
// that a client built without cgo can still describe a run.
type DirectConfig struct {
	// Module is the PKCS#11 library's path.
	Module string
	// TokenLabel and TokenSerial find the token; one is required.
	TokenLabel, TokenSerial string
	// PINFile is a file (mode 0600) holding the user PIN; when empty, the
	// PIN is read from the environment variable PINEnv.
	PINFile, PINEnv string
	// PoolSize is the number of PKCS#11 sessions (0: the partition's default).
	PoolSize int
	// Logger receives the partition's log lines (nil: none).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if !slices.Contains(Ops, c.Op) {
		return fmt.Errorf("bench: unknown operation %q", c.Op)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Window <= 0 {
		c.Window = 500 * time.Millisecond
	}
	if c.Keys <= 0 {
		c.Keys = 1
	}
	if c.Size == 0 {
		c.Size = 4096
	}
	if c.Size < 1 || c.Size > 4096 {
		return fmt.Errorf("bench: size %d: want 1 to 4096 bytes (the Encrypt limit)", c.Size)
	}
	if c.Direct != nil && errNoBaseline != nil {
		return errNoBaseline
	}
	return nil
}

// Result is the outcome of a run.
type Result struct {
	Op          Op      `json:"op"`
	Size        int     `json:"size"`
	Keys        int     `json:"keys"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"durationSeconds"` // measured per side
	WindowMs    float64 `json:"windowMs"`
	Broker      Side    `json:"broker"`
	// Direct is the baseline, when one ran.
	Direct *Side `json:"direct,omitempty"`
	// Ratio is the broker's throughput over the baseline's.
	Ratio *float64 `json:"ratio,omitempty"`
}

// Side is one side's figures. Latencies are of successful operations.
type Side struct {
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"opsPerSecond"`
	P50Ms     float64 `json:"p50Ms"`
	P90Ms     float64 `json:"p90Ms"`
	P99Ms     float64 `json:"p99Ms"`
	// FirstError is the first failure's message, if any.
	FirstError string `json:"firstError,omitempty"`
	// CPU time per successful operation, in microseconds: of this process
	// (the clients; for the baseline, also the token's work when the
	// PKCS#11 library runs in-process, as SoftHSM does), and of the broker
	// process (when MetricsAddr was given). Their sum is what one
	// operation costs the machine when both run on it.
	ClientCPUUs *float64 `json:"clientCpuUsPerOp,omitempty"`
	BrokerCPUUs *float64 `json:"brokerCpuUsPerOp,omitempty"`
}

// CPUUs is the CPU time per operation of every process measured.
func (s Side) CPUUs() (float64, bool) {
	if s.ClientCPUUs == nil {
		return 0, false
	}
	v := *s.ClientCPUUs
	if s.BrokerCPUUs != nil {
		v += *s.BrokerCPUUs
	}
	return v, true
}

// target is one side: it runs operation op with key index k for client w.
type target interface {
	do(ctx context.Context, w int, op Op, k int) error
	close()
}

// Run sets both sides up, measures them in alternating windows and returns
// the result. Setup creates the keys it needs on each side: on the broker
// Keys keys of each kind the operation uses (aliases alias/bench-ID-...),
// in the baseline partition session objects that vanish with it.
//
// The baseline is set up first: its token, PIN and domain key are checked
// before the broker gets any key. A successful run leaves its broker keys;
// a run that fails after making some schedules their deletion (in
// keys.MinPendingWindow days) and deletes their aliases, even when ctx
// was cancelled.
func Run(ctx context.Context, cfg Config) (_ *Result, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	meter := newCPUMeter(cfg.MetricsAddr)
	if cfg.MetricsAddr != "" {
		// A metrics address that does not answer would leave the broker's
		// CPU figures out of the result without a word: refuse it first.
		if _, err := meter.brokerCPU(ctx); err != nil {
			return nil, fmt.Errorf("the broker's CPU at --metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
	}
	id := strconv.FormatInt(time.Now().UnixNano()%1e10, 36)
	plaintext := make([]byte, cfg.Size)
	_, _ = rand.Read(plaintext)
	var d *directTarget
	if cfg.Direct != nil {
		progressf(cfg.Progress, "opening the baseline token %q and generating its keys", firstSet(cfg.Direct.TokenLabel, cfg.Direct.TokenSerial))
		if d, err = newDirectTarget(ctx, cfg, plaintext); err != nil {
			return nil, err
		}
		defer d.close()
	}
	progressf(cfg.Progress, "setting up %d key(s) of each kind on the broker (aliases alias/bench-%s-...)", cfg.Keys, id)
	b, err := newBrokerTarget(ctx, cfg, id, plaintext)
	if err != nil {
		return nil, err
	}
	defer b.close()
	defer func() {
		if err != nil {
			err = errors.Join(err, b.discardKeys(ctx, cfg.Progress))
		}
	}()
	sides := []target{b}
	if d != nil {
		sides = append(sides, d)
	}
	res := &Result{Op: cfg.Op, Size: cfg.Size, Keys: cfg.Keys, Concurrency: cfg.Concurrency,
		DurationS: cfg.Duration.Seconds(), WindowMs: float64(cfg.Window) / float64(time.Millisecond)}
	// Warm up: connections, sessions, loaded key handles.
	for _, s := range sides {
		if _, err := window(ctx, s, cfg, 2*cfg.Window); err != nil {
			return nil, err
		}
	}
	progressf(cfg.Progress, "measuring %s with %d client(s): %s per side in %s windows", cfg.Op, cfg.Concurrency, cfg.Duration, cfg.Window)
	lats := make([][]time.Duration, len(sides))
	errs := make([]int, len(sides))
	first := make([]string, len(sides))
	cpu := make([]cpuTotals, len(sides))
	for done := time.Duration(0); done < cfg.Duration; done += cfg.Window {
		for i, s := range sides {
			before := meter.read(ctx, i == 0)
			w, err := window(ctx, s, cfg, cfg.Window)
			if err != nil {
				return nil, err
			}
			cpu[i].add(before, meter.read(ctx, i == 0))
			lats[i] = append(lats[i], w.lat...)
			errs[i] += w.errs
			if first[i] == "" {
				first[i] = w.firstErr
			}
		}
	}
	measured := (cfg.Duration + cfg.Window - 1) / cfg.Window * cfg.Window
	res.Broker = summarize(lats[0], errs[0], first[0], measured)
	res.Broker.ClientCPUUs = perOp(cpu[0].self, res.Broker.Ops)
	if cpu[0].brokerOK {
		res.Broker.BrokerCPUUs = perOp(cpu[0].broker, res.Broker.Ops)
	}
	if len(sides) > 1 {
		d := summarize(lats[1], errs[1], first[1], measured)
		d.ClientCPUUs = perOp(cpu[1].self, d.Ops)
		res.Direct = &d
		if d.OpsPerSec > 0 {
			r := res.Broker.OpsPerSec / d.OpsPerSec
			res.Ratio = &r
		}
	}
	return res, nil
}

type windowResult struct {
	lat      []time.Duration
	errs     int
	firstErr string
}

// window runs every client on s for d and collects their latencies.
func window(ctx context.Context, s target, cfg Config, d time.Duration) (windowResult, error) {
	var mu sync.Mutex
	var out windowResult
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var lat []time.Duration
			errs, firstErr := 0, ""
			for i := rng.IntN(len(mixCycle)); time.Now().Before(stop) && ctx.Err() == nil; i++ {
				op := cfg.Op
				if op == OpMix {
					op = mixCycle[i%len(mixCycle)]
				}
				t0 := time.Now()
				err := s.do(ctx, w, op, rng.IntN(cfg.Keys))
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = client.Message(err)
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.errs += errs
			if out.firstErr == "" {
				out.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return out, err
	}
	if len(out.lat) == 0 && out.errs > 0 {
		return out, fmt.Errorf("bench: every operation failed: %s", out.firstErr)
	}
	return out, nil
}

func summarize(lat []time.Duration, errs int, firstErr string, measured time.Duration) Side {
	slices.Sort(lat)
	return Side{Ops: len(lat), Errors: errs, OpsPerSec: float64(len(lat)) / measured.Seconds(),
		P50Ms: msOf(Percentile(lat, .50)), P90Ms: msOf(Percentile(lat, .90)), P99Ms: msOf(Percentile(lat, .99)),
		FirstError: firstErr}
}

// WriteText prints the result for people.
func (r *Result) WriteText(w io.Writer) error {
	what := string(r.Op)
	if r.Op == OpEncrypt || r.Op == OpDecrypt || r.Op == OpMix {
		what += fmt.Sprintf(", %d-byte plaintexts", r.Size)
	}
	fmt.Fprintf(w, "%s, %d key(s) of each kind, %d client(s), %.0fs measured per side in %.0fms windows\n\n",
		what, r.Keys, r.Concurrency, r.DurationS, r.WindowMs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tops\tops/s\tp50\tp90\tp99\terrors\tCPU µs/op\t")
	row := func(name string, s Side) {
		cpu := "-"
		if v, ok := s.CPUUs(); ok {
			cpu = fmt.Sprintf("%.0f", v)
			if s.BrokerCPUUs != nil {
				cpu += fmt.Sprintf(" (client %.0f + broker %.0f)", *s.ClientCPUUs, *s.BrokerCPUUs)
			} else if name == "broker" {
				cpu += " (client only)"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.3fms\t%.3fms\t%.3fms\t%d\t%s\t\n", name, s.Ops, s.OpsPerSec, s.P50Ms, s.P90Ms, s.P99Ms, s.Errors, cpu)
	}
	row("broker", r.Broker)
	if r.Direct != nil {
		row("direct", *r.Direct)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range []struct {
		name string
		side *Side
	}{{"broker", &r.Broker}, {"direct", r.Direct}} {
		if s.side != nil && s.side.FirstError != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", s.name, s.side.FirstError)
		}
	}
	if r.Ratio != nil {
		fmt.Fprintf(w, "\nbroker/direct throughput ratio: %.3f (p50 %.3fms vs %.3fms)\n", *r.Ratio, r.Broker.P50Ms, r.Direct.P50Ms)
		b, bok := r.Broker.CPUUs()
		d, dok := r.Direct.CPUUs()
		if bok && dok && r.Broker.BrokerCPUUs != nil {
			fmt.Fprintf(w, "CPU per operation: %.0f µs through the broker vs %.0f µs direct, %+.0f µs (%.2fx)\n", b, d, b-d, b/d)
		}
	}
	return nil
}

// Percentile is the nearest-rank percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// digest is what the signatures sign.
var digest = sha256.Sum256([]byte("hsmctl bench"))

// kindsFor lists the key kinds an operation needs.
func kindsFor(op Op) (sym, rsa, p256 bool) {
	switch op {
	case OpEncrypt, OpDecrypt, OpDataKey:
		return true, false, false
	case OpSignRSA:
		return false, true, false
	case OpSignP256:
		return false, false, true
	}
	return true, true, true
}

// brokerTarget runs operations through the SDK, one client per worker.
type brokerTarget struct {
	clients           []*client.Client
	sym, rsa, p256    []string
	made              []brokerKey // every key setup created, for discardKeys
	blobs             [][]byte    // a ciphertext per symmetric key
	plaintext         []byte
	dataKeySpec       pb.DataKeySpec
	rsaAlg, p256Alg   pb.SigningAlgorithm
	digestMessageType pb.MessageType
}

func newBrokerTarget(ctx context.Context, cfg Config, id string, plaintext []byte) (*brokerTarget, error) {
	t := &brokerTarget{plaintext: plaintext, dataKeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256,
		rsaAlg: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PKCS1_V1_5_SHA_256, p256Alg: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256,
		digestMessageType: pb.MessageType_MESSAGE_TYPE_DIGEST}
	for range cfg.Concurrency {
		c, err := client.Dial(ctx, cfg.Client)
		if err != nil {
			t.close()
			return nil, err
		}
		t.clients = append(t.clients, c)
	}
	if err := t.createKeys(ctx, cfg, id, plaintext); err != nil {
		err = errors.Join(err, t.discardKeys(ctx, cfg.Progress))
		t.close()
		return nil, err
	}
	return t, nil
}

// brokerKey is a key bench created, by id and alias.
type brokerKey struct{ id, alias string }

// createKeys makes the keys of each kind cfg.Op needs, recording each in
// t.made as soon as it exists, and the ciphertexts decryption needs.
func (t *brokerTarget) createKeys(ctx context.Context, cfg Config, id string, plaintext []byte) error {
	c := t.clients[0]
	create := func(kind string, spec pb.KeySpec, usage pb.KeyUsage) ([]string, error) {
		var ids []string
		for i := range cfg.Keys {
			alias := fmt.Sprintf("alias/bench-%s-%s-%d", id, kind, i)
			resp, err := c.Keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: alias,
				KeySpec: spec, KeyUsage: usage, Description: "hsmctl bench " + id})
			if err != nil {
				return nil, fmt.Errorf("bench: create a %s key: %w", kind, err)
			}
			t.made = append(t.made, brokerKey{resp.GetKeyMetadata().GetKeyId(), alias})
			ids = append(ids, resp.GetKeyMetadata().GetKeyId())
		}
		return ids, nil
	}
	sym, rsa, p256 := kindsFor(cfg.Op)
	var err error
	if sym {
		if t.sym, err = create("aes", pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT); err != nil {
			return err
		}
		for _, k := range t.sym {
			resp, err := c.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k, Plaintext: plaintext})
			if err != nil {
				return fmt.Errorf("bench: encrypt the decryption input: %w", err)
			}
			t.blobs = append(t.blobs, resp.GetCiphertextBlob())
		}
	}
	if rsa {
		if t.rsa, err = create("rsa", pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY); err != nil {
			return err
		}
	}
	if p256 {
		if t.p256, err = create("p256", pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY); err != nil {
			return err
		}
	}
	return nil
}

// discardTimeout bounds the clean-up of a failed run, which goes on when
// the run's own context was cancelled (an interrupted run cleans up too).
const discardTimeout = 30 * time.Second

// discardKeys undoes setup after a failure: it schedules the deletion of
// every key setup made, in keys.MinPendingWindow days (the broker's
// shortest wait; CancelKeyDeletion brings one back), then deletes its
// alias, so that the alias/bench-* names a failed run took are free
// again. A key whose deletion could not be scheduled keeps its alias, to
// be found by; the error names it.
func (t *brokerTarget) discardKeys(ctx context.Context, progress io.Writer) error {
	if len(t.made) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	progressf(progress, "the run failed: scheduling the deletion of the %d broker key(s) it made", len(t.made))
	c := t.clients[0]
	var left []string
	var firstErr error
	for _, k := range t.made {
		_, err := c.Keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: k.id, PendingWindowDays: keys.MinPendingWindow})
		if err == nil {
			_, err = c.Keys.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: k.alias})
		}
		if err != nil {
			left = append(left, fmt.Sprintf("%s (%s)", k.id, k.alias))
			firstErr = cmp.Or(firstErr, err)
		}
	}
	t.made = nil
	if len(left) > 0 {
		return fmt.Errorf("bench: clean-up left %d key(s) the run made: %s: %w", len(left), strings.Join(left, ", "), firstErr)
	}
	return nil
}

func (t *brokerTarget) do(ctx context.Context, w int, op Op, k int) error {
	c := t.clients[w]
	var err error
	switch op {
	case OpEncrypt:
		_, err = c.Crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: t.sym[k], Plaintext: t.plaintext})
	case OpDecrypt:
		_, err = c.Crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: t.blobs[k]})
	case OpDataKey:
		_, err = c.Crypto.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: t.sym[k], KeySpec: t.dataKeySpec})
	case OpSignRSA:
		_, err = c.Crypto.Sign(ctx, &pb.SignRequest{KeyId: t.rsa[k], Message: digest[:], MessageType: t.digestMessageType, SigningAlgorithm: t.rsaAlg})
	case OpSignP256:
		_, err = c.Crypto.Sign(ctx, &pb.SignRequest{KeyId: t.p256[k], Message: digest[:], MessageType: t.digestMessageType, SigningAlgorithm: t.p256Alg})
	}
	return err
}

func (t *brokerTarget) close() {
	for _, c := range t.clients {
		_ = c.Close()
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "bench: "+format+"\n", args...)
	}
}

func firstSet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
