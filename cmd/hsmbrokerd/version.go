package main

import (
	"fmt"
	"io"

	"github.com/hsmbroker/hsmbroker/internal/version"
	"github.com/spf13/cobra"
)

// linkedVersion is set at link time: -ldflags "-X main.linkedVersion=v1.2.3".
// Without it, the module version from the build info is used.
var linkedVersion = ""

func versionString() string { return version.String("hsmbrokerd", linkedVersion) }

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version and exit",
		Example: "  hsmbrokerd version",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, versionString())
			return err
		},
	}
}
