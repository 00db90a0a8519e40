package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// isTerminal reports whether w is a terminal (a variable for tests).
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// reporter shows an operation's progress as it is followed.
type reporter interface {
	update(op *api.Operation)
	// end is called once the operation ended (op is its final state)
	// or following it failed (op is the last state seen, or nil).
	end(op *api.Operation)
}

// follow follows operation id until it ends: a progress bar on a
// terminal, else a line per step state change, then the operation's log
// (what apk did in each instance) and a final line. With jsonOut, the
// final operation is printed on stdout and the progress goes to stderr.
// A failed operation's log goes to stderr; exit 1.
func follow(ctx context.Context, c *client.Client, id string, jsonOut bool, stdout, stderr io.Writer) int {
	progress := stdout
	if jsonOut {
		progress = stderr
	}
	var r reporter
	if isTerminal(progress) {
		r = &barReporter{w: progress}
	} else {
		r = &lineReporter{w: progress}
	}
	op, err := c.Watch(ctx, id, r.update)
	r.end(op)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "uplink: stopped following operation %s, which goes on: uplink ops watch %s\n", id, id)
			return 1
		}
		return fail(stderr, fmt.Errorf("following operation %s: %w", id, err))
	}
	if op.State == api.Succeeded {
		if len(op.Log) > 0 {
			fmt.Fprintf(progress, "log of operation %s:\n", op.ID)
			printLog(progress, op, "  ")
		}
		fmt.Fprintf(progress, "operation %s succeeded\n", op.ID)
	} else {
		msg := op.Error
		if msg == "" {
			msg = "no reason given"
		}
		fmt.Fprintf(progress, "operation %s %s: %s\n", op.ID, op.State, msg)
	}
	if jsonOut {
		printJSON(stdout, op)
	}
	if op.State != api.Succeeded {
		if len(op.Log) > 0 {
			fmt.Fprintf(stderr, "log of operation %s:\n", op.ID)
			printLog(stderr, op, "  ")
		}
		return 1
	}
	return 0
}

// lineReporter writes a line per step state change: "step <name>: <state>".
type lineReporter struct {
	w      io.Writer
	header bool
	seen   map[string]api.StepState
}

func (l *lineReporter) update(op *api.Operation) {
	if !l.header {
		fmt.Fprintf(l.w, "operation %s: %s\n", op.ID, opHeadline(op))
		l.header = true
		l.seen = map[string]api.StepState{}
	}
	for _, s := range op.Steps {
		prev, ok := l.seen[s.Name]
		if s.State == prev || (!ok && s.State == api.StepPending) {
			continue
		}
		l.seen[s.Name] = s.State
		fmt.Fprintf(l.w, "step %s: %s\n", s.Name, s.State)
	}
}

func (l *lineReporter) end(*api.Operation) {}

// barReporter draws a progress bar of done/total steps, described by the
// current step's name.
type barReporter struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	width int // of the longest step name
}

func (b *barReporter) update(op *api.Operation) {
	total := op.Progress.Total
	if total == 0 {
		total = len(op.Steps)
	}
	if total == 0 {
		return
	}
	for _, s := range op.Steps {
		b.width = max(b.width, len(s.Name))
	}
	desc := fmt.Sprintf("%-*s", b.width, currentStep(op))
	if b.bar == nil {
		fmt.Fprintf(b.w, "operation %s: %s\n", op.ID, opHeadline(op))
		b.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetRenderBlankState(true),
		)
	} else if b.bar.GetMax() != total {
		b.bar.ChangeMax(total)
	}
	b.bar.Describe(desc)
	b.bar.Set(min(op.Progress.Done, total))
}

func (b *barReporter) end(op *api.Operation) {
	if b.bar == nil {
		return
	}
	if op != nil && op.State == api.Succeeded {
		b.bar.Finish()
	}
	b.bar.Exit()
	fmt.Fprintln(b.w)
}

// currentStep names the running step, else the failed one, else the next
// pending one, else the last one.
func currentStep(op *api.Operation) string {
	for _, want := range []api.StepState{api.StepRunning, api.StepFailed, api.StepPending} {
		for _, s := range op.Steps {
			if s.State == want {
				return s.Name
			}
		}
	}
	if n := len(op.Steps); n > 0 {
		return op.Steps[n-1].Name
	}
	return string(op.State)
}

// opHeadline is "change-channel web: branch main (0123456789ab) -> tag v2 (abcdef012345)".
func opHeadline(op *api.Operation) string {
	s := string(op.Kind) + " " + op.Installation
	if op.From != nil || op.To != nil {
		s += ": " + endpointLong(op.From) + " -> " + endpointLong(op.To)
	}
	return s
}

// endpointLong is an endpoint with the commit it resolved to.
func endpointLong(e *api.Endpoint) string {
	if e == nil {
		return "-"
	}
	s := channelString(&e.Channel)
	if e.Resolved != "" && (e.Commit == "" || e.Tag != "") {
		s += " (" + short(e.Resolved) + ")"
	}
	return s
}

func printLog(w io.Writer, op *api.Operation, indent string) {
	for _, l := range op.Log {
		fmt.Fprintf(w, "%s%s %s\n", indent, localTime(l.At), l.Line)
	}
}
