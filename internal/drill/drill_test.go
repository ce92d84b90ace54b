package drill_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/client"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"github.com/hsmbroker/hsmbroker/internal/drill"
	"github.com/hsmbroker/hsmbroker/internal/drill/drilltest"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// One short drill of each mode against an in-process cluster: nothing
// acknowledged is lost, and the report agrees with the operations the
// clients recorded.
func TestDrillInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster drill")
	}
	c := hsmtest.NewCluster(t, 3)
	node := func(id string) *hsmtest.Node {
		for _, nd := range c.Nodes {
			if nd.ID == id {
				return nd
			}
		}
		t.Fatalf("no node %s", id)
		return nil
	}
	base := client.Config{Endpoints: []string{c.Nodes[0].GRPCAddr}, TLS: c.ClientTLS("drill", authz.RoleAdmin)}
	tests := []struct {
		mode          drill.Mode
		take, restore drill.Action
	}{
		{mode: drill.ModeTransfer},
		{mode: drill.ModeKill,
			take:    func(_ context.Context, n drill.Node) error { node(n.ID).Stop(); return nil },
			restore: func(_ context.Context, n drill.Node) error { node(n.ID).Start(); return nil }},
		{mode: drill.ModeHSMLoss,
			take: func(_ context.Context, n drill.Node) error {
				node(n.ID).Faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
				return nil
			},
			restore: func(_ context.Context, n drill.Node) error { node(n.ID).Faults.Clear(); return nil }},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			var progress bytes.Buffer
			rep, err := drill.Run(context.Background(), drill.Config{Client: base, Mode: tt.mode, Rounds: 1, Clients: 3,
				Steady: time.Second, Hold: 500 * time.Millisecond, Timeout: 30 * time.Second,
				Take: tt.take, Restore: tt.restore, Progress: &progress})
			t.Logf("progress:\n%s", progress.String())
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			t.Logf("report:\n%s", text.String())
			var svg, trace bytes.Buffer
			if err := rep.WriteSVG(&svg); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteTrace(&trace); err != nil {
				t.Fatal(err)
			}
			drilltest.CheckReport(t, rep, drilltest.ReadTrace(t, &trace), tt.mode, 1)
			drilltest.CheckSVG(t, svg.Bytes(), 1)
		})
	}
	c.WaitConverged(t)
}
