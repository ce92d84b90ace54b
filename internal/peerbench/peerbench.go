// Package peerbench compares the broker's AWS KMS endpoint with
// nsmithuk/local-kms, a KMS emulator that keeps its keys in software: both
// servers run as processes on loopback, both are driven by the same
// aws-sdk-go-v2 load, in alternating windows, and each server's CPU is read
// from /proc around its own windows. Because the two sides alternate within
// one run, their ratios stay comparable on a shared machine even when the
// absolute figures move.
package peerbench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// Op is one measured operation.
type Op string

// The operations, in the order they are reported.
const (
	Encrypt4K  Op = "Encrypt 4 KB"
	Decrypt4K  Op = "Decrypt 4 KB"
	GenDataKey Op = "GenerateDataKey"
	SignP256   Op = "Sign ECDSA P-256"
	SignRSA    Op = "Sign RSA-2048"
)

// AllOps lists every operation.
var AllOps = []Op{Encrypt4K, Decrypt4K, GenDataKey, SignP256, SignRSA}

// Config says what to run.
type Config struct {
	LocalKMS   string        // the local-kms binary
	Hsmbrokerd string        // the hsmbrokerd binary
	Clients    int           // concurrent SDK clients per side (16)
	Window     time.Duration // one window of one side (500 ms)
	Duration   time.Duration // measured time per side and operation (4 s)
	Ops        []Op          // default AllOps
	Log        io.Writer     // progress and the servers' output; nil: discarded
	// BrokerEnv is added to hsmbrokerd's environment only (for example
	// GOGC=200, to compare runtime settings against the same yardstick).
	BrokerEnv []string
}

// Side is what one server did over its windows of one operation.
type Side struct {
	Ops      int64
	Errors   int64
	FirstErr string
	Measured time.Duration
	CPU      time.Duration // the server process's utime+stime over its windows
	// ClientCPU is this process's utime+stime over the side's windows: the
	// clients' work (with the little the process does besides).
	ClientCPU time.Duration
	// Idle is the machine's idle CPU time (idle and iowait, every CPU)
	// over the side's windows.
	Idle time.Duration
}

// OpsPerSec is the side's throughput.
func (s Side) OpsPerSec() float64 {
	if s.Measured <= 0 {
		return 0
	}
	return float64(s.Ops) / s.Measured.Seconds()
}

// CPUPerOp is the server's CPU per successful call.
func (s Side) CPUPerOp() time.Duration {
	if s.Ops == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.Ops)
}

// ClientCPUPerOp is the clients' CPU per successful call.
func (s Side) ClientCPUPerOp() time.Duration {
	if s.Ops == 0 {
		return 0
	}
	return s.ClientCPU / time.Duration(s.Ops)
}

// IdleShare is the share of the machine's CPU time left idle during the
// side's windows.
func (s Side) IdleShare() float64 {
	if s.Measured <= 0 {
		return 0
	}
	return s.Idle.Seconds() / (s.Measured.Seconds() * float64(runtime.NumCPU()))
}

// Row is one operation's result.
type Row struct {
	Op       Op
	Broker   Side
	LocalKMS Side
	// PairRatios are throughput(broker)/throughput(local-kms) of each pair
	// of adjacent windows.
	PairRatios []float64
}

// Ratio is throughput(broker) / throughput(local-kms) over the whole run.
func (r Row) Ratio() float64 {
	l := r.LocalKMS.OpsPerSec()
	if l == 0 {
		return 0
	}
	return r.Broker.OpsPerSec() / l
}

// Result is a whole run.
type Result struct {
	Clients int
	Rows    []Row
}

