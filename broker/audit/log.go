package audit

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/fsutil"
)

// FileMode is the mode of a new audit log: it names principals and keys,
// so only the broker's user reads it.
const FileMode os.FileMode = 0o600

// Genesis is the prev of the first line of a chain.
var Genesis = strings.Repeat("0", 64)

// ResultIntent is the Result of an intent line.
const ResultIntent = "INTENT"

// Record is one audit line. It never holds plaintext, key material, PINs or
// credentials: only names, ids, outcomes and the encryption context, which
// is not secret (it is authenticated, not encrypted).
type Record struct {
	// Seq numbers the lines of a chain from 1; Append sets it.
	Seq uint64 `json:"seq"`
	// Time is when the line was written, UTC; Append sets it if zero.
	Time time.Time `json:"time"`
	// Node is the node that answered the request.
	Node string `json:"node"`
	// Front is the API the request came in on: grpc, aws or xks.
	Front string `json:"front"`
	// RequestID is the request's id as the caller saw it (x-request-id on
	// gRPC, x-amzn-RequestId on the AWS endpoint).
	RequestID string `json:"request_id"`
	// Peer is the caller's network address.
	Peer string `json:"peer,omitempty"`
	// Principal is the authenticated caller; "" when it could not be
	// authenticated. Role is its effective role.
	Principal string `json:"principal"`
	Role      string `json:"role,omitempty"`
	// Operation is the action asked for, as key policies name it
	// ("kms:Encrypt", "hsmbroker:GetClusterStatus").
	Operation string `json:"operation"`
	// KeyID is the key the request acted on, once known; KeyIDs lists every
	// key when there were several (ReEncrypt).
	KeyID  string   `json:"key_id,omitempty"`
	KeyIDs []string `json:"key_ids,omitempty"`
	// KeyRef is the key as the request named it (an id, ARN or alias),
	// which is all there is of a request refused before its key was looked
	// up.
	KeyRef string `json:"key_ref,omitempty"`
	// EncryptionContext is the context the request gave, if any and if it
	// is a valid context (keys.ValidateContext). ContextOmitted describes
	// a context that was not (too many pairs or bytes): its size and
	// SHA-256, never its pairs.
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	ContextOmitted    string            `json:"encryption_context_omitted,omitempty"`
	// Decision is "allow" or "deny": whether authorization let the request
	// through. Reason says why it was denied.
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
	// Result is "OK" or the error's AWS exception name; Code is the
	// front's own status (a gRPC code name, or an HTTP status). Result is
	// ResultIntent on a line written before a change is proposed (or a
	// stream's first message leaves): the request is about to have an
	// effect, which may or may not then happen.
	Result string `json:"result"`
	Code   string `json:"code"`
	// Intent, on the line that ends a request, is the seq of the request's
	// intent line: this line is that intent's outcome. An intent line
	// without an outcome line is a request the node did not finish
	// (it stopped in between); Verify reports it.
	Intent uint64 `json:"intent,omitempty"`
	// Segment identifies the chain: a random id chosen when a chain starts
	// (a new, empty file) and carried by every line of it, including the
	// lines of later rotated files. Checkpoints name it.
	Segment string `json:"segment,omitempty"`
	// Prev is the hash of the previous line; Append sets it.
	Prev string `json:"prev"`
}

// hashSuffix is what follows the "prev" member on every line.
const (
	hashPrefix = `,"hash":"`
	suffixLen  = len(hashPrefix) + 64 + len(`"}`)
)

// encode returns the line for r (with its trailing newline) and its hash.
// It bounds r first (bound); a line that would still exceed MaxLine loses
// its encryption context, and failing that is refused, so that no line
// longer than MaxLine is ever written.
func encode(r *Record) ([]byte, string, error) {
	bound(r)
	body, err := marshal(r)
	if err != nil {
		return nil, "", err
	}
	if len(body)+suffixLen > MaxLine && r.EncryptionContext != nil {
		omitContext(r, "too large for one audit line")
		if body, err = marshal(r); err != nil {
			return nil, "", err
		}
	}
	if len(body)+suffixLen > MaxLine {
		return nil, "", fmt.Errorf("audit: a record of %d bytes does not fit in one line of %d", len(body), MaxLine)
	}
	sum := sha256.Sum256(body)
	line := append(body[:len(body)-1], hashPrefix...)
	line = hex.AppendEncode(line, sum[:])
	h := string(line[len(line)-64:])
	line = append(line, "\"}\n"...)
	return line, h, nil
}

