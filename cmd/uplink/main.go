// Command uplink serves APK repositories per git ref and manages the
// installations that install from them.
package main

import (
	"fmt"
	"os"
)

const usage = `uplink: APK repositories per git ref

usage:
  uplink serve [flags]                        run the server
  uplink publish <dir> --app <org>/<app> --commit <sha> --branch <b>
                                              upload a built repository (<dir>/<arch>/...) and publish it
  uplink builds <org>/<app> [--branch b]      list builds, newest first

Run 'uplink <command> -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "publish":
		return publish(args[1:])
	case "builds":
		return builds(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "uplink: unknown command %q\n\n%s", args[0], usage)
	return 2
}