func (c *Config) defaults() error {
	if c.LocalKMS == "" || c.Hsmbrokerd == "" {
		return errors.New("peerbench: the local-kms and hsmbrokerd binaries are required")
	}
	if c.Clients <= 0 {
		c.Clients = 16
	}
	if c.Window <= 0 {
		c.Window = 500 * time.Millisecond
	}
	if c.Duration <= 0 {
		c.Duration = 4 * time.Second
	}
	if len(c.Ops) == 0 {
		c.Ops = AllOps
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	// Both servers' output goroutines write to it.
	c.Log = &lockedWriter{w: c.Log}
	return nil
}

// server is one running server process and a client for it.
type server struct {
	name   string
	cmd    *exec.Cmd
	kms    *kms.Client
	keys   map[string]string // "sym", "rsa", "p256" -> key id
	blob   []byte            // a ciphertext of the 4 KB plaintext
	exited chan struct{}
}

// Run starts both servers, measures every operation and stops them.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "hsmbroker-peerbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	broker, err := startBroker(ctx, cfg, filepath.Join(tmp, "broker"))
	if err != nil {
		return nil, err
	}
	defer broker.stop()
	lk, err := startLocalKMS(ctx, cfg, filepath.Join(tmp, "local-kms"))
	if err != nil {
		return nil, err
	}
	defer lk.stop()

	plaintext := make([]byte, 4096)
	if _, err := rand.Read(plaintext); err != nil {
		return nil, err
	}
	for _, s := range []*server{broker, lk} {
		if err := s.setup(ctx, plaintext); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	res := &Result{Clients: cfg.Clients}
	for _, op := range cfg.Ops {
		fmt.Fprintf(cfg.Log, "peerbench: %s, %d clients, %s per side\n", op, cfg.Clients, cfg.Duration)
		row, err := measure(ctx, cfg, op, plaintext, broker, lk)
		if err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

func measure(ctx context.Context, cfg Config, op Op, plaintext []byte, broker, lk *server) (Row, error) {
	row := Row{Op: op}
	// A short warm-up of each side: connections, handle caches, JIT-free
	// but not allocation-free first calls.
	for _, s := range []*server{broker, lk} {
		if _, err := window(ctx, cfg, s, op, plaintext, cfg.Window/2); err != nil {
			return row, err
		}
	}
	n := int((cfg.Duration + cfg.Window - 1) / cfg.Window)
	for i := 0; i < n; i++ {
		// Alternate which side goes first, so neither always follows the other.
		order := []*server{broker, lk}
		if i%2 == 1 {
			order = []*server{lk, broker}
		}
		var tput [2]float64
		for _, s := range order {
			w, err := window(ctx, cfg, s, op, plaintext, cfg.Window)
			if err != nil {
				return row, err
			}
			side := &row.LocalKMS
			idx := 1
			if s == broker {
				side, idx = &row.Broker, 0
			}
			side.Ops += w.Ops
			side.Errors += w.Errors
			if side.FirstErr == "" {
				side.FirstErr = w.FirstErr
			}
			side.Measured += w.Measured
			side.CPU += w.CPU
			side.ClientCPU += w.ClientCPU
			side.Idle += w.Idle
			tput[idx] = w.OpsPerSec()
		}
		if tput[1] > 0 {
			row.PairRatios = append(row.PairRatios, tput[0]/tput[1])
		}
	}
	return row, nil
}

// window runs cfg.Clients callers against s for d and reads the CPU
// counters around it.
func window(ctx context.Context, cfg Config, s *server, op Op, plaintext []byte, d time.Duration) (Side, error) {
	var w Side
	c0, err := readCounters(s)
	if err != nil {
		return w, err
	}
	var ops, errs atomic.Int64
	var firstErr atomic.Value
	// At the window's end every client finishes the call it has in flight
	// (cancelling it would close its connection and count a failure) and
	// stops; the window is measured to the last call's end.
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				if err := s.do(ctx, op, plaintext); err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ops.Add(1)
			}
		}()
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.exited:
	}
	stop.Store(true)
	wg.Wait()
	w.Measured = time.Since(start)
	c1, err := readCounters(s)
	if err != nil {
		return w, err
	}
	w.CPU, w.ClientCPU, w.Idle = c1.server-c0.server, c1.self-c0.self, c1.idle-c0.idle
	w.Ops, w.Errors = ops.Load(), errs.Load()
	if v, ok := firstErr.Load().(string); ok {
		w.FirstErr = v
	}
	if err := ctx.Err(); err != nil {
		return w, err
	}
	select {
	case <-s.exited:
		return w, fmt.Errorf("%s exited during the run", s.name)
	default:
	}
	return w, nil
}