// marshal is r's JSON object, with room after it for the hash.
func marshal(r *Record) ([]byte, error) {
	body, ok := appendRecord(make([]byte, 0, 768), r)
	if ok {
		return body, nil
	}
	if _, err := json.Marshal(r); err != nil {
		return nil, fmt.Errorf("audit: encode record: %w", err)
	}
	return nil, fmt.Errorf("audit: encode record: time %v out of range", r.Time)
}

// Options configure a Log.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CheckpointEvery, when positive, makes the log signal Checkpoints
	// each time that many lines were written since the last signal.
	CheckpointEvery int
	// Logger receives the error logged when the file is found removed or
	// replaced (default slog.Default()).
	Logger *slog.Logger
}

// Log appends records to an audit log. It is safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	w    io.Writer
	f    *os.File // when w is a file: for Sync, Truncate and reading
	path string
	// size, seq and prev are what is written: the file's size, and the seq
	// and hash of its last line.
	size    int64
	seq     uint64
	prev    string
	segment string
	now     func() time.Time
	// Group commit: lines are encoded (and chained) under mu as Append is
	// called, into open, the batch no write has taken yet; tailSeq and
	// tailPrev are the seq and hash of the last line encoded, written or
	// not. One Append at a time writes (writing): it takes open whole,
	// writes it with one write(2), syncs it if any of its lines asked to
	// be, and then wakes (done) every Append whose line was in it.
	open     *batch
	writing  bool
	done     *sync.Cond
	tailSeq  uint64
	tailPrev string
	spare    []byte // a written batch's buffer, for the next batch
	// syncFile flushes the file to stable storage (f.Sync; nil when w is not
	// a file).
	syncFile func() error
	// samePath, after a sync, checks that path still names the open file
	// (nil when w is not a file): a line synced to a file that was removed
	// or replaced is not in the log anyone will read.
	samePath func() error
	logger   *slog.Logger
	// broken is set when a failed write could not be cut back off the file
	// (the file then ends with a torn line and no later line may follow
	// it), or by Fail.
	broken error
	// every and signalled: the checkpoint signal (Options.CheckpointEvery).
	every     uint64
	signalled uint64
	signal    chan struct{}
	// openSeq and openSize are the chain's last seq and the file's size
	// when it was opened (AtOpen).
	openSeq  uint64
	openSize int64
}

// Open opens (creating, mode FileMode) the audit log at path and continues
// its chain. A torn last line (a crash in the middle of a write, which
// answered no request: lines are written before the answer) is cut off.
// The whole file is then verified (Verify): a log whose chain is broken
// anywhere is refused with an error naming the line, and is never
// continued; the file must be moved aside (and kept: it is the evidence)
// to start a new chain. See docs/OPERATIONS.md.
func Open(path string, opts Options) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, FileMode)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, FileMode)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	if created {
		// The new file's directory entry survives a power loss only once
		// its directory is synced; without it, synced lines could vanish
		// with the file.
		if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	l, err := continueFile(f, path, opts)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return l, nil
}

func continueFile(f *os.File, path string, opts Options) (*Log, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	size := st.Size()
	// A torn line is part of one write, so at most MaxLine bytes long.
	start := max(0, size-MaxLine)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("audit: read %s: %w", path, err)
	}
	l := newLog(f, opts)
	l.f, l.path, l.size, l.syncFile = f, path, size, f.Sync
	l.samePath = func() error { return samePath(st, path) }
	torn := len(buf) - (bytes.LastIndexByte(buf, '\n') + 1)
	if torn == len(buf) && start > 0 {
		return nil, fmt.Errorf("audit: %s: the last line is longer than %d bytes, which no writer writes: the chain is broken; move the file aside (keep it) to start a new chain", path, MaxLine)
	}
	if torn > 0 {
		if err := f.Truncate(size - int64(torn)); err != nil {
			return nil, fmt.Errorf("audit: cut the torn last line of %s: %w", path, err)
		}
		l.size -= int64(torn)
	}
	if l.size == 0 {
		return l, nil
	}
	rep, err := Verify(io.NewSectionReader(f, 0, l.size))
	if err != nil {
		return nil, fmt.Errorf("audit: %s: the chain is broken (%v); refusing to continue it: move the file aside (keep it as evidence) to start a new chain", path, err)
	}
	l.seq, l.prev, l.segment, l.signalled = rep.LastSeq, rep.LastHash, rep.Segment, rep.LastSeq
	l.tailSeq, l.tailPrev = l.seq, l.prev
	l.openSeq, l.openSize = l.seq, l.size
	return l, nil
}

