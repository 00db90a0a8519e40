package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/version"
)

// versionInfo is `uplink version --json`.
type versionInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	BuildDate string `json:"build_date"`
	GoVersion string `json:"go_version"`
}

// versionCmd is `uplink version`: the line `uplink --version` prints.
func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, commit, build date and Go version",
		Args:  exactArgs(""),
		RunE: c.runs(func(*cobra.Command, []string) int {
			if c.g.json {
				printJSON(c.stdout, versionInfo{version.Version, version.Revision, version.BuildDate, version.GoVersion()})
			} else {
				fmt.Fprintln(c.stdout, version.String())
			}
			return 0
		}),
	}
}