func (s *server) do(ctx context.Context, op Op, plaintext []byte) error {
	var err error
	switch op {
	case Encrypt4K:
		_, err = s.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(s.keys["sym"]), Plaintext: plaintext})
	case Decrypt4K:
		var out *kms.DecryptOutput
		out, err = s.kms.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(s.keys["sym"]), CiphertextBlob: s.blob})
		if err == nil && len(out.Plaintext) != len(plaintext) {
			err = fmt.Errorf("decrypt returned %d bytes, want %d", len(out.Plaintext), len(plaintext))
		}
	case GenDataKey:
		_, err = s.kms.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(s.keys["sym"]), KeySpec: types.DataKeySpecAes256})
	case SignP256:
		_, err = s.sign(ctx, "p256", types.SigningAlgorithmSpecEcdsaSha256)
	case SignRSA:
		_, err = s.sign(ctx, "rsa", types.SigningAlgorithmSpecRsassaPkcs1V15Sha256)
	default:
		err = fmt.Errorf("unknown operation %q", op)
	}
	return err
}

var digest = sha256.Sum256([]byte("hsmbroker peerbench"))

func (s *server) sign(ctx context.Context, key string, alg types.SigningAlgorithmSpec) (*kms.SignOutput, error) {
	return s.kms.Sign(ctx, &kms.SignInput{KeyId: aws.String(s.keys[key]), Message: digest[:],
		MessageType: types.MessageTypeDigest, SigningAlgorithm: alg})
}

// setup creates one key of each kind and a ciphertext to decrypt, and
// checks that every operation works once.
func (s *server) setup(ctx context.Context, plaintext []byte) error {
	s.keys = map[string]string{}
	for name, in := range map[string]*kms.CreateKeyInput{
		"sym":  {},
		"rsa":  {KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeSignVerify},
		"p256": {KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify},
	} {
		out, err := s.kms.CreateKey(ctx, in)
		if err != nil {
			return fmt.Errorf("create %s key: %w", name, err)
		}
		s.keys[name] = aws.ToString(out.KeyMetadata.KeyId)
	}
	out, err := s.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(s.keys["sym"]), Plaintext: plaintext})
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	s.blob = out.CiphertextBlob
	for _, op := range AllOps {
		if err := s.do(ctx, op, plaintext); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

func newClient(endpoint, id, secret, region string) *kms.Client {
	return kms.NewFromConfig(aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
		// The SDK's standard retryer, as an application has it: against
		// either server, about one call in several thousand fails on the
		// client side with "use of closed network connection" while reading
		// a 200 answer. A call that still fails is counted as an error.
		RetryMaxAttempts: 3,
	}, func(o *kms.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// freePorts reserves n loopback ports by listening on them and closing.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startBroker(ctx context.Context, cfg Config, dir string) (*server, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	cmd := exec.CommandContext(ctx, cfg.Hsmbrokerd, "dev", "--data-dir", dir,
		"--grpc-addr", addr(0), "--raft-addr", addr(1), "--metrics-addr", addr(2), "--kms-addr", addr(3),
		"--log-level", "warn")
	cmd.Env = append(os.Environ(), cfg.BrokerEnv...)
	s, err := start("hsmbroker", cmd, cfg.Log)
	if err != nil {
		return nil, err
	}
	env, err := waitEnv(ctx, s, filepath.Join(dir, "dev.env"))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.kms = newClient(env["AWS_ENDPOINT_URL_KMS"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"])
	return s, nil
}

func startLocalKMS(ctx context.Context, cfg Config, dir string) (*server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := requireLoopbackOnly(); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ports[0])
	cmd := exec.CommandContext(ctx, cfg.LocalKMS)
	cmd.Env = append(os.Environ(), "PORT="+port, "KMS_DATA_PATH="+dir,
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"), "KMS_REGION=us-east-1", "KMS_ACCOUNT_ID=111122223333")
	s, err := start("local-kms", cmd, cfg.Log)
	if err != nil {
		return nil, err
	}
	url := "http://127.0.0.1:" + port
	if err := waitTCP(ctx, s, "127.0.0.1:"+port); err != nil {
		s.stop()
		return nil, err
	}
	// local-kms does not check signatures; any access key does.
	s.kms = newClient(url, "peerbench", "peerbench-not-a-secret", "us-east-1")
	return s, nil
}

func start(name string, cmd *exec.Cmd, log io.Writer) (*server, error) {
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// waitEnv waits for hsmbrokerd dev to write its dev.env and reads the
// exports from it.
func waitEnv(ctx context.Context, s *server, path string) (map[string]string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(path); err == nil {
			env := parseEnv(string(b))
			if env["AWS_ENDPOINT_URL_KMS"] != "" && env["AWS_SECRET_ACCESS_KEY"] != "" {
				return env, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before serving", s.name)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not write %s in time", s.name, path)
		}
	}
}

// parseEnv reads `export NAME='value'` lines.
func parseEnv(s string) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = strings.ReplaceAll(v[1:len(v)-1], `'\''`, `'`)
		}
		env[k] = v
	}
	return env
}

