package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/awskms"
	"github.com/spf13/cobra"
)

// newAccessKeyCommand manages the access keys of the AWS KMS endpoint:
// the JSON file named by kms.credentials_file (or kms.xks.credentials_file).
// Secrets go to files only: never to the terminal, a log or a command line.
func newAccessKeyCommand(stdout io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "access-key",
		Short: "Manage the access keys of the AWS KMS endpoint (kms.credentials_file)",
		Long: `access-key creates, lists and deletes the access keys in a credentials file
of the AWS KMS endpoint (kms.credentials_file), or the external key store
proxy credentials (kms.xks.credentials_file). The file is JSON, mode 0600.

Every node reads its own copy: after a change, copy the file to every node
(owner hsmbroker, mode 0600) and reload them (systemctl reload hsmbrokerd,
or SIGHUP). Secrets are written to files only, never printed.`,
		Example: `  hsmbrokerd access-key create --file /etc/hsmbroker/kms-credentials.json --principal alice --out alice.env
  hsmbrokerd access-key list --file /etc/hsmbroker/kms-credentials.json
  hsmbrokerd access-key delete --file /etc/hsmbroker/kms-credentials.json AKIAIOSFODNN7EXAMPLE`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&file, "file", "", "the credentials file (required)")
	_ = cmd.MarkPersistentFlagRequired("file")

	var principal, role, out string
	var xks bool
	create := &cobra.Command{
		Use:   "create --file FILE --principal NAME [--role ROLE] [--out ENVFILE] [--xks]",
		Short: "Add a new access key for a principal",
		Long: `create adds a new access key for --principal to the file, making the file
(0600) if there is none. The key gives its principal --role (admin, user or
auditor) unless the cluster records another role for the principal
(hsmctl principals). --out writes the key as AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY exports to ENVFILE (0600, which must not exist), to
hand to its user; without it the secret is in the credentials file only.
--xks makes a credential in the form AWS KMS takes for an external key store
proxy (give it to create-custom-key-store) in kms.xks.credentials_file; it
carries no role, and the AWS KMS endpoint refuses it for its own requests.
A file holds one kind of key: create refuses an --xks credential in a file
of TrentService keys, and the reverse. With --xks, --out writes
XKS_PROXY_ACCESS_KEY_ID and XKS_PROXY_SECRET_ACCESS_KEY, the AccessKeyId and
RawSecretAccessKey of create-custom-key-store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := authz.ParseRole(role)
			if err != nil {
				return usage(fmt.Errorf("--role %q: want admin, user or auditor", role))
			}
			if problem := authz.NewPrincipalProblem(principal); problem != "" {
				return usage(fmt.Errorf("--principal %q: %s", principal, problem))
			}
			keys, err := readAccessKeys(file)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := sameKind(file, keys, xks); err != nil {
				return err
			}
			gen := awskms.GenerateAccessKey
			if xks {
				gen = awskms.GenerateXKSAccessKey
			}
			k, err := gen(principal)
			if err != nil {
				return err
			}
			if !xks {
				k.Role = r
			}
			if out != "" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("--out: %w", err)
				}
				idVar, secretVar := "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
				if xks {
					idVar, secretVar = "XKS_PROXY_ACCESS_KEY_ID", "XKS_PROXY_SECRET_ACCESS_KEY"
				}
				_, err = fmt.Fprintf(f, "export %s=%s\nexport %s=%s\n", idVar, shellQuote(k.ID), secretVar, shellQuote(k.Secret))
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(out)
					return fmt.Errorf("--out: %w", err)
				}
			}
			if err := awskms.WriteCredentialsFile(file, append(keys, k)); err != nil {
				if out != "" {
					os.Remove(out)
				}
				return err
			}
			fmt.Fprintf(stdout, "Access key %s of principal %s (%s) added to %s.\n", k.ID, k.Principal, keyKind(k), file)
			if out != "" {
				fmt.Fprintf(stdout, "Its id and secret are in %s (mode 0600).\n", out)
			}
			fmt.Fprintln(stdout, "Copy the file to every node and reload them (systemctl reload hsmbrokerd).")
			return nil
		},
	}
	create.Flags().StringVar(&principal, "principal", "", "the principal the key stands for (required)")
	create.Flags().StringVar(&role, "role", string(authz.RoleUser), "the role the key gives its principal: admin, user or auditor")
	create.Flags().StringVar(&out, "out", "", "also write the key's exports to this new file (0600)")
	create.Flags().BoolVar(&xks, "xks", false, "make an external key store proxy credential")
	_ = create.MarkFlagRequired("principal")

	list := &cobra.Command{
		Use:   "list --file FILE",
		Short: "List the access keys (without their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := readAccessKeys(file)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCESS KEY ID\tPRINCIPAL\tKIND")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Principal, keyKind(k))
			}
			return tw.Flush()
		},
	}

	del := &cobra.Command{
		Use:   "delete --file FILE ACCESS_KEY_ID",
		Short: "Delete an access key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := readAccessKeys(file)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(keys, func(k awskms.AccessKey) bool { return k.ID == args[0] })
			if i < 0 {
				return fmt.Errorf("%s holds no access key %s", file, args[0])
			}
			if err := awskms.WriteCredentialsFile(file, slices.Delete(keys, i, i+1)); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "Access key %s deleted from %s. Copy the file to every node and reload them.\n", args[0], file)
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// keyKind describes what a key is for: its role on the AWS KMS endpoint,
// or an XKS proxy credential.
func keyKind(k awskms.AccessKey) string {
	if k.XKS {
		return "XKS proxy credential, no role"
	}
	return "role " + firstSet(string(k.Role), string(authz.RoleUser))
}

// sameKind refuses to add a key of one kind (xks or not) to a file that
// holds keys of the other: the two files are read by different APIs. A key
// with a role is an endpoint key; one marked xks a proxy credential; one
// with neither (made before keys carried either) could be both.
func sameKind(file string, keys []awskms.AccessKey, xks bool) error {
	for _, k := range keys {
		switch {
		case k.XKS && !xks:
			return fmt.Errorf("%s holds XKS proxy credentials (kms.xks.credentials_file); access keys of the AWS KMS endpoint go in kms.credentials_file", file)
		case k.Role != "" && xks:
			return fmt.Errorf("%s holds access keys of the AWS KMS endpoint (kms.credentials_file); give --xks a file of its own, kms.xks.credentials_file", file)
		}
	}
	return nil
}
