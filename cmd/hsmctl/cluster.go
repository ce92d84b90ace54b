package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/client"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
)

// maxProbeTimeout bounds how long cluster status waits for each member it
// asks directly: an unreachable member must not hold the answer up.
const maxProbeTimeout = 3 * time.Second

func (a *app) clusterCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "cluster",
		Short: "Operate the cluster of brokers: status, membership, leadership, backups",
		Long: `cluster operates the Raft cluster of brokers. Every command needs an admin
client certificate, except that status, join-tokens and verify-backup also
admit auditors. Any member accepts every command and passes it to the
leader when it must.

Joining. A new node joins by itself on its first start, as its
configuration says (deploy/hsmbrokerd.example.yaml):
  join: [host:port, ...]        gRPC addresses of members
  join_token_file: FILE         a one-time token, mode 0600
Make the token with 'hsmctl cluster join-token --node-id ID --out FILE' and
carry FILE to the new node. The joining node's HSM receives the domain key from the
leader's, wrapped HSM to HSM; the token is used up by the join. Tokens not
used yet are listed by id with 'join-tokens'; 'revoke-join-token ID'
withdraws one that is no longer needed or may have leaked.`,
		Example: `  hsmctl cluster status
  hsmctl cluster join-token --ttl 30m --node-id node4 --out node4.join.token
  hsmctl cluster join-tokens
  hsmctl cluster revoke-join-token 3a9a23968244a6cf
  hsmctl cluster transfer-leadership node2
  hsmctl cluster remove node3
  hsmctl cluster backup /var/backups/hsmbroker/$(date +%F).snap
  hsmctl cluster verify-backup /var/backups/hsmbroker/2026-12-01.snap`,
	}, a.clusterStatusCommand(), a.clusterJoinTokenCommand(), a.clusterJoinTokensCommand(), a.clusterRevokeJoinTokenCommand(),
		a.clusterRemoveCommand(),
		a.clusterTransferLeadershipCommand(), a.clusterBackupCommand(), a.clusterVerifyBackupCommand())
}

// partitionJSON is a member's HSM partition in JSON output.
type partitionJSON struct {
	HSMModel         string   `json:"hsmModel"`
	Manufacturer     string   `json:"manufacturer"`
	Serial           string   `json:"serial"`
	TokenLabel       string   `json:"tokenLabel"`
	Library          string   `json:"library"`
	Firmware         string   `json:"firmware"`
	Mechanisms       []string `json:"mechanisms"`
	DomainKeyPresent bool     `json:"domainKeyPresent"`
	Health           string   `json:"health"`
	LastSeen         string   `json:"lastSeen,omitempty"`
}

// nodeJSON is one member in cluster status JSON output.
type nodeJSON struct {
	ID          string `json:"id"`
	GRPCAddress string `json:"grpcAddress"`
	RaftAddress string `json:"raftAddress"`
	// Role is leader, follower, candidate, non_voter or unknown.
	Role    string `json:"role"`
	Healthy bool   `json:"healthy"`
	// Reachable says whether the member answered when asked directly
	// (absent with --probe=false); Error says why it did not.
	Reachable *bool  `json:"reachable,omitempty"`
	Error     string `json:"error,omitempty"`
	// NotServing is why the member, asked itself, does not serve now (its
	// /readyz); known only of the answering broker and, with --probe, of
	// every member that answered.
	NotServing   string        `json:"notServing,omitempty"`
	LastContact  string        `json:"lastContact,omitempty"`
	AppliedIndex uint64        `json:"appliedIndex"`
	CommitIndex  uint64        `json:"commitIndex"`
	Partition    partitionJSON `json:"partition"`
}

func roleName(r pb.NodeRole) string {
	return strings.ToLower(nodeRoles.name(int32(r)))
}

