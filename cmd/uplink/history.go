package main

import (
	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
)

// historyCmd is `uplink history <installation>`.
func (c *cli) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history <installation>",
		Short: "list an installation's channel changes",
		Args:  exactArgs("<installation>"),
		RunE: c.runs(func(cmd *cobra.Command, args []string) int {
			ctx, cl, stop, err := c.g.connect()
			if err != nil {
				return fail(c.stderr, err)
			}
			defer stop()
			list, err := cl.History(ctx, args[0])
			if err != nil {
				return fail(c.stderr, err)
			}
			printList(c.stdout, c.g.json, "history", list, "WHEN\tFROM\tTO\tCOMMIT\tOPERATION\tRESULT", func(h api.HistoryEntry) []string {
				return []string{localTime(h.At), channelString(h.From), channelString(&h.To),
					orDash(short(h.Commit)), orDash(h.Operation), orDash(string(h.Result))}
			})
			return 0
		}),
	}
}
