package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

func (a *app) keysCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "keys",
		Short: "Create and manage keys",
		Long: `Create and manage keys: their state, versions, tags and deletion.

KEY is a key id or key ARN for commands that change a key; 'describe',
'versions' and 'tags' also take an alias name (alias/NAME) or alias ARN.`,
	},
		a.keysCreateCommand(),
		a.keysListCommand(),
		a.keysDescribeCommand(),
		a.keysStateCommand("enable", "Make a disabled key usable again", func(id string) error {
			_, err := a.client.Keys.EnableKey(a.ctx, &pb.EnableKeyRequest{KeyId: id})
			return err
		}),
		a.keysStateCommand("disable", "Make a key unusable for cryptographic operations", func(id string) error {
			_, err := a.client.Keys.DisableKey(a.ctx, &pb.DisableKeyRequest{KeyId: id})
			return err
		}),
		a.keysRotateCommand(),
		a.keysVersionsCommand(),
		a.keysScheduleDeletionCommand(),
		a.keysCancelDeletionCommand(),
		a.keysUpdateDescriptionCommand(),
		a.keysTagCommand(),
		a.keysUntagCommand(),
		a.keysTagsCommand(),
	)
}

func (a *app) keysCreateCommand() *cobra.Command {
	var spec, usage, alias, description string
	var tags []string
	cmd := &cobra.Command{
		Use:   "create --alias alias/NAME [--spec SPEC] [--usage USAGE] [--description TEXT] [--tag KEY=VALUE]...",
		Short: "Create a key, generated inside the HSM",
		Long: `Create a key. Its material is generated inside the leader's HSM and never
leaves HSMs in plaintext. Every key gets an alias at creation.

--spec is the kind of key (default SYMMETRIC_DEFAULT, AES-256-GCM). --usage
follows from the spec for SYMMETRIC_DEFAULT (ENCRYPT_DECRYPT), ECC
(SIGN_VERIFY) and HMAC (GENERATE_VERIFY_MAC) keys; RSA keys are either
ENCRYPT_DECRYPT or SIGN_VERIFY, so give --usage for them.`,
		Example: `  hsmctl keys create --alias alias/payments
  hsmctl keys create --alias alias/release-signing --spec ECC_NIST_P256 --description "release signatures"
  hsmctl keys create --alias alias/rsa --spec RSA_2048 --usage ENCRYPT_DECRYPT
  hsmctl keys create --alias alias/rsa-sign --spec RSA_3072 --usage SIGN_VERIFY --tag team=platform --tag env=prod
  hsmctl keys create --alias alias/webhooks --spec HMAC_256 -o json | jq -r .keyId`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			req := &pb.CreateKeyRequest{AliasName: alias, Description: description}
			if alias == "" {
				return usageErr("--alias is required: every key is created with an alias (alias/NAME)")
			}
			if spec != "" {
				v, err := keySpecs.parse("--spec", spec)
				if err != nil {
					return err
				}
				req.KeySpec = pb.KeySpec(v)
			}
			if usage != "" {
				v, err := keyUsages.parse("--usage", usage)
				if err != nil {
					return err
				}
				req.KeyUsage = pb.KeyUsage(v)
			}
			var err error
			if req.Tags, err = parsePairs("--tag", tags); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.CreateKey(a.ctx, req)
			if err != nil {
				return err
			}
			return a.printKey(resp.GetKeyMetadata())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&alias, "alias", "", "the key's alias, alias/NAME (required)")
	f.StringVar(&spec, "spec", "", "key spec: "+enumHelp(keySpecs)+" (default SYMMETRIC_DEFAULT)")
	f.StringVar(&usage, "usage", "", "key usage: "+enumHelp(keyUsages)+" (default from --spec)")
	f.StringVar(&description, "description", "", "free text describing the key")
	f.StringArrayVar(&tags, "tag", nil, "a tag KEY=VALUE; repeat for more")
	return cmd
}