func nodeToJSON(n *pb.NodeStatus) nodeJSON {
	p := n.GetPartition()
	j := nodeJSON{
		ID: n.GetId(), GRPCAddress: n.GetGrpcAddress(), RaftAddress: n.GetRaftAddress(),
		Role: roleName(n.GetRole()), Healthy: n.GetHealthy(),
		AppliedIndex: n.GetAppliedIndex(), CommitIndex: n.GetCommitIndex(),
		Partition: partitionJSON{
			HSMModel: p.GetHsmModel(), Manufacturer: p.GetManufacturer(), Serial: p.GetSerial(),
			TokenLabel: p.GetTokenLabel(), Library: p.GetLibraryPath(), Firmware: p.GetFirmwareVersion(),
			Mechanisms: append([]string{}, p.GetMechanisms()...), DomainKeyPresent: p.GetDomainKeyPresent(),
			Health: p.GetHealth(), LastSeen: timeString(p.GetLastSeen()),
		},
	}
	// A leader's last contact with a leader is from before it led.
	if n.GetLastContact() != nil && n.GetRole() != pb.NodeRole_NODE_ROLE_LEADER {
		j.LastContact = n.GetLastContact().AsDuration().Round(time.Millisecond).String()
	}
	return j
}

func (a *app) clusterStatusCommand() *cobra.Command {
	probe := true
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader and every member: role, health, addresses, Raft progress, HSM partition",
		Long: `status shows the leader and every member of the cluster: id, gRPC and Raft
addresses, Raft role, health, last contact with the leader, applied and
commit index, and its HSM partition (model, serial, token label, library,
mechanisms, domain key, health).

A broker knows its own role, health and progress first-hand, and the other
members only from what they last replicated. So status asks one broker
for the membership, then, by default, asks each other member directly for
its own view; a member that does not answer is shown unreachable and not
healthy. --probe=false shows the first broker's view alone, in which a
member that has not rewritten its record for 30 s (three heartbeat
refreshes) is not healthy.

A broker that does not serve says why, as its /readyz does (catching up,
checking its audit log, removed from the cluster...): below the table for
a member, in the header for a broker outside the configuration it applied.

With -o json: {"leader": ID, "term": N, "answeredBy": ID,
"answeredByNotServing" (only when it does not serve), "nodes": [{"id",
"grpcAddress", "raftAddress", "role" (leader, follower, candidate,
non_voter, unknown), "healthy", "reachable", "error", "notServing",
"lastContact", "appliedIndex", "commitIndex", "partition": {...}}, ...]}.`,
		Example: `  hsmctl cluster status
  hsmctl cluster status -o json | jq -r '.nodes[] | select(.healthy | not) | .id'`,
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
			nodes := make([]nodeJSON, len(resp.GetNodes()))
			for i, n := range resp.GetNodes() {
				nodes[i] = nodeToJSON(n)
				if n.GetId() == resp.GetNodeId() {
					nodes[i].NotServing = resp.GetNotServingReason()
				}
			}
			if probe {
				a.probeMembers(resp.GetNodeId(), nodes)
			}
			if a.json() {
				out := map[string]any{
					"leader": resp.GetLeaderId(), "term": resp.GetTerm(), "answeredBy": resp.GetNodeId(), "nodes": nodes,
				}
				if r := resp.GetNotServingReason(); r != "" {
					out["answeredByNotServing"] = r
				}
				return printJSON(a.stdout, out)
			}
			return a.printClusterStatus(resp, nodes)
		}),
	}
	cmd.Flags().BoolVar(&probe, "probe", true, "ask each member directly for its own role, health and progress")
	return cmd
}

// probeMembers replaces each member's entry (but the answering broker's,
// which is first-hand already) with the member's own, asked directly and
// concurrently.
func (a *app) probeMembers(answeredBy string, nodes []nodeJSON) {
	cfg := a.rawClientConfig() // checked by conn, which made the status call
	cfg.Retries = -1
	cfg.Timeout = min(a.timeout, maxProbeTimeout)
	var wg sync.WaitGroup
	for i := range nodes {
		n := &nodes[i]
		if n.ID == answeredBy {
			yes := true
			n.Reachable = &yes
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			own, err := a.probe(cfg, n.ID, n.GRPCAddress)
			reachable := err == nil
			n.Reachable = &reachable
			if err != nil {
				n.Healthy = false
				n.Error = strings.TrimPrefix(client.Message(err), "client: ")
				return
			}
			own.Reachable = n.Reachable
			*n = own
		}()
	}
	wg.Wait()
}

