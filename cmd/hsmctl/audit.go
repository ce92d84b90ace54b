package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

func (a *app) auditCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "audit",
		Short: "Fetch and verify the audit logs of the brokers",
		Long: `Every broker writes one JSON line per request it answers, allowed or denied,
to its own audit log. Each line carries the SHA-256 hash of the line before
it and its own hash, so an edited, removed or inserted line breaks the chain
where it is. Every node also records its chain's head in the cluster
(checkpoints, MACed by its HSM), which verify checks a log against.`,
	}, a.auditVerifyCommand(), a.auditFetchCommand())
}

func (a *app) auditVerifyCommand() *cobra.Command {
	var offline bool
	var node string
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check an audit log's hash chain and its checkpoints",
		Long: `verify checks every line of an audit log: its own hash, that it carries the
hash of the line before it, and that the sequence numbers count up. It names
the first line that breaks the chain.

With a broker address (--addr or $HSMBROKER_ADDR) it also checks the log
against the checkpoints of its chain head that its node recorded in the
cluster, and names what is missing: lines cut from the end (before the last
checkpoint), a removed head, or a rewritten chain. The node's HSM checks the
MACs of its own checkpoints: give the address of the node that wrote the
log. Lines written after the last checkpoint are not covered.

It reports every intent line (a change about to be made) without an outcome
line: the node stopped in between; see docs/OPERATIONS.md to reconcile one.

Exit status 0 means the chain is intact and nothing is missing; 1 that it
is not, something is (or the file cannot be read).`,
		Example: `  hsmctl audit verify --addr node1.example:7400 /var/lib/hsmbroker/audit.log`,
		Args:    exactArgs("FILE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := audit.Verify(f)
			var cps []audit.Checkpoint
			macNode := ""
			anchor := !offline && (a.addr != "" || os.Getenv("HSMBROKER_ADDR") != "")
			if err == nil && anchor && rep.Lines == 0 {
				// An empty file names no node. It is the whole log only if its
				// node has no checkpoint: a log emptied after checkpoints were
				// recorded has lost every line they cover.
				return a.verifyEmpty(args[0], node)
			}
			if err == nil && anchor && rep.Lines > 0 {
				if cps, macNode, err = a.auditCheckpoints(rep.Node); err != nil {
					return fmt.Errorf("fetch the audit checkpoints (--offline checks the file alone): %w", err)
				}
				if _, err = f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				rep, err = audit.VerifyAgainst(f, cps)
			}
			out := map[string]any{"file": args[0], "lines": rep.Lines, "intact": err == nil}
			if err != nil {
				if be, ok := err.(*audit.BrokenError); ok {
					out["brokenLine"], out["reason"] = be.Line, be.Reason
					if a.json() {
						if perr := printJSON(a.stdout, out); perr != nil {
							return perr
						}
						return exitCode(exitError)
					}
					fmt.Fprintf(a.stdout, "%s: BROKEN at line %d: %s\n", args[0], be.Line, be.Reason)
					return exitCode(exitError)
				}
				return err
			}
			out["firstSeq"], out["lastSeq"], out["lastHash"], out["continuesEarlierFile"] = rep.FirstSeq, rep.LastSeq, rep.LastHash, rep.Continues
			out["node"], out["segment"], out["ok"], out["problems"] = rep.Node, rep.Segment, rep.OK(), rep.Problems
			out["checkedAgainstCheckpoints"] = anchor
			if anchor {
				out["checkpointedSeq"], out["macsCheckedBy"] = rep.CheckpointedSeq, macNode
			}
			if a.json() {
				if err := printJSON(a.stdout, out); err != nil {
					return err
				}
				if !rep.OK() {
					return exitCode(exitError)
				}
				return nil
			}
			if rep.Lines == 0 {
				fmt.Fprintf(a.stdout, "%s: intact (empty)\n", args[0])
				return nil
			}
			state := "intact"
			if !rep.OK() {
				state = fmt.Sprintf("chain intact, but %d problems", len(rep.Problems))
			}
			fmt.Fprintf(a.stdout, "%s: %s, %d lines (seq %d to %d) of node %s, last hash %s\n", args[0], state, rep.Lines, rep.FirstSeq, rep.LastSeq, rep.Node, rep.LastHash)
			if rep.Continues {
				fmt.Fprintf(a.stdout, "The first line continues an earlier file's chain (prev %s).\n", rep.StartPrev)
			}
			for _, p := range rep.Problems {
				fmt.Fprintf(a.stdout, "  PROBLEM: %s\n", p)
			}
			switch {
			case !anchor:
				fmt.Fprintln(a.stdout, "Not checked against the cluster's checkpoints (no --addr): lines cut from the end, a removed head or a rewritten chain cannot be seen in the file alone.")
			case rep.CheckpointedSeq > 0:
				fmt.Fprintf(a.stdout, "Anchored: the cluster's checkpoint of %s covers seq %d; %d later lines are not covered yet.\n",
					rep.CheckpointedAt.Format(time.RFC3339), rep.CheckpointedSeq, rep.LastSeq-rep.CheckpointedSeq)
			}
			if anchor && macNode != rep.Node && len(cps) > 0 {
				fmt.Fprintf(a.stdout, "The checkpoints' MACs were not checked: node %s answered; give the address of node %s, whose HSM holds their key.\n", macNode, rep.Node)
			} else if anchor && len(cps) > 0 {
				fmt.Fprintf(a.stdout, "The checkpoints' MACs were checked by node %s's HSM.\n", macNode)
			}
			if !rep.OK() {
				return exitCode(exitError)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&offline, "offline", false, "check the file alone, not against the cluster's checkpoints")
	cmd.Flags().StringVar(&node, "node", "", "for an empty FILE, the node whose log it is (default: the broker that answers; a non-empty log names its node)")
	return cmd
}

// verifyEmpty checks an empty log against the checkpoints of node (the
// broker that answers, if ""): with none, it is intact; with any, the lines
// they cover are missing.
func (a *app) verifyEmpty(file, node string) error {
	cps, answered, err := a.auditCheckpoints(node)
	if err != nil {
		return fmt.Errorf("fetch the audit checkpoints (--offline checks the file alone): %w", err)
	}
	if node == "" {
		node = answered
	}
	var last *audit.Checkpoint
	for i := range cps {
		if c := &cps[i]; c.Node == node && (last == nil || c.At.After(last.At)) {
			last = c
		}
	}
	out := map[string]any{"file": file, "lines": 0, "intact": true, "node": node, "checkedAgainstCheckpoints": true,
		"ok": last == nil, "problems": []string{}}
	problem := ""
	if last != nil {
		problem = fmt.Sprintf("the file is empty, but node %s's log was checkpointed up to seq %d (segment %s, %s): if this is its log, every line was removed",
			node, last.Seq, last.Segment, last.At.Format(time.RFC3339))
		out["problems"], out["checkpointedSeq"] = []string{problem}, last.Seq
	}
	if a.json() {
		if err := printJSON(a.stdout, out); err != nil {
			return err
		}
	} else if last == nil {
		fmt.Fprintf(a.stdout, "%s: intact (empty); node %s has no audit checkpoint\n", file, node)
	} else {
		fmt.Fprintf(a.stdout, "%s: empty\n  PROBLEM: %s\n", file, problem)
	}
	if last != nil {
		return exitCode(exitError)
	}
	return nil
}

// auditCheckpoints fetches the checkpoints of node's audit chains, and
// names the node that answered (and checked the MACs of its own).
func (a *app) auditCheckpoints(node string) ([]audit.Checkpoint, string, error) {
	c, err := a.conn()
	if err != nil {
		return nil, "", err
	}
	resp, err := c.Audit.ListAuditCheckpoints(a.ctx, &pb.ListAuditCheckpointsRequest{NodeId: node})
	if err != nil {
		return nil, "", err
	}
	cps := []audit.Checkpoint{}
	for _, c := range resp.GetCheckpoints() {
		mac := audit.MACUnchecked
		switch c.GetMacVerdict() {
		case pb.AuditMacVerdict_AUDIT_MAC_VERDICT_VALID:
			mac = audit.MACValid
		case pb.AuditMacVerdict_AUDIT_MAC_VERDICT_INVALID:
			mac = audit.MACInvalid
		}
		cps = append(cps, audit.Checkpoint{Node: c.GetNodeId(), Segment: c.GetSegment(), Seq: c.GetSeq(), Head: c.GetHead(), At: c.GetTime().AsTime(), MAC: mac})
	}
	return cps, resp.GetNodeId(), nil
}

func (a *app) auditFetchCommand() *cobra.Command {
	var out outFlags
	var offset int64
	cmd := &cobra.Command{
		Use:   "fetch [--out FILE [--force]] [--offset N]",
		Short: "Copy the audit log of the broker that answers",
		Long: `fetch copies the audit log of one broker (the first that answers: pass a
single --addr to choose) to --out or stdout, from --offset bytes on. It
needs the admin or auditor role. Each broker keeps its own log. An --offset
past the end of the log copies nothing, with a warning on stderr.

--out is a new file of mode 0600, put in place only once the whole log has
been copied; an existing file is refused unless --force.`,
		Example: `  hsmctl audit fetch --addr node1.example:7400 --out node1-audit.log && hsmctl audit verify node1-audit.log`,
		Args:    noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			var w io.Writer = a.stdout
			var f *outFile
			if out.toFile() {
				if f, err = createOutFile(out.path, out.perm, out.force); err != nil {
					return err
				}
				defer f.Abort()
				w = f
			}
			next := offset
			for {
				resp, err := c.Access.ReadAuditLog(a.ctx, &pb.ReadAuditLogRequest{Offset: next})
				if err != nil {
					return err
				}
				if next == offset && offset > resp.GetSize() {
					fmt.Fprintf(a.stderr, "hsmctl: warning: --offset %d is past the end of %s's audit log (%d bytes); nothing to copy\n", offset, resp.GetNodeId(), resp.GetSize())
				}
				if _, err := w.Write(resp.GetData()); err != nil {
					return err
				}
				if len(resp.GetData()) == 0 || resp.GetNextOffset() >= resp.GetSize() {
					if f != nil {
						if err := f.Commit(); err != nil {
							return err
						}
						fmt.Fprintf(a.stderr, "%d bytes of %s's audit log written to %s\n", resp.GetNextOffset()-offset, resp.GetNodeId(), out.path)
					}
					return nil
				}
				next = resp.GetNextOffset()
			}
		}),
	}
	out.register(cmd, "audit log", privateFileMode)
	cmd.Flags().Int64Var(&offset, "offset", 0, "start this many bytes into the log")
	return cmd
}
