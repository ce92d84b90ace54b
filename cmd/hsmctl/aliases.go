package main

import (
	"fmt"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

func (a *app) aliasesCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "aliases",
		Short: "Create, move and delete aliases",
		Long: `Aliases are movable names, alias/NAME, each pointing at one key. Names under
alias/aws/ are reserved. A key may have many aliases.`,
	},
		a.aliasesListCommand(),
		a.aliasesCreateCommand(),
		a.aliasesUpdateCommand(),
		a.aliasesDeleteCommand(),
	)
}

func (a *app) aliasesListCommand() *cobra.Command {
	var keyID, pageToken string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--key KEY] [--limit N] [--all]",
		Short: "List aliases, ordered by name",
		Example: `  hsmctl aliases list
  hsmctl aliases list --key 1234abcd-12ab-34cd-56ef-1234567890ab -o json`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkPageLimit(limit); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			aliases, token, err := collectPages(pageToken, all, func(tok string) ([]*pb.Alias, string, error) {
				resp, err := c.Keys.ListAliases(a.ctx, &pb.ListAliasesRequest{KeyId: keyID, PageSize: int32(limit), PageToken: tok})
				return resp.GetAliases(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if a.json() {
				out := struct {
					Aliases       []aliasJSON `json:"aliases"`
					NextPageToken string      `json:"nextPageToken,omitempty"`
				}{Aliases: []aliasJSON{}, NextPageToken: token}
				for _, al := range aliases {
					out.Aliases = append(out.Aliases, aliasToJSON(al))
				}
				return printJSON(a.stdout, out)
			}
			var rows [][]string
			for _, al := range aliases {
				rows = append(rows, []string{al.GetAliasName(), al.GetTargetKeyId(), timeString(al.GetUpdateTime())})
			}
			if err := table(a.stdout, []string{"ALIAS", "TARGET KEY ID", "UPDATED"}, rows); err != nil {
				return err
			}
			if token != "" {
				fmt.Fprintf(a.stderr, "More aliases follow: add --all, or --page-token %s\n", token)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&keyID, "key", "", "only the aliases of this key (key id or key ARN)")
	pageLimitFlag(cmd, &limit, "aliases")
	cmd.Flags().BoolVar(&all, "all", false, "list every alias, following every page")
	cmd.Flags().StringVar(&pageToken, "page-token", "", "continue a listing from a previous nextPageToken")
	return cmd
}

func (a *app) aliasesCreateCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "create alias/NAME KEY",
		Short:   "Make a new alias for a key",
		Example: "  hsmctl aliases create alias/payments-v2 1234abcd-12ab-34cd-56ef-1234567890ab",
		Args:    exactArgs("alias/NAME", "KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.CreateAlias(a.ctx, &pb.CreateAliasRequest{AliasName: args[0], TargetKeyId: args[1]})
			if err != nil {
				return err
			}
			return a.printAlias(resp.GetAlias())
		}),
	}
}

func (a *app) aliasesUpdateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "update alias/NAME KEY",
		Short: "Point an alias at another key",
		Long: `Point an existing alias at another key, which must have the same key spec
and key usage, so that callers using the alias keep working.`,
		Example: "  hsmctl aliases update alias/payments 5678efab-12ab-34cd-56ef-1234567890ab",
		Args:    exactArgs("alias/NAME", "KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.UpdateAlias(a.ctx, &pb.UpdateAliasRequest{AliasName: args[0], TargetKeyId: args[1]})
			if err != nil {
				return err
			}
			return a.printAlias(resp.GetAlias())
		}),
	}
}

func (a *app) aliasesDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete alias/NAME",
		Short:   "Remove an alias; its key is not affected",
		Example: "  hsmctl aliases delete alias/payments-old",
		Args:    exactArgs("alias/NAME"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.DeleteAlias(a.ctx, &pb.DeleteAliasRequest{AliasName: args[0]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"aliasName": args[0], "deleted": true}, "Alias %s deleted", args[0])
		}),
	}
}
