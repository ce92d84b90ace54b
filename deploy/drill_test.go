package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/drill"
	"github.com/hsmbroker/hsmbroker/internal/drill/drilltest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestDrillLocalCluster runs hsmctl drill against a 3-node cluster of
// processes started by local-cluster.sh, as an operator would: a
// leadership transfer, the leader killed and restarted with the script's
// own kill and start, and a follower's HSM taken away through the
// daemons' drill switch. Each report must show nothing lost and agree with
// the trace of what its clients saw, and with what the cluster shows
// afterwards.
func TestDrillLocalCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes; skipped with -short")
	}
	requireSoftHSM(t)
	switches := t.TempDir()
	// Inherited by the nodes local-cluster.sh starts.
	t.Setenv("HSMBROKER_DRILL_HSM_FAULT_FILE", filepath.Join(switches, "{node}.hsm-down"))
	c := startLocalCluster(t)
	c.waitStatus("3 healthy nodes and a leader", func(st clusterStatus) error { return st.allHealthy(3) })
	script, err := filepath.Abs("local-cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	sh := func(args ...string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		return strings.Join(q, " ")
	}
	rounds := 1
	if os.Getenv("HSMBROKER_SOAK") != "" {
		rounds = 5
	}
	common := []string{"--rounds", strconv.Itoa(rounds), "--clients", "3", "--steady", "2s", "--hold", "1s", "--wait", "90s", "-o", "json"}
	tests := []struct {
		name string
		mode drill.Mode
		args []string
	}{
		{"transfer", drill.ModeTransfer, []string{"failover", "--mode", "transfer"}},
		{"kill", drill.ModeKill, []string{"failover", "--mode", "kill",
			"--kill-cmd", "bash " + sh(script, "kill", c.dir) + " {n}",
			"--start-cmd", "bash " + sh(script, "start", c.dir) + " {n}"}},
		{"hsm-loss", drill.ModeHSMLoss, []string{"hsm-loss",
			"--hsm-off-cmd", "touch " + sh(switches) + "/{node}.hsm-down",
			"--hsm-on-cmd", "rm " + sh(switches) + "/{node}.hsm-down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pids := c.pids()
			trace, plot := filepath.Join(t.TempDir(), "trace.jsonl"), filepath.Join(t.TempDir(), "plot.svg")
			args := append(append([]string{"drill"}, tt.args...), append(common, "--trace", trace, "--plot", plot)...)
			stdout := c.drill(args...)
			var rep drill.Report
			if err := json.Unmarshal(stdout, &rep); err != nil {
				t.Fatalf("drill output is not a JSON report: %v\n%s", err, stdout)
			}
			f, err := os.Open(trace)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			drilltest.CheckReport(t, &rep, drilltest.ReadTrace(t, f), tt.mode, rounds)
			svg, err := os.ReadFile(plot)
			if err != nil {
				t.Fatal(err)
			}
			drilltest.CheckSVG(t, svg, rounds)
			rd := rep.Rounds[rounds-1]

			// What the cluster shows afterwards agrees with the report.
			st := c.waitStatus("3 healthy nodes after the drill", func(st clusterStatus) error { return st.allHealthy(3) })
			switch tt.mode {
			case drill.ModeTransfer, drill.ModeKill:
				if st.Leader != rd.NewLeader {
					t.Errorf("the cluster's leader is %s; the report says %s took over", st.Leader, rd.NewLeader)
				}
			case drill.ModeHSMLoss:
				if st.Leader != rd.OldLeader {
					t.Errorf("the leader changed from %s to %s in an HSM loss drill", rd.OldLeader, st.Leader)
				}
				log, _ := os.ReadFile(filepath.Join(c.dir, rd.Node+".log"))
				if !bytes.Contains(log, []byte("HSM drill switch on")) || !bytes.Contains(log, []byte("HSM drill switch off")) {
					t.Errorf("%s's log does not show its HSM going away and back", rd.Node)
				}
			}
			killed := map[string]bool{}
			for _, r := range rep.Rounds {
				killed[r.Node] = tt.mode == drill.ModeKill
			}
			after := c.pids()
			for n, pid := range pids {
				if restarted := after[n] != pid; restarted != killed[n] {
					t.Errorf("%s: pid %d before, %d after the drill; the report took %v away (%s)", n, pid, after[n], killed, tt.mode)
				}
			}
			c.checkDrillAliases(&rep)
		})
	}
	c.checkNoSecrets()
}

// drill runs hsmctl with the exports of cluster.env and the script's
// environment (which the drill's commands need), and returns its standard
// output. Its progress lines go to the test log.
func (c *localCluster) drill(args ...string) []byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bins, "hsmctl"), args...)
	cmd.Env = append([]string(nil), c.env...)
	for k, v := range c.envFile("cluster") {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	c.t.Logf("hsmctl %s\n%s", strings.Join(args[:3], " "), stderr.String())
	if err != nil {
		c.logNodeLogs()
		c.t.Fatalf("hsmctl drill: %v\n%s", err, stdout.String())
	}
	return stdout.Bytes()
}

// checkDrillAliases counts the aliases of the keys the drill's clients
// created: at least the acknowledged ones, at most those plus the
// creations whose outcome the clients did not learn.
func (c *localCluster) checkDrillAliases(rep *drill.Report) {
	c.t.Helper()
	sdk := c.sdkClient()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	prefix := "alias/drill-" + rep.ID + "-c"
	n, token := 0, ""
	for {
		resp, err := sdk.Keys.ListAliases(ctx, &pb.ListAliasesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			c.t.Fatal(err)
		}
		for _, a := range resp.GetAliases() {
			if strings.HasPrefix(a.GetAliasName(), prefix) {
				n++
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	acked := rep.Check.Keys - 1 // the drill's shared AES key is checked too
	unknown := 0
	for kind, k := range rep.ErrorKinds {
		if strings.HasPrefix(kind, drill.OpCreate+" ") {
			unknown += k
		}
	}
	if n < acked || n > acked+unknown {
		c.t.Errorf("the cluster holds %d aliases %s*; the clients had %d creations acknowledged and %d failed", n, prefix, acked, unknown)
	}
}