func waitTCP(ctx context.Context, s *server, addr string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before serving", s.name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s in time", s.name, addr)
		}
	}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU reads utime+stime of a process.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	d, ok := ticks(f[11], f[12])
	if !ok {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return d, nil
}

// ticks is the time of two counts of clock ticks, added.
func ticks(a, b string) (time.Duration, bool) {
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(x+y) * time.Second / clockTicks, true
}

// counters are what a window reads before and after it: the server's
// CPU, this process's, and the machine's idle time.
type counters struct{ server, self, idle time.Duration }

func readCounters(s *server) (counters, error) {
	var c counters
	var err error
	if c.server, err = procCPU(s.cmd.Process.Pid); err != nil {
		return c, fmt.Errorf("%s: %w", s.name, err)
	}
	if c.self, err = procCPU(os.Getpid()); err != nil {
		return c, err
	}
	c.idle, err = machineIdle()
	return c, err
}

// machineIdle reads the machine's idle and iowait time, summed over its
// CPUs, from /proc/stat.
func machineIdle() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseIdle(string(b))
}

// parseIdle reads idle+iowait from the "cpu" line of /proc/stat.
func parseIdle(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait ...
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	d, ok := ticks(f[4], f[5])
	if !ok {
		return 0, fmt.Errorf("/proc/stat: bad idle/iowait in %q", line)
	}
	return d, nil
}

// WriteText prints the table.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients per side, alternating windows; CPU is each server process's utime+stime over its own windows\n\n", r.Clients)
	fmt.Fprintf(&b, "| operation | hsmbroker CPU/op | local-kms CPU/op | CPU hsmbroker/local-kms | ops/s hsmbroker / local-kms | throughput hsmbroker/local-kms (window pairs) | errors |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, row := range r.Rows {
		cb, cl := row.Broker.CPUPerOp(), row.LocalKMS.CPUPerOp()
		cpuRatio := 0.0
		if cl > 0 {
			cpuRatio = float64(cb) / float64(cl)
		}
		lo, hi := minMax(row.PairRatios)
		errs := fmt.Sprintf("%d / %d", row.Broker.Errors, row.LocalKMS.Errors)
		if e := firstSet(row.Broker.FirstErr, row.LocalKMS.FirstErr); e != "" {
			errs += " (" + e + ")"
		}
		fmt.Fprintf(&b, "| %s | %d us | %d us | %.2f | %.0f / %.0f | %.2f (%.2f-%.2f) | %s |\n", row.Op,
			cb.Microseconds(), cl.Microseconds(), cpuRatio, row.Broker.OpsPerSec(), row.LocalKMS.OpsPerSec(),
			row.Ratio(), lo, hi, errs)
	}
	fmt.Fprintf(&b, "\nThe same windows from the clients' side (this process's CPU) and the machine's (its idle CPU, %d CPUs):\n\n", runtime.NumCPU())
	fmt.Fprintf(&b, "| operation | client CPU/op against hsmbroker / local-kms | machine idle while hsmbroker / local-kms served |\n")
	fmt.Fprintf(&b, "| --- | --- | --- |\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d us / %d us | %.0f%% / %.0f%% |\n", row.Op,
			row.Broker.ClientCPUPerOp().Microseconds(), row.LocalKMS.ClientCPUPerOp().Microseconds(),
			100*row.Broker.IdleShare(), 100*row.LocalKMS.IdleShare())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func minMax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}

func firstSet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