// AtOpen is the log as it was when it was opened: its segment ("" when
// it was empty), the seq of its last line, and a reader of its bytes then
// (nil when the log is not a file). What a node checks against the
// cluster's checkpoints is this part: the lines it has written since it
// started are its own, and a log cut while the node was down shows as
// cut, whatever the node wrote after it started.
func (l *Log) AtOpen() (segment string, seq uint64, contents *io.SectionReader) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.openSeq == 0 {
		return "", 0, nil
	}
	if l.f != nil {
		contents = io.NewSectionReader(l.f, 0, l.openSize)
	}
	return l.segment, l.openSeq, contents
}

// New returns a Log writing to w, starting a new chain. w should write
// each line whole or not at all: a torn line breaks the chain.
func New(w io.Writer, opts Options) *Log {
	return newLog(w, opts)
}

func newLog(w io.Writer, opts Options) *Log {
	l := &Log{w: w, prev: Genesis, tailPrev: Genesis, now: opts.Now, signal: make(chan struct{}, 1), logger: opts.Logger}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	l.done = sync.NewCond(&l.mu)
	if opts.CheckpointEvery > 0 {
		l.every = uint64(opts.CheckpointEvery)
	}
	return l
}

// newSegment is a random chain id.
func newSegment() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Path is the file the log writes, "" for a Log made by New.
func (l *Log) Path() string { return l.path }

// Checkpoints is signalled (without blocking; one pending signal at most)
// each Options.CheckpointEvery lines.
func (l *Log) Checkpoints() <-chan struct{} { return l.signal }

// Head is the chain's current head: its segment, the seq of its last line
// and that line's hash (0 and "" before any line).
func (l *Log) Head() (segment string, seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seq == 0 {
		return l.segment, 0, ""
	}
	return l.segment, l.seq, l.prev
}

// Fail makes the log refuse every later line with err: for a chain found
// broken after it was opened (a checkpoint it does not match).
func (l *Log) Fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken == nil {
		l.broken = err
	}
}

// Err is the error the log refuses lines with, nil while it accepts them.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

// batch is lines encoded and waiting to be written together.
type batch struct {
	buf  []byte
	sync bool
	// seq and hash are those of the batch's last line.
	seq  uint64
	hash string
	// done is set once the batch was written (err nil) or failed.
	done bool
	err  error
}

// Append sets r's Seq, Prev, Segment and (if zero) Time, bounds its fields
// (see MaxLine) and writes it as one line. With sync, the file is also
// flushed to stable storage before Append returns. It returns r's Seq. On
// error nothing was added to the chain.
//
// Concurrent Appends are written together (group commit): the lines that
// arrive while one write is under way are written by the next with one
// write(2), and synced once if any of them asked to be; each Append
// returns only when its own line is written (and synced when asked). The
// chain's order is the order of the lines in the file. A write that fails
// fails every line it carried and every line already chained onto them
// (encoded behind them, waiting), is cut back off the file, and the chain
// continues from the last line written.
func (l *Log) Append(r *Record, sync bool) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return 0, l.broken
	}
	if l.segment == "" && l.tailSeq == 0 {
		l.segment = newSegment()
	}
	r.Seq, r.Prev, r.Segment = l.tailSeq+1, l.tailPrev, l.segment
	if r.Time.IsZero() {
		now := time.Now
		if l.now != nil {
			now = l.now
		}
		r.Time = now()
	}
	r.Time = r.Time.UTC()
	line, h, err := encode(r)
	if err != nil {
		return 0, err
	}
	b := l.open
	if b == nil {
		b = &batch{buf: l.spare[:0]}
		l.spare = nil
		l.open = b
	}
	b.buf = append(b.buf, line...)
	b.sync = b.sync || sync
	b.seq, b.hash = r.Seq, h
	l.tailSeq, l.tailPrev = r.Seq, h
	for !b.done {
		if l.writing {
			l.done.Wait()
			continue
		}
		// No write is under way and b is not written: b is still the
		// open batch, and this Append writes it.
		l.flush()
	}
	if b.err != nil {
		return 0, b.err
	}
	return r.Seq, nil
}

