package main

import (
	"fmt"
	"strings"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"github.com/spf13/cobra"
)

func (a *app) tdeCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "tde",
		Short: "Manage database TDE keys and the tokens that read them (admin)",
		Long: `tde manages the keys databases read for transparent data encryption through
the broker's Vault KV version 2 endpoint (MariaDB's hashicorp_key_management
plugin), and the tokens they read them with.

A mount ("tde" by default) is bound to a symmetric KMS key (alias/<mount>
unless --kms-key says otherwise) when its first key is made. Each version of
a TDE key is generated in an HSM and stored only wrapped under that KMS key.
MariaDB names its keys by number: 1 (also the redo log's), 2, ...

A token maps to a principal, as an AWS access key does; the principal needs
kms:Decrypt on the mount's KMS key, by its key policy or a grant. The token
is printed once, when it is issued: the cluster keeps only its hash.`,
		Example: `  hsmctl tde create 1
  hsmctl tde create 2 --bytes 32
  hsmctl tde rotate 1
  hsmctl tde list -o json
  hsmctl tde token issue --principal mariadb --out mariadb.token
  # grants create takes a key id or key ARN, not an alias:
  hsmctl grants create --key "$(hsmctl keys describe alias/tde -o json | jq -r .keyId)" \
      --grantee mariadb --operations Decrypt
  hsmctl tde token revoke 1f2e3d4c5b6a7988`,
	}, a.tdeCreateCommand(), a.tdeRotateCommand(), a.tdeRetireCommand(), a.tdeListCommand(), a.tdeTokenCommand())
}

func (a *app) tdeCreateCommand() *cobra.Command {
	var mount, kmsKey string
	var size uint32
	cmd := &cobra.Command{
		Use:   "create NAME [--mount tde] [--bytes 32] [--kms-key KEY]",
		Short: "Make a TDE key, version 1",
		Long: `create makes TDE key NAME (1 to 128 letters, digits, '.', '_' or '-';
MariaDB uses 1, 2, ...) with version 1: --bytes (16, 24 or 32; default 32)
of key material generated in an HSM and stored wrapped under the mount's KMS
key. --kms-key binds a new
mount to a KMS key other than alias/<mount>.`,
		Example: `  hsmctl keys create --alias alias/tde
  hsmctl tde create 1
  hsmctl tde create 2 --bytes 16 --mount tde`,
		Args: exactArgs("NAME"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if size != 16 && size != 24 && size != 32 {
				return usageErr(fmt.Sprintf("invalid --bytes %d: want 16, 24 or 32 (AES-128, -192 or -256)", size))
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.TDE.CreateKey(a.ctx, &pb.TDEServiceCreateKeyRequest{Mount: mount, Name: args[0], Bytes: size, KmsKeyId: kmsKey})
			if err != nil {
				return err
			}
			return a.printTDEKeys([]*pb.TDEKey{resp.GetKey()})
		}),
	}
	cmd.Flags().StringVar(&mount, "mount", "tde", "the mount the key is in")
	cmd.Flags().Uint32Var(&size, "bytes", 32, "size of the key material: 16, 24 or 32")
	cmd.Flags().StringVar(&kmsKey, "kms-key", "", "KMS key that wraps a new mount's keys (default alias/<mount>)")
	return cmd
}

func (a *app) tdeRotateCommand() *cobra.Command {
	var mount string
	cmd := &cobra.Command{
		Use:   "rotate NAME [--mount tde]",
		Short: "Add a version to a TDE key; it becomes the latest",
		Long: `rotate adds the next version of TDE key NAME. The database sees it once its
key cache expires (MariaDB: hashicorp-key-management-cache-version-timeout)
and re-encrypts with it as its key rotation settings say. Older versions
stay readable until retired.`,
		Example: `  hsmctl tde rotate 1`,
		Args:    exactArgs("NAME"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.TDE.RotateKey(a.ctx, &pb.TDEServiceRotateKeyRequest{Mount: mount, Name: args[0]})
			if err != nil {
				return err
			}
			return a.printTDEKeys([]*pb.TDEKey{resp.GetKey()})
		}),
	}
	cmd.Flags().StringVar(&mount, "mount", "tde", "the mount the key is in")
	return cmd
}

