package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/internal/version"
)

// defaultAdminAddr is serve's default --admin-listen, as a URL.
const defaultAdminAddr = "http://127.0.0.1:4040"

// healthcheckFlags are `uplink healthcheck`'s flags.
type healthcheckFlags struct {
	addr, cacert string
	insecure     bool
	timeout      time.Duration
}

// cmdHealthcheck is `uplink healthcheck`: exit 0 when the admin
// listener's /readyz answers 200, 1 (and why, on stderr) otherwise, 2 for
// a bad command line. It is the image's HEALTHCHECK, so it needs no token
// and no configuration beyond what `uplink serve` already reads from the
// environment. It parses its own flags (std flag, UPLINK_<FLAG>) so that
// any command-line front end can wrap it.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseHealthcheck(args, stdout, stderr)
	if !ok {
		return code
	}
	url := strings.TrimRight(f.baseURL(), "/") + "/readyz"
	hc, err := f.httpClient()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		var body string
		if body, err = checkReady(ctx, hc, url); err == nil {
			fmt.Fprintf(stdout, "%s: %s\n", url, body)
			return 0
		}
	}
	fmt.Fprintf(stderr, "uplink healthcheck: %s: %v\n", url, err)
	return 1
}

// parseHealthcheck reads healthcheck's flags; -h prints the usage on
// stdout (exit 0), a bad command line the problem and the usage on stderr
// (exit 2). ok is false when the command should exit with code.
func parseHealthcheck(args []string, stdout, stderr io.Writer) (f healthcheckFlags, code int, ok bool) {
	fs := newFlagSet("healthcheck", "healthcheck [--addr <admin address>] [--timeout 5s] [--cacert <ca.pem> | --insecure-skip-verify]")
	fs.StringVar(&f.addr, "addr", "", "admin listener address (default: from UPLINK_ADMIN_LISTEN and UPLINK_ADMIN_TLS_CERT, as `uplink serve` reads them, else "+defaultAdminAddr+")")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up after this long")
	fs.StringVar(&f.cacert, "cacert", "", "PEM certificate(s) to trust for an https admin listener (e.g. its self-signed certificate)")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the admin listener's TLS certificate")
	fs.SetOutput(io.Discard)
	pos, err := parse(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return f, 0, false
	case err != nil:
	case len(pos) > 0:
		err = fmt.Errorf("takes no arguments, got %q", pos)
	case f.timeout <= 0:
		err = errors.New("--timeout must be positive")
	}
	if err != nil {
		fmt.Fprintf(stderr, "uplink healthcheck: %v\n\n", err)
		fs.SetOutput(stderr)
		fs.Usage()
		return f, 2, false
	}
	return f, 0, true
}

// baseURL is --addr, or the address `uplink serve` listens on according
// to the environment (a wildcard host reached on loopback), with https
// when the listener has a certificate or TLS flags were given.
func (f *healthcheckFlags) baseURL() string {
	addr, tlsOn := f.addr, f.cacert != "" || f.insecure
	if addr == "" {
		addr = os.Getenv("UPLINK_ADMIN_LISTEN")
		tlsOn = tlsOn || os.Getenv("UPLINK_ADMIN_TLS_CERT") != ""
		if host, port, err := net.SplitHostPort(addr); err == nil {
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1"
			}
			addr = net.JoinHostPort(host, port)
		} else {
			addr = strings.TrimPrefix(defaultAdminAddr, "http://")
		}
	}
	if strings.Contains(addr, "://") {
		return addr
	}
	if tlsOn {
		return "https://" + addr
	}
	return "http://" + addr
}

// httpClient trusts --cacert (added to the system's roots) or nothing
// with --insecure-skip-verify.
func (f *healthcheckFlags) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: f.insecure}
	if f.cacert != "" {
		pem, err := os.ReadFile(f.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", f.cacert)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr}, nil
}

// checkReady asks url and returns its body when it answers 200, else
// an error saying what it answered (its body says which check failed).
func checkReady(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", version.UserAgent())
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", errors.New("no answer within --timeout")
		}
		var uerr *neturl.Error // "Get <url>: ...": the caller names the URL
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return body, nil
}
