package main

import "testing"

// Bad drill command lines are refused before anything is contacted.
func TestDrillUsage(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no mode", []string{"drill", "failover"}, "--mode is required: transfer"},
		{"bad mode", []string{"drill", "failover", "--mode", "stop"}, `invalid --mode "stop": valid values are transfer, kill`},
		{"kill without commands", []string{"drill", "failover", "--mode", "kill"}, "needs --kill-cmd and --start-cmd"},
		{"transfer with commands", []string{"drill", "failover", "--mode", "transfer", "--kill-cmd", "x {node}"}, "go with --mode kill"},
		{"template names no node", []string{"drill", "failover", "--mode", "kill", "--kill-cmd", "pkill x", "--start-cmd", "start {node}"}, "names no node"},
		{"png plot", []string{"drill", "failover", "--mode", "transfer", "--plot", "x.png"}, "the plot is SVG"},
		{"no rounds", []string{"drill", "failover", "--mode", "transfer", "--rounds", "0"}, "--rounds must be at least 1"},
		{"hsm-loss without commands", []string{"drill", "hsm-loss"}, "needs --hsm-off-cmd and --hsm-on-cmd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.fails(exitUsage, tt.want, tt.args...)
		})
	}
}