func (a *app) keysListCommand() *cobra.Command {
	var limit int
	var all bool
	var pageToken string
	cmd := &cobra.Command{
		Use:   "list [--limit N] [--all]",
		Short: "List keys, ordered by key id",
		Long: `List keys in every state, ordered by key id: one page of --limit keys
(default 100), or every key with --all. When more keys follow, text output
says how to get them and JSON output has a nextPageToken for --page-token.`,
		Example: `  hsmctl keys list
  hsmctl keys list --all -o json | jq -r '.keys[] | select(.keyState == "Enabled") | .keyId'`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkPageLimit(limit); err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			keys, token, err := collectPages(pageToken, all, func(tok string) ([]*pb.KeyMetadata, string, error) {
				resp, err := c.Keys.ListKeys(a.ctx, &pb.ListKeysRequest{PageSize: int32(limit), PageToken: tok})
				return resp.GetKeys(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if a.json() {
				out := struct {
					Keys          []keyJSON `json:"keys"`
					NextPageToken string    `json:"nextPageToken,omitempty"`
				}{Keys: []keyJSON{}, NextPageToken: token}
				for _, k := range keys {
					out.Keys = append(out.Keys, keyToJSON(k))
				}
				return printJSON(a.stdout, out)
			}
			var rows [][]string
			for _, m := range keys {
				k := keyToJSON(m)
				rows = append(rows, []string{k.KeyID, k.KeyState, k.KeySpec, k.KeyUsage, joinOrDash(k.Aliases)})
			}
			if err := table(a.stdout, []string{"KEY ID", "STATE", "SPEC", "USAGE", "ALIASES"}, rows); err != nil {
				return err
			}
			if token != "" {
				fmt.Fprintf(a.stderr, "More keys follow: add --all, or --page-token %s\n", token)
			}
			return nil
		}),
	}
	pageLimitFlag(cmd, &limit, "keys")
	cmd.Flags().BoolVar(&all, "all", false, "list every key, following every page")
	cmd.Flags().StringVar(&pageToken, "page-token", "", "continue a listing from a previous nextPageToken")
	return cmd
}

func joinOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func (a *app) keysDescribeCommand() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "describe KEY",
		Short: "Show a key's metadata",
		Example: `  hsmctl keys describe alias/payments
  hsmctl keys describe 1234abcd-12ab-34cd-56ef-1234567890ab --consistent -o json`,
		Args: exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.DescribeKey(a.ctx, &pb.DescribeKeyRequest{KeyId: args[0], ConsistentRead: consistent})
			if err != nil {
				return err
			}
			return a.printKey(resp.GetKeyMetadata())
		}),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "read through the Raft leader, reflecting every acknowledged change")
	return cmd
}

// keysStateCommand makes `keys enable` and `keys disable`.
func (a *app) keysStateCommand(verb, short string, call func(id string) error) *cobra.Command {
	state := map[string]string{"enable": "Enabled", "disable": "Disabled"}[verb]
	return &cobra.Command{
		Use:     verb + " KEY",
		Short:   short,
		Example: "  hsmctl keys " + verb + " 1234abcd-12ab-34cd-56ef-1234567890ab",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if _, err := a.conn(); err != nil {
				return err
			}
			if err := call(args[0]); err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"keyId": args[0], "keyState": state})
			}
			_, err := fmt.Fprintf(a.stdout, "Key %s is %s\n", args[0], state)
			return err
		}),
	}
}

func (a *app) keysRotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate KEY",
		Short: "Give a symmetric key a new current version",
		Long: `Generate a new version of a SYMMETRIC_DEFAULT key inside the HSM and make it
current. Older versions keep decrypting what was encrypted under them.`,
		Example: "  hsmctl keys rotate 1234abcd-12ab-34cd-56ef-1234567890ab",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.RotateKey(a.ctx, &pb.RotateKeyRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			return a.confirm(map[string]any{"keyId": resp.GetKeyId(), "version": resp.GetVersion()}, "Key %s rotated: version %d is current", resp.GetKeyId(), resp.GetVersion())
		}),
	}
}

func (a *app) keysVersionsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "versions KEY",
		Short:   "List a key's versions, oldest first",
		Example: "  hsmctl keys versions alias/payments",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			var versions []*pb.KeyVersion
			token := ""
			for {
				resp, err := c.Keys.ListKeyVersions(a.ctx, &pb.ListKeyVersionsRequest{KeyId: args[0], PageToken: token})
				if err != nil {
					return err
				}
				versions = append(versions, resp.GetVersions()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			type versionJSON struct {
				Version    uint32 `json:"version"`
				CreateTime string `json:"createTime"`
				Current    bool   `json:"current"`
			}
			out := []versionJSON{}
			var rows [][]string
			for _, v := range versions {
				out = append(out, versionJSON{v.GetVersion(), timeString(v.GetCreateTime()), v.GetCurrent()})
				cur := ""
				if v.GetCurrent() {
					cur = "*"
				}
				rows = append(rows, []string{strconv.FormatUint(uint64(v.GetVersion()), 10), timeString(v.GetCreateTime()), cur})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"keyId": args[0], "versions": out})
			}
			return table(a.stdout, []string{"VERSION", "CREATED", "CURRENT"}, rows)
		}),
	}
}

