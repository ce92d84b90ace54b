package main

import (
	"fmt"
	"io"
	"os"

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
where it is.`,
	}, a.auditVerifyCommand(), a.auditFetchCommand())
}

func (a *app) auditVerifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE",
		Short: "Check an audit log's hash chain",
		Long: `verify checks every line of an audit log: its own hash, that it carries the
hash of the line before it, and that the sequence numbers count up. It names
the first line that breaks the chain. Exit status 0 means the chain is
intact; 1 that it is not (or the file cannot be read).

Lines removed from the end cannot be seen in the file alone: compare the
last hash it prints with one kept elsewhere. A log that was rotated starts
with a line continuing the previous file's chain; verify says so.`,
		Example: `  hsmctl audit verify /var/lib/hsmbroker/audit.log`,
		Args:    exactArgs("FILE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := audit.Verify(f)
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
			if a.json() {
				return printJSON(a.stdout, out)
			}
			if rep.Lines == 0 {
				fmt.Fprintf(a.stdout, "%s: intact (empty)\n", args[0])
				return nil
			}
			fmt.Fprintf(a.stdout, "%s: intact, %d lines (seq %d to %d), last hash %s\n", args[0], rep.Lines, rep.FirstSeq, rep.LastSeq, rep.LastHash)
			if rep.Continues {
				fmt.Fprintf(a.stdout, "The first line continues an earlier file's chain (prev %s).\n", rep.StartPrev)
			}
			return nil
		}),
	}
}

func (a *app) auditFetchCommand() *cobra.Command {
	var out string
	var offset int64
	cmd := &cobra.Command{
		Use:   "fetch [--out FILE] [--offset N]",
		Short: "Copy the audit log of the broker that answers",
		Long: `fetch copies the audit log of one broker (the first that answers: pass a
single --addr to choose) to --out or stdout, from --offset bytes on. It
needs the admin or auditor role. Each broker keeps its own log.`,
		Example: `  hsmctl audit fetch --addr node1.example:7400 --out node1-audit.log && hsmctl audit verify node1-audit.log`,
		Args:    noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			var w io.Writer = a.stdout
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			next := offset
			for {
				resp, err := c.Access.ReadAuditLog(a.ctx, &pb.ReadAuditLogRequest{Offset: next})
				if err != nil {
					return err
				}
				if _, err := w.Write(resp.GetData()); err != nil {
					return err
				}
				if len(resp.GetData()) == 0 || resp.GetNextOffset() >= resp.GetSize() {
					if out != "" && out != "-" {
						fmt.Fprintf(a.stderr, "%d bytes of %s's audit log written to %s\n", resp.GetNextOffset()-offset, resp.GetNodeId(), out)
					}
					return nil
				}
				next = resp.GetNextOffset()
			}
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "write to FILE (0600) instead of stdout")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start this many bytes into the log")
	return cmd
}