// probe asks the member at addr for its own entry.
func (a *app) probe(cfg client.Config, id, addr string) (nodeJSON, error) {
	if addr == "" {
		return nodeJSON{}, errors.New("no gRPC address recorded")
	}
	cfg.Endpoints = []string{addr}
	ctx, cancel := context.WithTimeout(a.ctx, cfg.Timeout)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nodeJSON{}, err
	}
	defer c.Close()
	resp, err := c.Cluster.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		return nodeJSON{}, err
	}
	if resp.GetNodeId() != id {
		return nodeJSON{}, fmt.Errorf("%s is node %q, not %q", addr, resp.GetNodeId(), id)
	}
	for _, n := range resp.GetNodes() {
		if n.GetId() == id {
			own := nodeToJSON(n)
			own.NotServing = resp.GetNotServingReason()
			return own, nil
		}
	}
	if r := resp.GetNotServingReason(); r != "" {
		return nodeJSON{}, fmt.Errorf("node %s does not count itself a member; it is not serving: %s", id, r)
	}
	return nodeJSON{}, fmt.Errorf("node %s does not count itself a member", id)
}

func (a *app) printClusterStatus(resp *pb.GetClusterStatusResponse, nodes []nodeJSON) error {
	fmt.Fprintf(a.stdout, "Leader %s, term %d (answered by %s)\n", dash(resp.GetLeaderId()), resp.GetTerm(), resp.GetNodeId())
	member := false
	for _, n := range nodes {
		member = member || n.ID == resp.GetNodeId()
	}
	reason := resp.GetNotServingReason()
	switch {
	case member:
	case len(nodes) == 0:
		// A node joining has no configuration until the leader's first
		// entries reach it.
		also := ""
		if reason != "" {
			also = "; it is not serving: " + reason
		}
		fmt.Fprintf(a.stdout, "Node %s knows no members yet: it is joining, or holds no cluster state%s; ask a member with --addr.\n", resp.GetNodeId(), also)
	case reason != "":
		// The node's own reading (it knows whether it joined a moment ago)
		// rather than a guess from its view.
		fmt.Fprintf(a.stdout, "Node %s is not in the cluster configuration it has applied and is not serving: %s. Its view below may be stale; ask a member with --addr.\n", resp.GetNodeId(), reason)
	default:
		// A node catching up after its join applies configurations from
		// before its admission first; only a member can tell it apart
		// from a removed node.
		fmt.Fprintf(a.stdout, "Node %s is not in the cluster configuration it has applied: it is catching up after a join, or it was removed; its view below may be stale; ask a member with --addr.\n", resp.GetNodeId())
	}
	if resp.GetLeaderId() == "" {
		for _, n := range nodes {
			if n.Role == "leader" {
				fmt.Fprintf(a.stdout, "Node %s says it leads.\n", n.ID)
			}
		}
	}
	var members, partitions [][]string
	for _, n := range nodes {
		healthy := strconv.FormatBool(n.Healthy)
		if n.Reachable != nil && !*n.Reachable {
			healthy = "false (unreachable)"
		}
		members = append(members, []string{n.ID, n.Role, healthy, dash(n.GRPCAddress), dash(n.RaftAddress),
			strconv.FormatUint(n.AppliedIndex, 10), strconv.FormatUint(n.CommitIndex, 10), dash(n.LastContact)})
		p := n.Partition
		dk := "missing"
		switch {
		case p.DomainKeyPresent:
			dk = "present"
		case p.Health != "ok":
			dk = "unknown" // the partition could not be asked
		}
		partitions = append(partitions, []string{n.ID, dash(p.HSMModel), dash(p.Serial), dash(p.TokenLabel), dash(p.Library),
			strconv.Itoa(len(p.Mechanisms)), dk, dash(p.Health), dash(p.LastSeen)})
	}
	if err := table(a.stdout, []string{"NODE", "ROLE", "HEALTHY", "GRPC ADDRESS", "RAFT ADDRESS", "APPLIED", "COMMIT", "LAST CONTACT"}, members); err != nil {
		return err
	}
	for _, n := range nodes {
		switch {
		case n.Error != "":
			fmt.Fprintf(a.stdout, "%s: %s\n", n.ID, n.Error)
		case n.NotServing != "":
			fmt.Fprintf(a.stdout, "%s is not serving: %s\n", n.ID, n.NotServing)
		}
	}
	fmt.Fprintln(a.stdout)
	return table(a.stdout, []string{"NODE", "HSM MODEL", "SERIAL", "TOKEN", "LIBRARY", "MECHANISMS", "DOMAIN KEY", "HEALTH", "LAST SEEN"}, partitions)
}