func (a *app) tdeRetireCommand() *cobra.Command {
	var mount string
	var version uint32
	cmd := &cobra.Command{
		Use:   "retire NAME --version N [--mount tde]",
		Short: "Stop serving an old version of a TDE key",
		Long: `retire stops serving version N of TDE key NAME; the latest version cannot be
retired. It cannot be undone (only a restore of a cluster backup brings the
version back), and data still encrypted with the version can no longer be
read. Retire a version only once no data is encrypted with it any more.
MariaDB: every tablespace of the key shows a MIN_KEY_VERSION above N in
information_schema.innodb_tablespaces_encryption (CURRENT_KEY_VERSION is
what new writes use, not what the pages hold); and leave key 1's versions
alone, since the redo log keeps the one it was created with
(docs/TDE.md, step 6).`,
		Example: `  # MariaDB: no tablespace of key 2 still holds version 1 (prints 0)?
  mariadb -Ne "SELECT COUNT(*) FROM information_schema.innodb_tablespaces_encryption
               WHERE CURRENT_KEY_ID=2 AND MIN_KEY_VERSION<=1"
  hsmctl tde retire 2 --version 1`,
		Args: exactArgs("NAME"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if version == 0 {
				return usageErr("--version is required")
			}
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.TDE.RetireVersion(a.ctx, &pb.TDEServiceRetireVersionRequest{Mount: mount, Name: args[0], Version: version})
			if err != nil {
				return err
			}
			return a.printTDEKeys([]*pb.TDEKey{resp.GetKey()})
		}),
	}
	cmd.Flags().StringVar(&mount, "mount", "tde", "the mount the key is in")
	cmd.Flags().Uint32Var(&version, "version", 0, "the version to retire")
	return cmd
}

func (a *app) tdeListCommand() *cobra.Command {
	var mount string
	cmd := &cobra.Command{
		Use:   "list [--mount M]",
		Short: "List TDE keys: names, versions and the KMS key that wraps them",
		Example: `  hsmctl tde list
  hsmctl tde list -o json`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.TDE.ListKeys(a.ctx, &pb.TDEServiceListKeysRequest{Mount: mount})
			if err != nil {
				return err
			}
			return a.printTDEKeys(resp.GetKeys())
		}),
	}
	cmd.Flags().StringVar(&mount, "mount", "", "only this mount's keys (default: every mount)")
	return cmd
}

type tdeVersionJSON struct {
	Version uint32 `json:"version"`
	Created string `json:"created"`
	Retired string `json:"retired,omitempty"`
}

type tdeKeyJSON struct {
	Mount          string           `json:"mount"`
	Name           string           `json:"name"`
	Bytes          uint32           `json:"bytes"`
	KMSKeyID       string           `json:"kmsKeyId"`
	CurrentVersion uint32           `json:"currentVersion"`
	Versions       []tdeVersionJSON `json:"versions"`
	Creator        string           `json:"creator"`
	Created        string           `json:"created"`
}

func (a *app) printTDEKeys(ks []*pb.TDEKey) error {
	out := make([]tdeKeyJSON, 0, len(ks))
	for _, k := range ks {
		j := tdeKeyJSON{Mount: k.GetMount(), Name: k.GetName(), Bytes: k.GetBytes(), KMSKeyID: k.GetKmsKeyId(),
			CurrentVersion: k.GetCurrentVersion(), Creator: k.GetCreator(), Created: timeString(k.GetCreateTime()),
			Versions: []tdeVersionJSON{}}
		for _, v := range k.GetVersions() {
			vj := tdeVersionJSON{Version: v.GetVersion(), Created: timeString(v.GetCreateTime())}
			if v.GetRetireTime() != nil {
				vj.Retired = timeString(v.GetRetireTime())
			}
			j.Versions = append(j.Versions, vj)
		}
		out = append(out, j)
	}
	if a.json() {
		return printJSON(a.stdout, map[string]any{"keys": out})
	}
	rows := make([][]string, 0, len(out))
	for _, k := range out {
		var retired []string
		for _, v := range k.Versions {
			if v.Retired != "" {
				retired = append(retired, fmt.Sprint(v.Version))
			}
		}
		r := "-"
		if len(retired) > 0 {
			r = strings.Join(retired, ",")
		}
		rows = append(rows, []string{k.Mount, k.Name, fmt.Sprint(k.CurrentVersion), fmt.Sprint(k.Bytes), r, k.KMSKeyID})
	}
	return table(a.stdout, []string{"MOUNT", "NAME", "VERSION", "BYTES", "RETIRED", "KMS KEY"}, rows)
}

