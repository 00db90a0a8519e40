package main

import (
	"io"

	"github.com/uplinkhq/uplink/internal/api"
)

// cmdHistory is `uplink history <installation>`.
func cmdHistory(args []string, stdout, stderr io.Writer) int {
	fs, cf := newAPIFlagSet("history", "history <installation> [flags]")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, "name one installation")
	}
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	list, err := c.History(ctx, pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	printList(stdout, cf.json, "history", list, "WHEN\tFROM\tTO\tCOMMIT\tOPERATION\tRESULT", func(h api.HistoryEntry) []string {
		return []string{localTime(h.At), channelString(h.From), channelString(&h.To),
			orDash(short(h.Commit)), orDash(h.Operation), orDash(string(h.Result))}
	})
	return 0
}