func (a *app) clusterJoinTokenCommand() *cobra.Command {
	var (
		ttl     time.Duration
		out     string
		force   bool
		nodeID  string
		anyNode bool
	)
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Make a one-time token that lets one new node join",
		Long: `join-token makes a one-time join token, valid for --ttl (1m to 24h). The
cluster keeps only its hash; the token is shown once. The token's id (the
first 8 bytes of that hash, in hex) names it in 'hsmctl cluster
join-tokens' and 'hsmctl cluster revoke-join-token ID' and in the audit
log (key_ref join-token:ID); the token cannot be derived from it.

--node-id ID binds the token to the node that will use it: a join under
any other id is refused, and leaves the token unused, so a token that
leaks is good only with a node certificate for that id. One of --node-id
and --any-node is required; --any-node makes a token any new node may
use, for when the node's id is not known yet.

Give the token to the new node in a file of mode 0600 named by
join_token_file in its configuration, with join listing members' gRPC
addresses. --out FILE writes it there (mode 0600) instead of printing it,
so that it never passes through a terminal or a shell variable; an existing
FILE is refused unless --force.

Without --out, the token alone is printed on standard output, and its id
on standard error. With -o json: {"token", "tokenId", "expireTime"}, or
{"file", "tokenId", "expireTime"} with --out.`,
		Example: `  hsmctl cluster join-token --node-id node4 --out /secure/node4.join.token
  hsmctl cluster join-token --any-node --ttl 1h -o json`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if ttl < time.Minute || ttl > 24*time.Hour {
				return usageErr(fmt.Sprintf("invalid --ttl %s: want 1m to 24h", ttl))
			}
			switch {
			case nodeID == "" && !anyNode:
				return usageErr("name the node that will use the token with --node-id ID (a join under another id is then refused), or give --any-node for a token any new node may use")
			case nodeID != "" && anyNode:
				return usageErr("give --node-id or --any-node, not both")
			}
			if out != "" {
				if err := checkOutPath(out, force); err != nil {
					return err
				}
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.CreateJoinToken(a.ctx, &pb.CreateJoinTokenRequest{Ttl: durationpb.New(ttl), NodeId: nodeID, AnyNode: anyNode})
			if err != nil {
				return err
			}
			expires, id := timeString(resp.GetExpireTime()), resp.GetTokenId()
			if out == "" {
				if a.json() {
					return printJSON(a.stdout, map[string]any{"token": resp.GetToken(), "tokenId": id, "expireTime": expires})
				}
				// Standard output stays the token alone, for a redirection.
				fmt.Fprintf(a.stderr, "Join token %s, valid until %s (revoke it: hsmctl cluster revoke-join-token %s).\n", id, expires, id)
				_, err := fmt.Fprintln(a.stdout, resp.GetToken())
				return err
			}
			if err := writeOutFile(out, []byte(resp.GetToken()+"\n"), privateFileMode, force); err != nil {
				return fmt.Errorf("write the join token (revoke it: hsmctl cluster revoke-join-token %s): %w", id, err)
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"file": out, "tokenId": id, "expireTime": expires})
			}
			fmt.Fprintf(a.stdout, "Join token %s written to %s (mode 0600), valid until %s.\n", id, out, expires)
			// The configuration line names the file absolutely: a relative
			// path there is read from the configuration file's directory,
			// not from this one.
			if abs, err := filepath.Abs(out); err == nil {
				out = abs
			}
			fmt.Fprintf(a.stdout, "In the new node's configuration, before its first start:\n  join: [%s]\n  join_token_file: %s\n",
				strings.Join(a.memberAddresses(c), ", "), out)
			return nil
		}),
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 15*time.Minute, "how long the token stays valid (1m to 24h)")
	cmd.Flags().StringVar(&out, "out", "", "write the token to this new file (mode 0600) instead of standard output; an existing file is refused unless --force")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it exists (a symlink is replaced, not followed)")
	cmd.Flags().StringVar(&nodeID, "node-id", "", "admit only the node of this id with the token (this or --any-node is required)")
	cmd.Flags().BoolVar(&anyNode, "any-node", false, "let any new node join with the token, whatever its id")
	return cmd
}