func (a *app) tdeTokenCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "token",
		Short: "Issue, list and revoke tokens of the TDE key endpoint",
		Long: `A token authenticates a database to the TDE key endpoint (Vault's
X-Vault-Token; MariaDB: hashicorp-key-management-token or VAULT_TOKEN) as a
principal. The cluster stores only its SHA-256 hash; issue prints it once.
Tokens are named by their accessor in listings and revocations.`,
	}, a.tdeTokenIssueCommand(), a.tdeTokenListCommand(), a.tdeTokenRevokeCommand())
}

func (a *app) tdeTokenIssueCommand() *cobra.Command {
	var principal, out string
	var force bool
	cmd := &cobra.Command{
		Use:   "issue --principal P [--out FILE [--force]]",
		Short: "Issue a token for a principal and print it, once",
		Long: `issue makes a token for --principal and prints it on standard output. It
cannot be shown again. --out FILE writes it there (mode 0600) instead of
printing it, so that it never passes through a terminal or a shell
variable; an existing FILE is refused unless --force. The principal needs
kms:Decrypt on the mount's KMS key.

With -o json: {"token", "accessor", "principal"}, or {"file", "accessor",
"principal"} with --out.`,
		Example: `  hsmctl tde token issue --principal mariadb --out /etc/mysql/mariadb.token
  hsmctl tde token issue --principal mariadb --out mariadb.token -o json | jq -r .accessor`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if principal == "" {
				return usageErr("--principal is required")
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
			resp, err := c.TDE.IssueToken(a.ctx, &pb.TDEServiceIssueTokenRequest{Principal: principal})
			if err != nil {
				return err
			}
			accessor, who := resp.GetInfo().GetAccessor(), resp.GetInfo().GetPrincipal()
			if out == "" {
				if a.json() {
					return printJSON(a.stdout, map[string]string{"token": resp.GetToken(), "accessor": accessor, "principal": who})
				}
				_, err = fmt.Fprintln(a.stdout, resp.GetToken())
				return err
			}
			if err := writeOutFile(out, []byte(resp.GetToken()+"\n"), privateFileMode, force); err != nil {
				return fmt.Errorf("write the token (revoke it: hsmctl tde token revoke %s): %w", accessor, err)
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"file": out, "accessor": accessor, "principal": who})
			}
			_, err = fmt.Fprintf(a.stdout, "Token for %s written to %s (mode 0600); its accessor is %s.\n", who, out, accessor)
			return err
		}),
	}
	cmd.Flags().StringVar(&principal, "principal", "", "the principal the token authenticates (required)")
	cmd.Flags().StringVar(&out, "out", "", "write the token to this new file (mode 0600) instead of standard output; an existing file is refused unless --force")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it exists (a symlink is replaced, not followed)")
	return cmd
}

func (a *app) tdeTokenListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tokens by accessor and principal (never the tokens)",
		Example: `  hsmctl tde token list
  hsmctl tde token list -o json | jq -r '.tokens[] | select(.principal == "mariadb") | .accessor'`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			resp, err := c.TDE.ListTokens(a.ctx, &pb.TDEServiceListTokensRequest{})
			if err != nil {
				return err
			}
			type row struct {
				Accessor  string `json:"accessor"`
				Principal string `json:"principal"`
				Creator   string `json:"creator"`
				Created   string `json:"created"`
			}
			out := []row{}
			var rows [][]string
			for _, t := range resp.GetTokens() {
				r := row{t.GetAccessor(), t.GetPrincipal(), t.GetCreator(), timeString(t.GetCreateTime())}
				out = append(out, r)
				rows = append(rows, []string{r.Accessor, r.Principal, r.Creator, r.Created})
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"tokens": out})
			}
			return table(a.stdout, []string{"ACCESSOR", "PRINCIPAL", "ISSUED BY", "ISSUED"}, rows)
		}),
	}
}

func (a *app) tdeTokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ACCESSOR",
		Short: "Revoke a token; reads with it are refused at once",
		Example: `  hsmctl tde token list
  hsmctl tde token revoke 1f2e3d4c5b6a7988`,
		Args: exactArgs("ACCESSOR"),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			if _, err := c.TDE.RevokeToken(a.ctx, &pb.TDEServiceRevokeTokenRequest{Accessor: args[0]}); err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"revoked": args[0]})
			}
			_, err = fmt.Fprintf(a.stdout, "revoked %s\n", args[0])
			return err
		}),
	}
}
