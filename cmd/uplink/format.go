package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
)

// printList prints list as {"<key>": [...]} with --json (an empty list as
// [], never null), else as a table: header, then a row of cells per item.
func printList[T any](w io.Writer, jsonOut bool, key string, list []T, header string, row func(T) []string) {
	if jsonOut {
		if list == nil {
			list = []T{}
		}
		printJSON(w, map[string]any{key: list})
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, header)
	for _, v := range list {
		fmt.Fprintln(tw, strings.Join(row(v), "\t"))
	}
	tw.Flush()
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// short abbreviates a commit to 12 digits.
func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// channelString says what a channel installs from: "branch main",
// "tag v1.2" (a pin to the commit the tag named), "commit 0123456789ab".
func channelString(c *api.Channel) string {
	switch {
	case c == nil || c.IsZero():
		return "-"
	case c.Tag != "":
		return "tag " + c.Tag
	case c.Commit != "":
		return "commit " + short(c.Commit)
	}
	return "branch " + c.Branch
}

func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func localTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return localTime(*t)
}