func (a *app) clusterJoinTokensCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "join-tokens",
		Short: "List the join tokens not used yet, by id (never the tokens)",
		Long: `join-tokens lists every join token that is neither used nor expired: its id,
the node id it is bound to ("-" when it admits any), when it was made
("-" for a token made before the cluster recorded it) and when it expires. Neither the tokens nor their hashes are shown. Any member
answers, from a state as new as every change acknowledged before.

An unused token, with a node certificate of the cluster CA, is enough to
join and receive the domain key. Look here after a join (it should have
used its token), before and after maintenance, and when a host that held
a token, or an admin who made one, can no longer be trusted; revoke what
no node is about to use with 'hsmctl cluster revoke-join-token ID'.

With -o json: {"joinTokens": [{"tokenId", "nodeId", "createTime",
"expireTime"}]}.`,
		Example: `  hsmctl cluster join-tokens
  hsmctl cluster join-tokens -o json | jq -r '.joinTokens[] | select(.nodeId == "") | .tokenId'`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.ListJoinTokens(a.ctx, &pb.ListJoinTokensRequest{})
			if err != nil {
				return err
			}
			type row struct {
				TokenID    string `json:"tokenId"`
				NodeID     string `json:"nodeId"`
				CreateTime string `json:"createTime"`
				ExpireTime string `json:"expireTime"`
			}
			out := []row{}
			var rows [][]string
			for _, t := range resp.GetJoinTokens() {
				r := row{t.GetTokenId(), t.GetNodeId(), timeString(t.GetCreateTime()), timeString(t.GetExpireTime())}
				out = append(out, r)
				rows = append(rows, []string{r.TokenID, dash(r.NodeID), dash(r.CreateTime), r.ExpireTime})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"joinTokens": out})
			}
			return table(a.stdout, []string{"ID", "NODE", "CREATED", "EXPIRES"}, rows)
		}),
	}
}

func (a *app) clusterRevokeJoinTokenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-join-token ID",
		Short: "Withdraw a join token not used yet; a join with it is refused",
		Long: `revoke-join-token withdraws the unused join token whose id is ID (16 hex
digits, as 'join-token' printed it and 'join-tokens' lists it; not the
token itself). From then on a join with the token is refused, as one with
a used token is. Revoke a token that was made by mistake, that no node
will use, or that may have been copied: one left on a host or in a file
that others could read, or made by an admin or a member who is no longer
trusted. A token that is used, expired or already revoked is not found.

It prints what it revoked; with -o json {"revoked": ID}.`,
		Example: `  hsmctl cluster join-tokens
  hsmctl cluster revoke-join-token 3a9a23968244a6cf`,
		Args: exactArgs("ID"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if strings.HasPrefix(args[0], "hsmbj_") {
				// Not repeated, and not sent: it is the secret itself.
				return usageErr("ID is a join token, not its id: revoke it by the 16-hex-digit id 'hsmctl cluster join-tokens' lists; the token is now on this shell's command line and history, so revoke it")
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Cluster.RevokeJoinToken(a.ctx, &pb.RevokeJoinTokenRequest{TokenId: args[0]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"revoked": args[0]}, "Revoked join token %s: a join with it is refused.", args[0])
		}),
	}
}

// memberAddresses lists the members' gRPC addresses for a join list, or
// a placeholder when the status cannot be had.
func (a *app) memberAddresses(c *client.Client) []string {
	resp, err := c.Cluster.GetClusterStatus(a.ctx, &pb.GetClusterStatusRequest{})
	var addrs []string
	for _, n := range resp.GetNodes() {
		if n.GetGrpcAddress() != "" {
			addrs = append(addrs, n.GetGrpcAddress())
		}
	}
	if err != nil || len(addrs) == 0 {
		return []string{"<member host:port>"}
	}
	return addrs
}

func (a *app) clusterRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a member from the cluster",
		Long: `remove takes NODE out of the cluster's Raft configuration. The removed node
stops serving; its HSM partition keeps its objects until an operator
clears it. The leader cannot be removed: transfer leadership first. Nor
can the last voter: to retire a one-node cluster, stop the node. A
removed node that should come back must start over: stop it, move its
audit log aside (it is the record of what the node did; keep it), empty
the rest of its data directory and start it with a new join token
(docs/OPERATIONS.md).`,
		Example: `  hsmctl cluster remove node3`,
		Args:    exactArgs("NODE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Cluster.RemoveNode(a.ctx, &pb.RemoveNodeRequest{NodeId: args[0]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"removed": args[0]}, "Removed %s from the cluster.", args[0])
		}),
	}
}

func (a *app) clusterTransferLeadershipCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leadership [NODE]",
		Short: "Make the leader hand over to another voter",
		Long: `transfer-leadership makes the leader hand over to NODE, or without NODE to
the most up-to-date voter, for maintenance on the leader's host. Writes
fail with Unavailable for the moment the cluster has no leader (clients
retry them). It prints the new leader; with -o json {"leader": ID}.`,
		Example: `  hsmctl cluster transfer-leadership
  hsmctl cluster transfer-leadership node2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErr(fmt.Sprintf("%s takes at most one argument (NODE), got %d", cmd.CommandPath(), len(args)))
			}
			if len(args) == 1 && args[0] == "" {
				return usageErr("NODE must not be empty")
			}
			return nil
		},
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			req := &pb.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.NodeId = args[0]
			}
			resp, err := c.Cluster.TransferLeadership(a.ctx, req)
			if err != nil {
				return err
			}
			return a.confirm(map[string]any{"leader": resp.GetLeaderId()}, "Leader is now %s.", resp.GetLeaderId())
		}),
	}
}

func (a *app) clusterBackupCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a snapshot of the replicated state to FILE",
		Long: `backup writes a consistent snapshot of the replicated state (keys and their
versions as blobs wrapped under the domain key, aliases, policies, grants,
principal roles, TDE keys and token hashes, KMIP objects, PKCS#11 data
objects, members) to FILE, mode 0600, its SHA-256 to FILE.sha256 in the
form 'sha256sum -c' reads, and its authenticator to FILE.auth (both
replaced if they exist). The snapshot holds no plaintext key material: it
is useless without an HSM holding the cluster's domain key, which is why
the HSM partitions need backups of their own.

The authenticator is made in the broker's HSM from the snapshot's SHA-256
under the domain key; 'hsmbrokerd restore' recomputes it in its own HSM
and refuses a backup that was changed after it was made (a principal's
role, a policy, a blob moved to another key), even with its SHA-256
recomputed. Keep FILE.auth with FILE: without it a restore needs
--unauthenticated. It does not tell an older backup from the newest, so
keep the index and term printed here.

The broker streams the snapshot in pieces and ends with its size and
SHA-256; backup writes the pieces to a temporary file beside FILE and
renames it to FILE only once both match. If the stream breaks or the
snapshot does not match, nothing is written. Memory use does not grow with
the snapshot. --timeout bounds the wait for the broker's first piece, not
the whole backup. An existing FILE is kept unless --force is given; a
symlink there is replaced, never followed. A progress line is shown on a
terminal.

It prints the Raft index and term the snapshot covers; with -o json
{"file", "bytes", "index", "term", "sha256", "authenticator_file"}.`,
		Example: `  hsmctl cluster backup /var/backups/hsmbroker/$(date +%F).snap
  sha256sum -c /var/backups/hsmbroker/$(date +%F).snap.sha256`,
		Args: exactArgs("FILE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if err := checkOutPath(file, force); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			info, err := a.backupTo(c, file, force)
			if err != nil {
				return err
			}
			// The checksum describes the file just written: replace any older one.
			if err := writeOutFile(file+".sha256", []byte(info.SHA256+"  "+filepath.Base(file)+"\n"), privateFileMode, true); err != nil {
				return fmt.Errorf("write the backup checksum: %w", err)
			}
			authFile := file + ".auth"
			if len(info.Authenticator) == 0 {
				// An older broker: an authenticator left from an earlier
				// backup under this name would not match this one.
				if err := os.Remove(authFile); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove the earlier backup's authenticator: %w", err)
				}
				authFile = ""
				fmt.Fprintf(a.stderr, "hsmctl: warning: the broker sent no authenticator (it is older than backup authenticators); restoring %s will need 'hsmbrokerd restore --unauthenticated'\n", file)
			} else if err := writeOutFile(authFile, client.FormatBackupAuth(info.Authenticator, filepath.Base(file)), privateFileMode, true); err != nil {
				return fmt.Errorf("write the backup's authenticator: %w", err)
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"file": file, "bytes": info.Bytes,
					"index": info.Index, "term": info.Term, "sha256": info.SHA256, "authenticator_file": authFile})
			}
			return fields(a.stdout,
				"File", file,
				"Bytes", strconv.FormatInt(info.Bytes, 10),
				"Index", strconv.FormatUint(info.Index, 10),
				"Term", strconv.FormatUint(info.Term, 10),
				"SHA256", info.SHA256,
				"Authenticator", dash(authFile),
			)
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists (a symlink is replaced, not followed)")
	return cmd
}

func (a *app) clusterVerifyBackupCommand() *cobra.Command {
	var authFile string
	cmd := &cobra.Command{
		Use:   "verify-backup FILE",
		Short: "Check that a backup is intact and was made by this cluster's domain key",
		Long: `verify-backup checks FILE against its authenticator (FILE.auth, which
'hsmctl cluster backup' wrote beside it, or --auth), without restoring it:
it computes FILE's SHA-256 here and asks a node to make the authenticator
of that SHA-256 again in its HSM, under the cluster's domain key, and
compare. Only the SHA-256 and the authenticator leave this machine.

