package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"

	"github.com/uplinkhq/uplink/internal/server"
)

// serveCommand is `uplink serve`: its flags are a std flag.FlagSet
// (serveFlags) with UPLINK_<FLAG> fallbacks, parsed here rather than by
// cobra; --help prints them on stdout. A bad flag or configuration exits
// 2, like every usage error.
func serveCommand(args []string, stdout, stderr io.Writer) int {
	cfg := defaultConfig()
	var logLevel, logFormat string
	fs := serveFlags(&cfg, &logLevel, &logFormat)
	fs.SetOutput(io.Discard)
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if err == nil && len(pos) > 0 {
		err = fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	if err != nil {
		fmt.Fprintf(stderr, "uplink serve: %v\nRun 'uplink serve --help' for its flags.\n", err)
		return exitUsage
	}
	if err := validate(&cfg, logLevel, logFormat); err != nil {
		fmt.Fprintln(stderr, "uplink: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  -", line)
		}
		return exitUsage
	}
	log := newLogger(logLevel, logFormat)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg, log)
	if err == nil {
		err = srv.Run(ctx)
	}
	if err != nil {
		return fail(stderr, err)
	}
	return 0
}
