package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/hsmbroker/hsmbroker/internal/fsutil"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
)

// BackupInfo describes a backup received whole: what the last message of
// the ClusterService.Backup stream said, checked against the bytes that
// came before it.
type BackupInfo struct {
	// Bytes is the size of the snapshot.
	Bytes int64
	// SHA256 is its SHA-256, 64 lowercase hex digits.
	SHA256 string
	// Index and Term are the last Raft log entry the snapshot covers.
	Index, Term uint64
	// Authenticator is the backup's authenticator (BackupAuthenticatorSize
	// bytes, made in the broker's HSM under the domain key), which a
	// restore needs to check that the backup was not changed; empty from a
	// broker older than authenticators.
	Authenticator []byte
}

// BackupAuthenticatorSize is the length of a backup's authenticator.
const BackupAuthenticatorSize = 40

// ErrIncompleteBackup is returned (wrapped) when a backup stream ends
// without its closing message, or its bytes do not match what that
// message says. Whatever was written to the destination must be
// discarded.
var ErrIncompleteBackup = errors.New("client: the backup is incomplete or damaged")

// Backup writes a snapshot of the cluster's replicated state to w as it
// streams in from one broker (ClusterService.Backup), in constant memory,
// and checks its size and SHA-256 against the stream's last message. The
// call moves to another endpoint, like an idempotent unary call, only
// while no message has arrived: once bytes have reached w, a failure ends
// it. On any error w may hold part of a snapshot, which the caller must
// discard; the snapshot is good only if Backup returns nil.
func (c *Client) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if w fails
	stream, err := c.Cluster.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		return BackupInfo{}, err
	}
	return ReceiveBackup(stream, w)
}

// ReceiveBackup reads a ClusterService.Backup stream to its end, writing
// each chunk to w, and checks the snapshot's size and SHA-256 against the
// stream's last message. It is Client.Backup for a stream opened another
// way (a ClusterServiceClient over a single connection). An error that
// wraps ErrIncompleteBackup means the stream ended early or its bytes are
// damaged; any error means w holds no usable snapshot.
func ReceiveBackup(stream grpc.ServerStreamingClient[pb.BackupResponse], w io.Writer) (BackupInfo, error) {
	var (
		h    hash.Hash = sha256.New()
		n    int64
		last *pb.BackupResponse
	)
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return BackupInfo{}, err
		}
		if last != nil {
			return BackupInfo{}, fmt.Errorf("%w: a message follows the closing one", ErrIncompleteBackup)
		}
		if chunk := m.GetChunk(); len(chunk) > 0 {
			h.Write(chunk)
			n += int64(len(chunk))
			if _, err := w.Write(chunk); err != nil {
				return BackupInfo{}, err
			}
		}
		if m.GetSha256() != "" {
			last = m
		}
	}
	if last == nil {
		return BackupInfo{}, fmt.Errorf("%w: the stream ended after %d bytes without its closing message", ErrIncompleteBackup, n)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if uint64(n) != last.GetSize() {
		return BackupInfo{}, fmt.Errorf("%w: received %d bytes, the broker sent %d", ErrIncompleteBackup, n, last.GetSize())
	}
	if got != last.GetSha256() {
		return BackupInfo{}, fmt.Errorf("%w: the snapshot's SHA-256 is %s, the broker's is %s", ErrIncompleteBackup, got, last.GetSha256())
	}
	auth := last.GetAuthenticator()
	if len(auth) != 0 && len(auth) != BackupAuthenticatorSize {
		return BackupInfo{}, fmt.Errorf("%w: the broker's authenticator is %d bytes, want %d", ErrIncompleteBackup, len(auth), BackupAuthenticatorSize)
	}
	return BackupInfo{Bytes: n, SHA256: got, Index: last.GetIndex(), Term: last.GetTerm(), Authenticator: auth}, nil
}

// backupAuthTag starts an authenticator file's line and names its format.
const backupAuthTag = "hsmbroker-backup-authenticator-v1"

// FormatBackupAuth is the content of the authenticator file written beside
// a backup (FILE.auth): one line, the format's tag, the authenticator in
// lowercase hex and the backup's file name, like a sha256sum line.
func FormatBackupAuth(auth []byte, name string) []byte {
	return []byte(backupAuthTag + " " + hex.EncodeToString(auth) + "  " + name + "\n")
}

// maxBackupAuthFile is the most bytes an authenticator file may have.
const maxBackupAuthFile = 1024

// ReadBackupAuth reads the authenticator file at path (ParseBackupAuth)
// as a small regular file (fsutil.ReadSmallFile): it sits with the backup,
// where whoever can write backups can make it anything. Every error names
// path.
func ReadBackupAuth(path string) ([]byte, error) {
	data, err := fsutil.ReadSmallFile(path, maxBackupAuthFile)
	if err != nil {
		return nil, err
	}
	auth, err := ParseBackupAuth(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return auth, nil
}

// ParseBackupAuth reads an authenticator file made by FormatBackupAuth and
// returns the authenticator. The file name it names is not checked: a
// backup may be renamed.
func ParseBackupAuth(data []byte) ([]byte, error) {
	if len(data) > maxBackupAuthFile {
		return nil, fmt.Errorf("an authenticator file of more than %d bytes, not one line", maxBackupAuthFile)
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 || fields[0] != backupAuthTag {
		return nil, fmt.Errorf("not an hsmbroker backup authenticator file (one line starting %q)", backupAuthTag)
	}
	auth, err := hex.DecodeString(fields[1])
	if err != nil || len(auth) != BackupAuthenticatorSize {
		return nil, fmt.Errorf("the authenticator is not %d hex digits", 2*BackupAuthenticatorSize)
	}
	return auth, nil
}
