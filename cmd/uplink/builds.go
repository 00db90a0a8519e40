package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
)

// cmdBuilds is `uplink builds <org>/<app> [--branch b]`.
func cmdBuilds(args []string, stdout, stderr io.Writer) int {
	var branch string
	var limit int
	fs, cf := newAPIFlagSet("builds", "builds <org>/<app> [--branch b] [--limit n] [flags]")
	fs.StringVar(&branch, "branch", "", "only this branch's history")
	fs.IntVar(&limit, "limit", 20, "at most this many builds")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, fmt.Sprintf("want one argument, got %d", len(pos)))
	}
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	list, err := c.Builds(ctx, pos[0], branch, limit)
	if err != nil {
		return fail(stderr, err)
	}
	printList(stdout, cf.json, "builds", list, "COMMIT\tBRANCH\tTAGS\tARCHS\tPUBLISHED\tMESSAGE", func(b api.Build) []string {
		return []string{short(b.Commit), b.Branch, strings.Join(b.Tags, ","), strings.Join(b.Archs, ","),
			b.PublishedAt.Local().Format(time.DateTime), firstLine(b.Message)}
	})
	return 0
}
