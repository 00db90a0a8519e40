package main

import "io"

// The in-process tests run one command the way the binary does: through
// the whole command line (cobra's parsing, UPLINK_* fallbacks, exit codes).

func cmdOf(name string) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		return execute(append([]string{name}, args...), stdout, stderr)
	}
}

var (
	cmdChannel       = cmdOf("channel")
	cmdOps           = cmdOf("ops")
	cmdInstallations = cmdOf("installations")
	cmdHistory       = cmdOf("history")
	cmdKeys          = cmdOf("keys")
	cmdPublish       = cmdOf("publish")
)