It prints "Authentic: true" and exits 0 when they match: the backup is byte for
byte one that a cluster with this domain key made, and 'hsmbrokerd
restore' will accept it. It exits 1 when they do not: FILE was changed
after it was made, or the authenticator is another backup's, or the
backup is of a cluster with another domain key; such a backup is refused
by restore. It does not tell an older backup from the newest.

Admins and auditors may run it.`,
		Example: `  hsmctl cluster verify-backup /var/backups/hsmbroker/2026-12-01.snap
  hsmctl cluster verify-backup /mnt/offsite/cluster.snap --auth /mnt/offsite/cluster.snap.auth -o json`,
		Args: exactArgs("FILE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if authFile == "" {
				authFile = file + ".auth"
			}
			auth, err := client.ReadBackupAuth(authFile)
			if err != nil {
				return fmt.Errorf("the backup's authenticator: %w", err)
			}
			sum, err := fileSHA256(file)
			if err != nil {
				return fmt.Errorf("the backup: %w", err)
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.VerifyBackup(a.ctx, &pb.VerifyBackupRequest{Sha256: sum, Authenticator: auth})
			if err != nil {
				return err
			}
			if a.json() {
				if err := printJSON(a.stdout, map[string]any{"file": file, "sha256": sum, "authentic": resp.GetAuthentic(), "node": resp.GetNodeId()}); err != nil {
					return err
				}
			} else if err := fields(a.stdout, "File", file, "SHA256", sum, "Authentic", strconv.FormatBool(resp.GetAuthentic()), "Checked by", resp.GetNodeId()); err != nil {
				return err
			}
			if !resp.GetAuthentic() {
				return fmt.Errorf("backup %s does not match its authenticator %s: it was changed after it was made, the authenticator is another backup's, or another cluster made it; restore would refuse it", file, authFile)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&authFile, "auth", "", "the backup's authenticator file (default: FILE.auth)")
	return cmd
}

// fileSHA256 is the SHA-256 of the file at path, in lowercase hex, read in
// constant memory.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// backupTo streams a backup into a new file, mode 0600, that becomes
// file only once the snapshot's size and SHA-256 check out (see outFile);
// on any failure file is untouched.
func (a *app) backupTo(c *client.Client, file string, force bool) (info client.BackupInfo, err error) {
	out, err := createOutFile(file, privateFileMode, force)
	if err != nil {
		return info, fmt.Errorf("write the backup: %w", err)
	}
	defer out.Abort()
	bar := a.newProgress("backup", -1)
	w := &progressWriter{w: out, bar: bar}
	info, err = c.Backup(a.ctx, w)
	bar.finish(w.n)
	if err != nil {
		return info, fmt.Errorf("%w; nothing written", err)
	}
	if err = out.Commit(); err != nil {
		return info, fmt.Errorf("write the backup: %w", err)
	}
	return info, nil
}

// progressWriter counts the bytes written through it on a progress bar.
type progressWriter struct {
	w   io.Writer
	bar *progressBar
	n   int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	p.bar.update(p.n)
	return n, err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
