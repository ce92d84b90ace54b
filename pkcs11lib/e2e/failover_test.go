package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
)

// TestThreeNodeFailover: a master key made through one node is used
// through the others, and the library keeps answering while the broker it
// uses goes away (its gRPC server stopped at once, connections cut, Raft
// shut down) — the client SDK moves to the next endpoint.
func TestThreeNodeFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	e := newEnv(t, 3)
	bin := e.cProgram()
	all := e.vars
	only := func(i int) []string {
		v := append([]string(nil), all...)
		return append(v, client.EnvAddr+"="+e.c.Nodes[i].GRPCAddr)
	}
	// Made through node 3 alone.
	e.vars = only(2)
	if out := e.run(bin, e.lib, "set", e.path("wrapped.bin")); !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("set through node 3:\n%s", out)
	}
	e.c.WaitConverged(t)
	// Used through node 1 alone.
	e.vars = only(0)
	if out := e.run(bin, e.lib, "open", e.path("wrapped.bin")); !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("open through node 1:\n%s", out)
	}

	// All three endpoints, node 1 first: it is the one in use until it dies.
	e.vars = all
	stop := e.path("stopped")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, e.lib, "loop", stop)
	cmd.Env = append(os.Environ(), e.vars...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	e.c.Nodes[0].Stop()
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "round trips") {
		t.Fatalf("the library failed across the broker's loss: %v\n%s", err, out.String())
	}
	t.Logf("%s", strings.TrimSpace(out.String()))
}