// flush writes the open batch; l.mu is held, and released during the
// write.
func (l *Log) flush() {
	// Yield once before taking the batch: goroutines that are runnable
	// now (other requests ending) append their lines to it meanwhile and
	// share its write. With nothing else runnable it returns at once.
	l.writing = true
	l.mu.Unlock()
	runtime.Gosched()
	l.mu.Lock()
	b, syncFile, checkPath := l.open, l.syncFile, l.samePath
	l.open = nil
	l.mu.Unlock()
	n, err := l.w.Write(b.buf)
	if err == nil && n != len(b.buf) {
		err = io.ErrShortWrite
	}
	if err == nil && b.sync && syncFile != nil {
		err = syncFile()
	}
	// Only a batch that was synced is checked: its lines are the intents
	// of changes, which must be in the log before they are acknowledged.
	// Lines that were not synced pay for no stat.
	var gone error
	if err == nil && b.sync && checkPath != nil {
		gone = checkPath()
	}
	l.mu.Lock()
	l.writing, b.done = false, true
	l.done.Broadcast() // the waiters run once mu is released
	if gone != nil {
		// The bytes went to a file that is no longer the log: nothing is
		// cut back (the path is not that file), b's lines and those
		// chained onto them fail, and so does every later line, since
		// they would go to the same lost file.
		if l.broken == nil {
			l.broken = gone
			l.logger.Error("AUDIT LOG REMOVED OR REPLACED: refusing every request that must be audited until the node is restarted", "path", l.path, "err", gone)
		}
		b.err = gone
		if o := l.open; o != nil {
			o.done, o.err, l.open = true, gone, nil
		}
		l.tailSeq, l.tailPrev = l.seq, l.prev
		return
	}
	if err != nil {
		l.cutBack(n)
		b.err = fmt.Errorf("audit: write: %w", err)
		// The lines encoded since were chained onto b's: they fail too,
		// and the chain continues from the last line written.
		if o := l.open; o != nil {
			o.done, o.err, l.open = true, b.err, nil
		}
		l.tailSeq, l.tailPrev = l.seq, l.prev
		return
	}
	l.size += int64(n)
	l.seq, l.prev = b.seq, b.hash
	if cap(b.buf) <= 64<<10 {
		l.spare = b.buf
	}
	if l.every > 0 && l.seq-l.signalled >= l.every {
		l.signalled = l.seq
		select {
		case l.signal <- struct{}{}:
		default:
		}
	}
}

// samePath checks that path still names the file open was read from when
// it was opened: that it was neither removed nor replaced (renamed over,
// or removed and created anew) since.
func samePath(open os.FileInfo, path string) error {
	now, err := os.Stat(path)
	if err == nil && os.SameFile(open, now) {
		return nil
	}
	why := "another file is there now"
	if err != nil {
		why = err.Error()
	}
	return fmt.Errorf("audit: %s was removed or replaced while the node had it open (%s): lines written since went to a file the path no longer names, so they are refused; restart the node to open the log at %s again, and find out what removed it (the new log starts a new chain)", path, why, path)
}

// cutBack removes a failed write's bytes from the file, so that the next
// line continues the chain. If that fails, the log refuses every later
// line.
func (l *Log) cutBack(written int) {
	if l.f == nil {
		return
	}
	if err := l.f.Truncate(l.size); err != nil && written > 0 {
		l.broken = fmt.Errorf("audit: %s ends with a torn line that could not be removed (%v); restart after fixing the disk", l.path, err)
	}
}

// LastHash returns the hash of the last line written ("" before any) and
// its seq. Publishing it elsewhere anchors the chain.
func (l *Log) LastHash() (string, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seq == 0 && l.prev == Genesis {
		return "", 0
	}
	return l.prev, l.seq
}

// ReadAt reads the file's bytes at off, for serving the log to auditors. It
// fails for a Log made by New.
func (l *Log) ReadAt(p []byte, off int64) (int, int64, error) {
	l.mu.Lock()
	size := l.size
	l.mu.Unlock()
	if l.f == nil {
		return 0, 0, errors.New("audit: this log is not a file")
	}
	if off >= size {
		return 0, size, nil
	}
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	n, err := l.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, size, err
}

// Sync flushes every line written so far to stable storage (nothing for a
// Log made by New).
func (l *Log) Sync() error {
	l.mu.Lock()
	f := l.f
	l.mu.Unlock()
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit: sync: %w", err)
	}
	return nil
}

// Contents returns a reader of the file as it is now: every whole line
// written so far, and none written after. It fails for a Log made by New.
func (l *Log) Contents() (*io.SectionReader, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil, errors.New("audit: this log is not a file")
	}
	return io.NewSectionReader(l.f, 0, l.size), nil
}

// Close syncs and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.writing {
		l.done.Wait()
	}
	if l.f == nil {
		return nil
	}
	serr := l.f.Sync()
	cerr := l.f.Close()
	l.f, l.broken = nil, errors.New("audit: log closed")
	if serr != nil {
		return serr
	}
	return cerr
}
