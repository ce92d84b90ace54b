package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
)

func (a *app) certsCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "certs",
		Short: "Issue client certificates from the cluster CA (offline)",
		Long: `A client certificate names a principal (its common name) and a default role
(its organizational unit: admin, user or auditor). The brokers accept any
certificate of the cluster CA; the role the cluster records for a principal
(hsmctl principals) overrides the certificate's.

certs works offline, against the CA certificate and key files, on the
machine that keeps them; it never contacts a broker. Production
deployments may bring their own CA instead.`,
	}, a.certsIssueCommand())
}

func (a *app) certsIssueCommand() *cobra.Command {
	var principal, role, outDir, caCert, caKey string
	var ttl time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "issue --principal NAME --role ROLE --out-dir DIR [--ca-cert FILE] [--ca-key FILE]",
		Short: "Issue a client certificate for a principal",
		Long: fmt.Sprintf(`issue writes DIR/NAME.pem (the certificate, mode %04o) and DIR/NAME-key.pem
(its private key, mode %04o), signed by the CA in --ca-cert and --ca-key.
Existing files are kept unless --force, which replaces them (a symlink is
replaced, not followed).

--ca-cert defaults to $HSMBROKER_CA and --ca-key to $HSMBROKER_CA_KEY; the
dev.env of 'hsmbrokerd dev' sets both to its dev CA.`, pki.CertFileMode, pki.KeyFileMode),
		Example: `  source ./.hsmbroker-dev/dev.env
  hsmctl certs issue --principal alice --role user --out-dir ./certs
  HSMBROKER_CERT=./certs/alice.pem HSMBROKER_KEY=./certs/alice-key.pem hsmctl whoami

  # Another CA, named explicitly:
  hsmctl certs issue --principal bob --role auditor --out-dir ./certs \
    --ca-cert /etc/hsmbroker/ca.pem --ca-key /etc/hsmbroker/ca-key.pem`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if caCert == "" {
				caCert = os.Getenv("HSMBROKER_CA")
			}
			if caKey == "" {
				caKey = os.Getenv("HSMBROKER_CA_KEY")
			}
			switch {
			case principal == "" || role == "" || outDir == "":
				return usageErr("--principal, --role and --out-dir are required")
			case caCert == "" || caKey == "":
				return usageErr("--ca-cert and --ca-key are required (default $HSMBROKER_CA and $HSMBROKER_CA_KEY, which 'hsmbrokerd dev' writes to dev.env)")
			case !authz.Role(role).Issuable():
				return usageErr(fmt.Sprintf("invalid --role %q: valid values are admin, user, auditor", role))
			case strings.ContainsAny(principal, `/\`) || principal == "." || principal == "..":
				return usageErr(fmt.Sprintf("--principal %q cannot name a file in --out-dir", principal))
			case ttl <= 0:
				return usageErr("--ttl must be positive")
			}
			ca, err := pki.LoadCA(caCert, caKey)
			if err != nil {
				return err
			}
			certFile := filepath.Join(outDir, principal+".pem")
			keyFile := filepath.Join(outDir, principal+"-key.pem")
			for _, f := range []string{certFile, keyFile} {
				if err := checkOutPath(f, force); err != nil {
					return err
				}
			}
			iss, err := ca.IssueClient(principal, authz.Role(role), ttl)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return err
			}
			if err := iss.Save(certFile, keyFile); err != nil {
				return err
			}
			expires := iss.Cert.NotAfter.UTC().Format(time.RFC3339)
			if a.json() {
				return printJSON(a.stdout, map[string]string{"principal": principal, "role": role,
					"cert": certFile, "key": keyFile, "expires": expires})
			}
			return fields(a.stdout, "Principal", principal, "Role", role, "Certificate", certFile, "Key", keyFile, "Expires", expires)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&principal, "principal", "", "the principal (certificate common name)")
	f.StringVar(&role, "role", "", "its default role: admin, user or auditor")
	f.StringVar(&outDir, "out-dir", "", "directory for NAME.pem and NAME-key.pem (created 0700)")
	f.StringVar(&caCert, "ca-cert", "", "the CA certificate, PEM (default $HSMBROKER_CA)")
	f.StringVar(&caKey, "ca-key", "", "the CA private key, PEM (default $HSMBROKER_CA_KEY)")
	f.DurationVar(&ttl, "ttl", pki.DefaultClientTTL, "validity of the certificate")
	f.BoolVar(&force, "force", false, "replace existing files (a symlink is replaced, not followed)")
	return cmd
}
