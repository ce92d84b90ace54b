package hsmtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// A dump shaped like the one of the raft pipeline wedge: the test's
// cleanup waiting on a node's shutdown, the stuck sender, idle readers,
// and goroutines that have waited under a minute.
const sampleDump = `goroutine 14 [sync.WaitGroup.Wait, 3 minutes]:
sync.runtime_SemacquireWaitGroup(0xc000c1f9e8?, 0x5c?)
	/usr/local/go/src/runtime/sema.go:114 +0x2e
sync.(*WaitGroup).Wait(0xc000342308)
	/usr/local/go/src/sync/waitgroup.go:206 +0xc5
github.com/hashicorp/raft.(*raftState).waitShutdown(...)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/state.go:154
github.com/hashicorp/raft.(*shutdownFuture).Error(0xc000108070)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/future.go:175 +0x58
github.com/hsmbroker/hsmbroker/cluster.(*Node).Shutdown(...)
	/work/main/cluster/node.go:617
github.com/hsmbroker/hsmbroker/hsmtest.(*Node).Stop(0xc000001000)
	/work/main/hsmtest/cluster.go:379 +0x137
created by testing.(*T).Run in goroutine 1
	/usr/local/go/src/testing/testing.go:2101 +0xb13

goroutine 101 [select, 3 minutes]:
github.com/hashicorp/raft.(*netPipeline).AppendEntries(0xc0002e0e40, 0xc0002b3320, 0xc000b99e50)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/net_transport.go:885 +0x3e5
github.com/hashicorp/raft.(*Raft).pipelineSend(0xc0003422c8, 0xc0001edc70, {0x1464990, 0xc0002e0e40}, 0xc000467848, 0x39)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/replication.go:520 +0xdf
created by github.com/hashicorp/raft.(*raftState).goFunc in goroutine 21
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/state.go:147 +0xdd

goroutine 21252 [select, 11 minutes]:
github.com/hashicorp/raft.(*NetworkTransport).handleCommand(0xc00042c700, 0xc00417aea0, 0xc00010ab40, 0xc000b9d980)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/net_transport.go:736 +0xe8d
github.com/hashicorp/raft.(*NetworkTransport).handleConn(0xc00042c700, {0x1465058, 0xc0000eb1d0}, {0x146e570, 0xc001e45360})
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/net_transport.go:625 +0x5fa

goroutine 21230 [select, 11 minutes]:
github.com/hashicorp/raft.(*NetworkTransport).handleCommand(0xc00042c700, 0xc00270f320, 0xc000215540, 0xc00362ea80)
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/net_transport.go:736 +0x111d
github.com/hashicorp/raft.(*NetworkTransport).handleConn(0xc00042c700, {0x1465058, 0xc0000eb1d0}, {0x146e570, 0xc0016c7350})
	/root/go/pkg/mod/github.com/hashicorp/raft@v1.7.3/net_transport.go:625 +0x5fa

goroutine 5459 [select]:
github.com/hsmbroker/hsmbroker/broker/hsm.(*Partition).callWorker(0xc000d72700, 0xc0015a0e00)
	/work/main/broker/hsm/partition.go:325 +0x1e9

goroutine 20 [IO wait]:
internal/poll.runtime_pollWait(0x7f1da9713a00, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
net.(*TCPListener).Accept(0xc00031c500)
	/usr/local/go/src/net/tcpsock.go:387 +0x65
`

func TestHangDigest(t *testing.T) {
	got := hangDigest(sampleDump, 1, 20)
	want := "" +
		"    1 x 3 min sync.WaitGroup.Wait | raft.(*raftState).waitShutdown <- raft.(*shutdownFuture).Error | cluster.(*Node).Shutdown\n" +
		"    2 x 11 min select | raft.(*NetworkTransport).handleCommand <- raft.(*NetworkTransport).handleConn | -\n" +
		"    1 x 3 min select | raft.(*netPipeline).AppendEntries <- raft.(*Raft).pipelineSend | -\n"
	if got != want {
		t.Fatalf("digest:\n%s\nwant:\n%s", got, want)
	}
	// Every goroutine, waits under a minute included.
	all := hangDigest(sampleDump, 0, 20)
	for _, w := range []string{"0 min select | hsm.(*Partition).callWorker | hsm.(*Partition).callWorker", "0 min IO wait |  | -"} {
		if !strings.Contains(all, w) {
			t.Errorf("digest of every goroutine lacks %q:\n%s", w, all)
		}
	}
	if got := hangDigest(sampleDump, 1, 2); !strings.HasSuffix(got, "... and 1 more groups (the full dump is above)\n") {
		t.Errorf("a digest cut at two lines does not say what it left out:\n%s", got)
	}
	if got := hangDigest("goroutine 1 [running]:\nmain.main()\n", 1, 20); got != "  (none)\n" {
		t.Errorf("digest of a dump with no long waits: %q", got)
	}
}

// hangHelperEnv makes TestTimeoutDigestHelper block, in a child process.
const hangHelperEnv = "HSMTEST_HANG_HELPER"

func TestTimeoutDigestHelper(t *testing.T) {
	if os.Getenv(hangHelperEnv) == "" {
		t.Skip("runs only as the child of TestTimeoutDigest")
	}
	block := make(chan struct{})
	<-block
}

// A test binary that runs into its timeout ends its output with the digest,
// which names the blocked test, and exits with status 2.
func TestTimeoutDigest(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestTimeoutDigestHelper$", "-test.timeout=3s")
	cmd.Env = append(os.Environ(), hangHelperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("the blocked child exited with %v, want status 2; stderr:\n%s", err, stderr.String())
	}
	out := stderr.String()
	i := strings.LastIndex(out, "hsmtest: the tests are 150ms from their 3s timeout. all goroutines")
	if i < 0 {
		t.Fatalf("no digest in the child's output:\n%s", out)
	}
	digest := out[i:]
	if !strings.Contains(digest, "chan receive | hsmtest.TestTimeoutDigestHelper <- testing.tRunner | hsmtest.TestTimeoutDigestHelper") {
		t.Fatalf("the digest does not name the blocked test:\n%s", digest)
	}
	if strings.Contains(out, "panic: test timed out") {
		t.Fatalf("Go's own timeout fired before the digest:\n%s", out)
	}
}
