// Command screenshots makes the console's screenshots in docs/screenshots
// from a running uplink (`make screenshots`): it builds and starts the
// real binary on loopback ports with a temporary data dir and no instance
// backend, seeds it through the admin API's Go client, and photographs
// each page in headless chromium.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

const token = "screenshots-admin-token-0123456789"

func main() {
	out := flag.String("out", "docs/screenshots", "where the PNGs go")
	delay := flag.Duration("step-delay", 700*time.Millisecond, "--no-backend-step-delay of the server: how long each step of an operation takes")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("screenshots: ")
	if err := run(*out, *delay); err != nil {
		log.Fatal(err)
	}
}

func run(out string, delay time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "uplink-screenshots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	admin, stop, err := serve(ctx, tmp, delay)
	if err != nil {
		return err
	}
	defer stop()
	site, err := seed(ctx, admin, tmp)
	if err != nil {
		return fmt.Errorf("seeding: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return photograph(ctx, "http://"+admin+"/ui", site, out)
}

// serve builds uplink and starts `uplink serve` on two free loopback
// ports; it returns the admin address once /readyz answers, and how to
// stop the server.
func serve(ctx context.Context, tmp string, delay time.Duration) (string, func(), error) {
	bin := filepath.Join(tmp, "uplink")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/uplink")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", nil, fmt.Errorf("go build ./cmd/uplink: %w", err)
	}
	dist, admin := freePort(), freePort()
	cmd := exec.Command(bin, "serve", "--listen", dist, "--admin-listen", admin,
		"--data-dir", filepath.Join(tmp, "data"), "--admin-token", token,
		"--distribution-url", "http://uplink:4080", "--no-backend-step-delay", delay.String(),
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	for {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return admin, stop, nil
			}
		}
		select {
		case err := <-exited:
			return "", nil, fmt.Errorf("uplink serve exited: %v", err)
		case <-ctx.Done():
			stop()
			return "", nil, errors.New("uplink serve never became ready")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort is a loopback address nothing listens on, for the server.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
