package main

import (
	"fmt"

	"github.com/hsmbroker/hsmbroker/internal/version"
	"github.com/spf13/cobra"
)

// linkedVersion is set at link time: -ldflags "-X main.linkedVersion=v1.2.3".
// Without it, the module version from the build info is used.
var linkedVersion = ""

func versionString() string { return version.String("hsmctl", linkedVersion) }

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of hsmctl and exit",
		Long:    "version prints hsmctl's version, as 'hsmctl --version' does. It contacts no broker.",
		Example: "  hsmctl version",
		Args:    noArgs,
		RunE: a.runE(func(*cobra.Command, []string) error {
			if a.json() {
				return printJSON(a.stdout, map[string]any{"version": versionString()})
			}
			_, err := fmt.Fprintln(a.stdout, versionString())
			return err
		}),
	}
}
