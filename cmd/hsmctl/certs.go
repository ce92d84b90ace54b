package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/internal/pki"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func (a *app) certsCommand() *cobra.Command {
	return group(&cobra.Command{
		Use:   "certs",
		Short: "Make the cluster CA and issue node and client certificates (offline)",
		Long: `A client certificate names a principal (its common name) and a default role
(its organizational unit: admin, user or auditor). The brokers accept any
certificate of the cluster CA; the role the cluster records for a principal
(hsmctl principals) overrides the certificate's.

A node certificate ('certs node') names the node (common name: its
node_id) and the names and addresses it is reached at, for server and
client authentication, as the nodes' gRPC and Raft links need.

certs works offline, against the CA certificate and key files, on the
machine that keeps them; it never contacts a broker. Production
deployments may bring their own CA instead.`,
	}, a.certsIssueCommand(), a.certsNodeCommand(), a.certsCACommand())
}

// certSaver is what writeCert saves: an issued certificate, or a CA.
type certSaver interface {
	Save(certFile, keyFile string) error
}

// writeCert is the one way certs writes a certificate and its key, to
// DIR/NAME.pem and DIR/NAME-key.pem: existing files are refused unless
// force (checkOutPath), before issue makes anything; DIR is made 0700.
func writeCert(outDir, name string, force bool, issue func() (certSaver, error)) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(outDir, name+".pem"), filepath.Join(outDir, name+"-key.pem")
	for _, f := range []string{certFile, keyFile} {
		if err := checkOutPath(f, force); err != nil {
			return "", "", err
		}
	}
	c, err := issue()
	if err != nil {
		return "", "", certErr(err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", err
	}
	return certFile, keyFile, c.Save(certFile, keyFile)
}

// signing is what certs issue and certs node share: the CA that signs,
// the validity, and where the files go.
type signing struct {
	outDir, caCert, caKey string
	ttl                   time.Duration
	force                 bool
}

// flags adds --out-dir (described by outDirHelp), --ca-cert, --ca-key,
// --ttl (default ttl) and --force.
func (s *signing) flags(f *pflag.FlagSet, outDirHelp string, ttl time.Duration) {
	f.StringVar(&s.outDir, "out-dir", "", outDirHelp)
	f.StringVar(&s.caCert, "ca-cert", "", "the CA certificate, PEM (default $HSMBROKER_CA)")
	f.StringVar(&s.caKey, "ca-key", "", "the CA private key, PEM (default $HSMBROKER_CA_KEY)")
	f.DurationVar(&s.ttl, "ttl", ttl, "validity of the certificate")
	f.BoolVar(&s.force, "force", false, "replace existing files (a symlink is replaced, not followed)")
}

// check checks --ttl and fills --ca-cert and --ca-key from $HSMBROKER_CA
// and $HSMBROKER_CA_KEY.
func (s *signing) check() error {
	if s.ttl <= 0 {
		return usageErr("--ttl must be positive")
	}
	if s.caCert == "" {
		s.caCert = os.Getenv("HSMBROKER_CA")
	}
	if s.caKey == "" {
		s.caKey = os.Getenv("HSMBROKER_CA_KEY")
	}
	if s.caCert == "" || s.caKey == "" {
		return usageErr("--ca-cert and --ca-key are required (default $HSMBROKER_CA and $HSMBROKER_CA_KEY, which 'hsmbrokerd dev' writes to dev.env)")
	}
	return nil
}

// issue loads the CA, has issue sign with it for s.ttl, and writes
// DIR/NAME.pem and DIR/NAME-key.pem (writeCert). It returns the files and
// when the certificate expires.
func (s *signing) issue(name string, issue func(ca *pki.CA, ttl time.Duration) (*pki.Issued, error)) (certFile, keyFile, expires string, err error) {
	ca, err := pki.LoadCA(s.caCert, s.caKey)
	if err != nil {
		return "", "", "", err
	}
	var iss *pki.Issued
	certFile, keyFile, err = writeCert(s.outDir, name, s.force, func() (certSaver, error) {
		var err error
		iss, err = issue(ca, s.ttl)
		return iss, err
	})
	if err != nil {
		return "", "", "", err
	}
	return certFile, keyFile, iss.Cert.NotAfter.UTC().Format(time.RFC3339), nil
}

