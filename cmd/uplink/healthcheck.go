package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
// listener's /readyz answers 200, 1 (and why, on stderr) otherwise. It is
// the image's HEALTHCHECK, so it needs no token and no configuration
// beyond what `uplink serve` already reads from the environment.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healthcheck", "healthcheck [--addr <admin address>] [--timeout 5s] [--cacert <ca.pem> | --insecure-skip-verify]")
	var f healthcheckFlags
	fs.StringVar(&f.addr, "addr", "", "admin listener address (default: from UPLINK_ADMIN_LISTEN and UPLINK_ADMIN_TLS_CERT, as `uplink serve` reads them, else "+defaultAdminAddr+")")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up after this long")
	fs.StringVar(&f.cacert, "cacert", "", "PEM certificate(s) to trust for an https admin listener (e.g. its self-signed certificate)")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the admin listener's TLS certificate")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError(fs, stderr, fmt.Sprintf("takes no arguments, got %q", pos))
	}
	if f.timeout <= 0 {
		return usageError(fs, stderr, "--timeout must be positive")
	}
	hc, err := f.httpClient()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	url := strings.TrimRight(f.baseURL(), "/") + "/readyz"
	body, err := checkReady(ctx, hc, url)
	if err != nil {
		fmt.Fprintf(stderr, "uplink healthcheck: %s: %v\n", url, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", url, body)
	return 0
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
			return "", fmt.Errorf("no answer in time: %w", err)
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