func (a *app) keysScheduleDeletionCommand() *cobra.Command {
	var days int
	cmd := &cobra.Command{
		Use:   "schedule-deletion KEY [--days N]",
		Short: "Make a key unusable now and delete it after a waiting period",
		Long: `Make a key unusable at once and delete it, with all its versions and
aliases, after --days days (7 to 30, default 30). Deletion cannot be undone:
whatever was encrypted under the key can never be decrypted again. Until the
date, 'hsmctl keys cancel-deletion' stops it.`,
		Example: "  hsmctl keys schedule-deletion 1234abcd-12ab-34cd-56ef-1234567890ab --days 7",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("days") && (days < 7 || days > 30) {
				return usageErr("--days must be 7 to 30")
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.ScheduleKeyDeletion(a.ctx, &pb.ScheduleKeyDeletionRequest{KeyId: args[0], PendingWindowDays: uint32(days)})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{
					"keyId": resp.GetKeyId(), "keyState": keyStateName(resp.GetKeyState()),
					"deletionDate": timeString(resp.GetDeletionDate()), "pendingWindowDays": resp.GetPendingWindowDays(),
				})
			}
			_, err = fmt.Fprintf(a.stdout, "Key %s is %s and will be deleted at %s (in %d days)\n",
				resp.GetKeyId(), keyStateName(resp.GetKeyState()), timeString(resp.GetDeletionDate()), resp.GetPendingWindowDays())
			return err
		}),
	}
	cmd.Flags().IntVar(&days, "days", 0, "waiting period in days, 7 to 30 (default 30)")
	return cmd
}

func (a *app) keysCancelDeletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "cancel-deletion KEY",
		Short:   "Stop a scheduled deletion; the key returns disabled",
		Example: "  hsmctl keys cancel-deletion 1234abcd-12ab-34cd-56ef-1234567890ab && hsmctl keys enable 1234abcd-12ab-34cd-56ef-1234567890ab",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.CancelKeyDeletion(a.ctx, &pb.CancelKeyDeletionRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"keyId": resp.GetKeyId(), "keyState": keyStateName(resp.GetKeyState())})
			}
			_, err = fmt.Fprintf(a.stdout, "Deletion of key %s cancelled; the key is %s (enable it with 'hsmctl keys enable')\n",
				resp.GetKeyId(), keyStateName(resp.GetKeyState()))
			return err
		}),
	}
}

func (a *app) keysUpdateDescriptionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "update-description KEY DESCRIPTION",
		Short:   "Replace a key's description (empty clears it)",
		Example: `  hsmctl keys update-description 1234abcd-12ab-34cd-56ef-1234567890ab "payments, rotated yearly"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 || args[0] == "" {
				return usageErr(fmt.Sprintf("%s needs 2 arguments (KEY DESCRIPTION), got %d", cmd.CommandPath(), len(args)))
			}
			return nil
		},
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.UpdateKeyDescription(a.ctx, &pb.UpdateKeyDescriptionRequest{KeyId: args[0], Description: args[1]}); err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"keyId": args[0], "description": args[1]})
			}
			_, err = fmt.Fprintf(a.stdout, "Description of key %s updated\n", args[0])
			return err
		}),
	}
}

func (a *app) keysTagCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "tag KEY TAGKEY=VALUE...",
		Short:   "Add tags to a key, replacing the values of tags it has",
		Example: "  hsmctl keys tag 1234abcd-12ab-34cd-56ef-1234567890ab team=platform env=prod",
		Args:    minArgs("KEY", "TAGKEY=VALUE"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			tags, err := parsePairs("tag", args[1:])
			if err != nil {
				return err
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.TagKey(a.ctx, &pb.TagKeyRequest{KeyId: args[0], Tags: tags}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"keyId": args[0], "tagged": tags}, "Key %s tagged: %s", args[0], tagString(tags))
		}),
	}
}

func (a *app) keysUntagCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "untag KEY TAGKEY...",
		Short:   "Remove tags from a key (absent ones are ignored)",
		Example: "  hsmctl keys untag 1234abcd-12ab-34cd-56ef-1234567890ab env",
		Args:    minArgs("KEY", "TAGKEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.Keys.UntagKey(a.ctx, &pb.UntagKeyRequest{KeyId: args[0], TagKeys: args[1:]}); err != nil {
				return err
			}
			return a.confirm(map[string]any{"keyId": args[0], "untagged": args[1:]}, "Key %s untagged: %s", args[0], joinOrDash(args[1:]))
		}),
	}
}

func (a *app) keysTagsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "tags KEY",
		Short:   "List a key's tags",
		Example: "  hsmctl keys tags alias/payments -o json | jq -r .tags.team",
		Args:    exactArgs("KEY"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.Keys.ListKeyTags(a.ctx, &pb.ListKeyTagsRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			tags := resp.GetTags()
			if a.json() {
				if tags == nil {
					tags = map[string]string{}
				}
				return printJSON(a.stdout, map[string]any{"keyId": resp.GetKeyId(), "tags": tags})
			}
			var rows [][]string
			for _, k := range slices.Sorted(maps.Keys(tags)) {
				rows = append(rows, []string{k, tags[k]})
			}
			return table(a.stdout, []string{"KEY", "VALUE"}, rows)
		}),
	}
}
