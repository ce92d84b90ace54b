package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/client/clienttest"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// snapshotOf n bytes that differ from chunk to chunk.
func snapshotOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/clienttest.BackupChunkSize)
	}
	return b
}

func TestBackup(t *testing.T) {
	servers, pki := cluster(t, 1)
	snap := snapshotOf(10*clienttest.BackupChunkSize + 17)
	servers[0].Fake.SetSnapshot(snap)
	c := dial(t, pki, client.Config{}, servers[0].Addr)
	var buf bytes.Buffer
	info, err := c.Backup(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(snap)
	want := client.BackupInfo{Bytes: int64(len(snap)), SHA256: hex.EncodeToString(sum[:]), Index: 1, Term: 1,
		Authenticator: clienttest.BackupAuthenticator(sum[:])}
	if !reflect.DeepEqual(info, want) || !bytes.Equal(buf.Bytes(), snap) {
		t.Fatalf("Backup = %+v (%d bytes), want %+v", info, buf.Len(), want)
	}

	// An empty snapshot still ends with its totals.
	servers[0].Fake.SetSnapshot([]byte{})
	buf.Reset()
	info, err = c.Backup(context.Background(), &buf)
	if err != nil || info.Bytes != 0 || info.SHA256 != hex.EncodeToString(sha256.New().Sum(nil)) || buf.Len() != 0 {
		t.Fatalf("empty Backup = %+v, %v", info, err)
	}

	// A destination that fails ends the stream with its error.
	servers[0].Fake.SetSnapshot(snap)
	werr := errors.New("disk full")
	if _, err := c.Backup(context.Background(), failingWriter{werr}); !errors.Is(err, werr) {
		t.Fatalf("Backup into a failing writer: %v", err)
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

// TestBackupRetry: a Backup stream moves to the next endpoint while no
// message has arrived (refused, unreachable, silent past the timeout), and
// never once one has.
func TestBackupRetry(t *testing.T) {
	unavailable := clienttest.Error(codes.Unavailable, "DependencyTimeoutException", "no HSM")
	for _, tt := range []struct {
		name      string
		setup     func(first *clienttest.Server) string // returns the first endpoint
		wantCode  codes.Code
		wantCalls [2]int
	}{
		{"refused before the first message", func(s *clienttest.Server) string {
			s.FailNext(pb.ClusterService_Backup_FullMethodName, 1, unavailable)
			return s.Addr
		}, codes.OK, [2]int{1, 1}},
		{"broken before the first message", func(s *clienttest.Server) string {
			s.Fake.FailBackupAfter(0, unavailable)
			return s.Addr
		}, codes.OK, [2]int{1, 1}},
		{"unreachable", func(*clienttest.Server) string { return hsmtest.ClosedAddr(t) }, codes.OK, [2]int{0, 1}},
		{"no message within the timeout", func(s *clienttest.Server) string {
			s.SetHook(func(ctx context.Context, _ string) error {
				<-ctx.Done()
				return ctx.Err()
			})
			return s.Addr
		}, codes.OK, [2]int{1, 1}},
		{"not a failover error", func(s *clienttest.Server) string {
			s.FailNext(pb.ClusterService_Backup_FullMethodName, 1, clienttest.Error(codes.PermissionDenied, "AccessDeniedException", "admins only"))
			return s.Addr
		}, codes.PermissionDenied, [2]int{1, 0}},
		{"broken mid-stream", func(s *clienttest.Server) string {
			s.Fake.FailBackupAfter(3, unavailable)
			return s.Addr
		}, codes.Unavailable, [2]int{1, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Two servers with fakes of their own, so that a fault set on
			// the first one's stays there.
			pki := clienttest.NewPKI(t)
			servers := []*clienttest.Server{clienttest.Start(t, pki, clienttest.NewFake()), clienttest.Start(t, pki, clienttest.NewFake())}
			snap := snapshotOf(8 * clienttest.BackupChunkSize)
			for _, s := range servers {
				s.Fake.SetSnapshot(snap)
			}
			first := tt.setup(servers[0])
			c := dial(t, pki, client.Config{Timeout: 300 * time.Millisecond}, first, servers[1].Addr)
			var buf bytes.Buffer
			info, err := c.Backup(context.Background(), &buf)
			if got := client.Code(err); got != tt.wantCode {
				t.Fatalf("Backup: %v, want %v", err, tt.wantCode)
			}
			got := [2]int{len(methodCalls(servers[0], "Backup")), len(methodCalls(servers[1], "Backup"))}
			if got != tt.wantCalls {
				t.Fatalf("calls per server %v, want %v", got, tt.wantCalls)
			}
			if tt.wantCode != codes.OK {
				if client.RequestID(err) == "" {
					t.Error("the error carries no request id")
				}
				return
			}
			if !bytes.Equal(buf.Bytes(), snap) || info.Bytes != int64(len(snap)) {
				t.Fatalf("backup after a retry: %d bytes, info %+v", buf.Len(), info)
			}
			if c.PreferredEndpoint() != servers[1].Addr {
				t.Errorf("preferred endpoint %s, want the one that answered", c.PreferredEndpoint())
			}
			if got[0] == 1 {
				a, b := methodCalls(servers[0], "Backup")[0], methodCalls(servers[1], "Backup")[0]
				if a.RequestID != b.RequestID {
					t.Errorf("retry changed the request id: %q then %q", a.RequestID, b.RequestID)
				}
			}
		})
	}
}

// TestReceiveBackupChecks: ReceiveBackup refuses a stream whose bytes do not
// match its last message, or that has none.
func TestReceiveBackupChecks(t *testing.T) {
	snap := snapshotOf(3000)
	sum := sha256.Sum256(snap)
	good := hex.EncodeToString(sum[:])
	for _, tt := range []struct {
		name string
		msgs []*pb.BackupResponse
	}{
		{"no closing message", []*pb.BackupResponse{{Chunk: snap}}},
		{"wrong hash", []*pb.BackupResponse{{Chunk: snap}, {Sha256: hex.EncodeToString(make([]byte, 32)), Size: 3000}}},
		{"wrong size", []*pb.BackupResponse{{Chunk: snap}, {Sha256: good, Size: 2999}}},
		{"a byte lost", []*pb.BackupResponse{{Chunk: snap[1:]}, {Sha256: good, Size: 3000}}},
		{"a message after the closing one", []*pb.BackupResponse{{Chunk: snap}, {Sha256: good, Size: 3000}, {Chunk: []byte("x")}}},
		{"a short authenticator", []*pb.BackupResponse{{Chunk: snap}, {Sha256: good, Size: 3000, Authenticator: make([]byte, 39)}}},
		{"a long authenticator", []*pb.BackupResponse{{Chunk: snap}, {Sha256: good, Size: 3000, Authenticator: make([]byte, 41)}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stream := scriptedBackup(t, tt.msgs)
			if _, err := client.ReceiveBackup(stream, io.Discard); !errors.Is(err, client.ErrIncompleteBackup) {
				t.Fatalf("ReceiveBackup: %v, want ErrIncompleteBackup", err)
			}
		})
	}
	// The same messages, well formed, are accepted, the last one's chunk
	// included.
	var buf bytes.Buffer
	info, err := client.ReceiveBackup(scriptedBackup(t, []*pb.BackupResponse{{Chunk: snap[:1000]}, {Chunk: snap[1000:2000]},
		{Chunk: snap[2000:], Sha256: good, Size: 3000, Index: 9, Term: 2}}), &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), snap) || !reflect.DeepEqual(info, client.BackupInfo{Bytes: 3000, SHA256: good, Index: 9, Term: 2}) {
		t.Fatalf("ReceiveBackup = %+v, %v", info, err)
	}
}

// TestBackupAuthFile: an authenticator file reads back as written, and
// anything else is refused with the reason.
func TestBackupAuthFile(t *testing.T) {
	auth := clienttest.BackupAuthenticator(make([]byte, 32))
	file := client.FormatBackupAuth(auth, "2026-12-07.snap")
	if !strings.HasPrefix(string(file), "hsmbroker-backup-authenticator-v1 "+hex.EncodeToString(auth)+"  2026-12-07.snap\n") {
		t.Fatalf("authenticator file %q", file)
	}
	if got, err := client.ParseBackupAuth(file); err != nil || !bytes.Equal(got, auth) {
		t.Fatalf("ParseBackupAuth = %x, %v", got, err)
	}
	for _, tt := range []struct{ name, data, want string }{
		{"empty", "", "not an hsmbroker backup authenticator file"},
		{"a sha256sum line", strings.Repeat("ab", 32) + "  x.snap\n", "not an hsmbroker backup authenticator file"},
		{"no authenticator", "hsmbroker-backup-authenticator-v1\n", "not an hsmbroker backup authenticator file"},
		{"short", "hsmbroker-backup-authenticator-v1 " + strings.Repeat("ab", 39) + "  x\n", "not 80 hex digits"},
		{"not hex", "hsmbroker-backup-authenticator-v1 " + strings.Repeat("zz", 40) + "  x\n", "not 80 hex digits"},
		{"too long", strings.Repeat("x", 1025), "more than 1024 bytes"},
	} {
		if _, err := client.ParseBackupAuth([]byte(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
	// From a file: read back, and a file of any size is read only as far
	// as an authenticator file can go (/dev/zero never ends).
	path := filepath.Join(t.TempDir(), "b.snap.auth")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := client.ReadBackupAuth(path); err != nil || !bytes.Equal(got, auth) {
		t.Fatalf("ReadBackupAuth = %x, %v", got, err)
	}
	big := filepath.Join(t.TempDir(), "big.auth")
	if err := os.WriteFile(big, append(file, make([]byte, 2000)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ReadBackupAuth(big); err == nil || !strings.Contains(err.Error(), "more than 1024 bytes") {
		t.Fatalf("ReadBackupAuth of a 2 KB file: %v", err)
	}
	// Not a regular file: a device that never ends, a FIFO with no writer
	// (which would block an ordinary open for good), a directory.
	fifo := filepath.Join(t.TempDir(), "fifo.auth")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", fifo, t.TempDir()} {
		if _, err := client.ReadBackupAuth(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("ReadBackupAuth(%s): %v", p, err)
		}
	}
}

// scriptedBackup is a Backup stream, over a real gRPC connection, that
// sends msgs and ends.
func scriptedBackup(t *testing.T, msgs []*pb.BackupResponse) grpc.ServerStreamingClient[pb.BackupResponse] {
	t.Helper()
	pki := clienttest.NewPKI(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLS())))
	pb.RegisterClusterServiceServer(srv, scripted{msgs: msgs})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c := dial(t, pki, client.Config{}, lis.Addr().String())
	stream, err := c.Cluster.Backup(context.Background(), &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

type scripted struct {
	pb.UnimplementedClusterServiceServer
	msgs []*pb.BackupResponse
}

func (s scripted) Backup(_ *pb.BackupRequest, stream pb.ClusterService_BackupServer) error {
	for _, m := range s.msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}