func (a *app) certsNodeCommand() *cobra.Command {
	var nodeID string
	var hosts []string
	var sg signing
	cmd := &cobra.Command{
		Use:   "node --node-id ID --host NAME|IP... --out-dir DIR [--ca-cert FILE] [--ca-key FILE]",
		Short: "Issue a node certificate (tls.cert and tls.key of 'hsmbrokerd serve')",
		Long: fmt.Sprintf(`node writes DIR/node.pem (mode %04o) and DIR/node-key.pem (mode %04o): a
certificate for node ID (its common name) valid for server and client
authentication, for every --host, signed by the CA in --ca-cert and --ca-key.
Give every name and address peers and clients use to reach the node: those
of grpc_addr (or grpc_advertise) and raft_addr (or raft_advertise). The
files are what the configuration's tls.cert and tls.key name; tls.ca is the
CA certificate. Existing files are kept unless --force.`, pki.CertFileMode, pki.KeyFileMode),
		Example: `  hsmctl certs node --node-id node1 --host node1.example.net --host 10.0.9.1 \
    --out-dir /etc/hsmbroker/tls --ca-cert ca.pem --ca-key ca-key.pem`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if nodeID == "" || sg.outDir == "" || len(hosts) == 0 {
				return usageErr("--node-id, --host and --out-dir are required")
			}
			if err := sg.check(); err != nil {
				return err
			}
			var dns []string
			var ips []net.IP
			for _, h := range hosts {
				switch ip := net.ParseIP(h); {
				case ip != nil:
					ips = append(ips, ip)
				case h != "" && !strings.ContainsAny(h, ":/ "):
					dns = append(dns, h)
				default:
					return usageErr(fmt.Sprintf("invalid --host %q: give a host name or an IP address, without a port", h))
				}
			}
			certFile, keyFile, expires, err := sg.issue("node", func(ca *pki.CA, ttl time.Duration) (*pki.Issued, error) {
				return ca.IssueServer(nodeID, dns, ips, ttl)
			})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]any{"node_id": nodeID, "hosts": hosts, "cert": certFile, "key": keyFile, "expires": expires})
			}
			return fields(a.stdout, "Node", nodeID, "Hosts", strings.Join(hosts, ", "), "Certificate", certFile, "Key", keyFile, "Expires", expires)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&nodeID, "node-id", "", "the node's id (node_id in its configuration; the certificate's common name)")
	f.StringSliceVar(&hosts, "host", nil, "a DNS name or IP address the node is reached at (repeat, or comma-separate)")
	sg.flags(f, "directory for node.pem and node-key.pem (created 0700)", pki.DefaultServerTTL)
	return cmd
}

func (a *app) certsCACommand() *cobra.Command {
	var outDir, name string
	cmd := &cobra.Command{
		Use:   "ca --out-dir DIR [--name NAME]",
		Short: "Make a cluster CA (once per cluster)",
		Long: fmt.Sprintf(`ca writes DIR/ca.pem (the CA certificate; tls.ca of every node, and
HSMBROKER_CA of clients) and DIR/ca-key.pem (its private key), both mode
0600, valid for %d years. Keep ca-key.pem off the nodes, on the machine that
issues certificates ('hsmctl certs node', 'hsmctl certs issue'). It refuses
to replace an existing CA: the certificates it signed would stop being
trusted.`, int(pki.DefaultCATTL.Hours()/24/365)),
		Example: `  hsmctl certs ca --out-dir ./ca --name "example.net hsmbroker CA"`,
		Args:    noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if outDir == "" {
				return usageErr("--out-dir is required")
			}
			var ca *pki.CA
			certFile, keyFile, err := writeCert(outDir, "ca", false, func() (certSaver, error) {
				var err error
				ca, err = pki.NewCA(name)
				return ca, err
			})
			// ca has no --force, by design: say what to do instead.
			var ee *existsError
			if errors.As(err, &ee) {
				return fmt.Errorf("%s exists: certs ca refuses to replace an existing CA (the certificates it signed would stop being trusted); choose another --out-dir, or move the old CA aside", ee.path)
			}
			if err != nil {
				return err
			}
			expires := ca.Cert.NotAfter.UTC().Format(time.RFC3339)
			if a.json() {
				return printJSON(a.stdout, map[string]string{"name": name, "cert": certFile, "key": keyFile, "expires": expires})
			}
			return fields(a.stdout, "CA", name, "Certificate", certFile, "Key", keyFile, "Expires", expires)
		}),
	}
	cmd.Flags().StringVar(&outDir, "out-dir", "", "directory for ca.pem and ca-key.pem (created 0700)")
	cmd.Flags().StringVar(&name, "name", "hsmbroker cluster CA", "the CA's common name")
	return cmd
}

func (a *app) certsIssueCommand() *cobra.Command {
	var principal, role string
	var sg signing
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
			if principal == "" || role == "" || sg.outDir == "" {
				return usageErr("--principal, --role and --out-dir are required")
			}
			if err := sg.check(); err != nil {
				return err
			}
			switch {
			case !authz.Role(role).Issuable():
				return usageErr(fmt.Sprintf("invalid --role %q: valid values are admin, user, auditor", role))
			case strings.ContainsAny(principal, `/\`) || principal == "." || principal == "..":
				return usageErr(fmt.Sprintf("--principal %q cannot name a file in --out-dir", principal))
			}
			certFile, keyFile, expires, err := sg.issue(principal, func(ca *pki.CA, ttl time.Duration) (*pki.Issued, error) {
				return ca.IssueClient(principal, authz.Role(role), ttl)
			})
			if err != nil {
				return err
			}
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
	sg.flags(f, "directory for NAME.pem and NAME-key.pem (created 0700)", pki.DefaultClientTTL)
	return cmd
}

// certErr makes a bad argument of the certificate authority (an empty or
// overlong name, a role, a validity beyond the CA's own) a usage error.
func certErr(err error) error {
	if errors.Is(err, pki.ErrInvalid) {
		return usageErr(err.Error())
	}
	return err
}
