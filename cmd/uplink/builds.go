package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
)

// buildsCmd is `uplink builds <org>/<app> [--branch b]` and `uplink
// builds rm <org>/<app> <commit>`.
func (c *cli) buildsCmd() *cobra.Command {
	var branch string
	var limit int
	cmd := &cobra.Command{
		Use:   "builds <org>/<app> [--branch b] [--limit n]",
		Short: "list builds, newest first",
		Args:  exactArgs("<org>/<app>"),
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		list, err := cl.Builds(ctx, args[0], branch, limit)
		if err != nil {
			return fail(c.stderr, err)
		}
		printList(c.stdout, c.g.json, "builds", list, "COMMIT\tBRANCH\tTAGS\tARCHS\tPUBLISHED\tMESSAGE", func(b api.Build) []string {
			return []string{short(b.Commit), b.Branch, strings.Join(b.Tags, ","), strings.Join(b.Archs, ","),
				b.PublishedAt.Local().Format(time.DateTime), firstLine(b.Message)}
		})
		return 0
	})
	cmd.Flags().StringVar(&branch, "branch", "", "only this branch's history")
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many builds")
	cmd.AddCommand(c.buildsRmCmd())
	return cmd
}
