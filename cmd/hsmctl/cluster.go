package main

import (
	"fmt"
	"strconv"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

func (a *app) clusterCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "cluster",
		Short: "Inspect the cluster of brokers",
	}, a.clusterStatusCommand())
}

func (a *app) clusterStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the leader and every member as the answering broker sees them",
		Example: `  hsmctl cluster status
  hsmctl cluster status -o json | jq '.nodes[] | select(.healthy | not) | .id'`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.GetClusterStatus(a.ctx, &pb.GetClusterStatusRequest{})
			if err != nil {
				return err
			}
			type nodeJSON struct {
				ID           string `json:"id"`
				GRPCAddress  string `json:"grpcAddress"`
				RaftAddress  string `json:"raftAddress"`
				Role         string `json:"role"`
				Healthy      bool   `json:"healthy"`
				LastContact  string `json:"lastContact,omitempty"`
				AppliedIndex uint64 `json:"appliedIndex"`
				CommitIndex  uint64 `json:"commitIndex"`
				HSMModel     string `json:"hsmModel,omitempty"`
				TokenLabel   string `json:"tokenLabel,omitempty"`
				HSMHealth    string `json:"hsmHealth,omitempty"`
			}
			nodes := []nodeJSON{}
			var rows [][]string
			for _, n := range resp.GetNodes() {
				j := nodeJSON{
					ID: n.GetId(), GRPCAddress: n.GetGrpcAddress(), RaftAddress: n.GetRaftAddress(),
					Role: nodeRoles.name(int32(n.GetRole())), Healthy: n.GetHealthy(),
					AppliedIndex: n.GetAppliedIndex(), CommitIndex: n.GetCommitIndex(),
					HSMModel: n.GetPartition().GetHsmModel(), TokenLabel: n.GetPartition().GetTokenLabel(),
					HSMHealth: n.GetPartition().GetHealth(),
				}
				if n.GetLastContact() != nil {
					j.LastContact = n.GetLastContact().AsDuration().String()
				}
				nodes = append(nodes, j)
				rows = append(rows, []string{j.ID, j.Role, strconv.FormatBool(j.Healthy), j.GRPCAddress,
					strconv.FormatUint(j.AppliedIndex, 10), dash(j.LastContact), dash(j.HSMHealth)})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{
					"leaderId": resp.GetLeaderId(), "term": resp.GetTerm(), "nodeId": resp.GetNodeId(), "nodes": nodes,
				})
			}
			fmt.Fprintf(a.stdout, "Leader %s, term %d (answered by %s)\n", dash(resp.GetLeaderId()), resp.GetTerm(), resp.GetNodeId())
			return table(a.stdout, []string{"NODE", "ROLE", "HEALTHY", "GRPC ADDRESS", "APPLIED", "LAST CONTACT", "HSM"}, rows)
		}),
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
