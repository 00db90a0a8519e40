package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// httpChaosServer is `uplink serve` on real Redis and S3 with a published
// branch main: hello, and a big package when asked.
type httpChaosServer struct {
	proc      *serveProc
	api       *client.Client
	distAddr  string
	adminAddr string
	index     string // URL of main's index
	hello     string // URL of hello's package
	big       string // URL of the big package, if any
	bigSize   int
}

// startHTTPChaos starts bin (uplinkBinary or plainBinary) with args, and
// publishes main with hello and, when bigSize > 0, a package of bigSize
// random bytes.
func startHTTPChaos(t *testing.T, bin string, bigSize int, args ...string) *httpChaosServer {
	t.Helper()
	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	listen, dist, admin := listenEnv(t)
	env := cliEnv(append(listen, s3Env(gw, gw.Endpoint, bucket, rdb.Addr)...)...)
	s := &httpChaosServer{proc: serveBinary(t, bin, t.TempDir(), env, args...), api: client.New(admin, replicaToken),
		distAddr: strings.TrimPrefix(dist, "http://"), adminAddr: admin}
	waitReady(t, s.proc, s.api)

	key := apktest.NewKey(t)
	pkgs := []apktest.Package{{Name: "hello", Version: "1.0-r0", Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte("1.0")}}}}
	if bigSize > 0 {
		data := make([]byte, bigSize)
		rand.Read(data) // incompressible: the package is as big
		pkgs = append(pkgs, apktest.Package{Name: "big", Version: "1.0-r0", Files: []apktest.File{{Path: "usr/share/big/data", Data: data}}})
	}
	files := apktest.BuildRepository(t, key, apktest.DefaultArch, pkgs...)
	dir := t.TempDir()
	apktest.WriteDir(t, dir, files)
	commit := sha("chaos-http")
	ctx := context.Background()
	for _, p := range []string{"x86_64/hello-1.0-r0.apk", "x86_64/big-1.0-r0.apk", "x86_64/APKINDEX.tar.gz"} {
		if files[p] == nil {
			continue
		}
		arch, name, _ := strings.Cut(p, "/")
		if err := s.api.Upload(ctx, "acme/hello", commit, arch, name, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.api.Publish(ctx, "acme/hello", api.PublishRequest{Commit: commit, Branch: "main"}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.distAddr + "/distribution/main/acme/hello/x86_64/"
	s.index, s.hello = base+"APKINDEX.tar.gz", base+"hello-1.0-r0.apk"
	if bigSize > 0 {
		s.big, s.bigSize = base+"big-1.0-r0.apk", len(files["x86_64/big-1.0-r0.apk"])
	}
	return s
}

// serveBinary is startServe for a given binary.
func serveBinary(t *testing.T, bin, dir string, env []string, args ...string) *serveProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	p := &serveProc{cmd: cmd, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
		}
		<-p.done
		cancel()
		if t.Failed() {
			t.Logf("uplink serve output:\n%s", p.stderr.String())
		}
	})
	return p
}

var plainBin struct {
	once sync.Once
	path string
	err  error
}

// plainBinary is cmd/uplink built without the race detector, whose shadow
// memory would swamp a memory bound; it is uplinkBinary when the test is
// not a race build either.
func plainBinary(t *testing.T) string {
	t.Helper()
	if !httpChaosRace() {
		return uplinkBinary(t)
	}
	race := uplinkBinary(t) // makes binDir, which TestMain removes
	plainBin.once.Do(func() {
		plainBin.path = filepath.Join(filepath.Dir(race), "uplink-plain")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", plainBin.path, ".").CombinedOutput(); err != nil {
			plainBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if plainBin.err != nil {
		t.Fatal(plainBin.err)
	}
	return plainBin.path
}

// httpChaosRace reports a race-detector build, which uplinkBinary then
// builds too.
func httpChaosRace() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}

// memory reads a field of the server process's /proc status, in bytes.
func (s *httpChaosServer) memory(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.proc.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc status: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc status", field)
	return 0
}

// metric reads one series from /metrics.
func (s *httpChaosServer) metric(t *testing.T, series string) float64 {
	t.Helper()
	var m float64
	resp, err := http.Get("http://" + s.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			m, _ = strconv.ParseFloat(v, 64)
		}
	}
	return m
}

// probe is a well-behaved client: it fetches the index and hello's
// package in a loop until stop, recording failures and the slowest
// request; every request gets its own connection, as a new apk run would.
type probe struct {
	done     chan struct{}
	requests atomic.Int64
	mu       sync.Mutex
	failures []string
	slowest  time.Duration
}

func startProbe(t *testing.T, s *httpChaosServer, stop <-chan struct{}) *probe {
	p := &probe{done: make(chan struct{})}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		for {
			for _, u := range []string{s.index, s.hello} {
				began := time.Now()
				resp, err := hc.Get(u)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				took := time.Since(began)
				p.requests.Add(1)
				p.mu.Lock()
				p.slowest = max(p.slowest, took)
				if err != nil {
					p.failures = append(p.failures, fmt.Sprintf("%s: %v after %v", u, err, took))
				}
				p.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return p
}

// check fails t unless every probe request succeeded within bound.
func (p *probe) check(t *testing.T, bound time.Duration) {
	t.Helper()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failures) > 0 {
		t.Fatalf("%d of %d requests of a well-behaved client failed, first: %s", len(p.failures), p.requests.Load(), p.failures[0])
	}
	if p.slowest > bound || p.requests.Load() < 10 {
		t.Fatalf("a well-behaved client: %d requests, slowest %v, want each within %v", p.requests.Load(), p.slowest, bound)
	}
	t.Logf("a well-behaved client: %d requests, slowest %v", p.requests.Load(), p.slowest)
}

// TestChaosHTTPHeaders: 600 connections each sending an unfinished 1 MB
// header, then 600 holding unfinished headers just under the default cap
// until the header timeout: the server's peak memory stays under the
// bound each phase names (the first grew it to 1.4 GB before headers were
// capped), every such connection is ended by the server within its
// bound, and other clients keep being served quickly.
func TestChaosHTTPHeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const (
		conns         = 600
		headerTimeout = 3 * time.Second
	)
	s := startHTTPChaos(t, plainBinary(t), 0, "--read-header-timeout", headerTimeout.String())
	pid := s.proc.cmd.Process.Pid
	before := s.memory(t, "VmRSS")

	stop := make(chan struct{})
	p := startProbe(t, s, stop)
	// Bounds on the peak RSS of the shipped binary (measured: ~55 MiB and
	// ~140 MiB, from ~20 MiB at rest). Headers held just under the cap
	// cost what --max-header-bytes lets each connection pin.
	for _, phase := range []struct {
		name  string
		size  int
		bound int64
	}{
		{"1 MB headers", 1 << 20, 150 << 20},
		{"headers just under the cap, held", server.DefaultMaxHeaderBytes - 4<<10, 300 << 20},
	} {
		// Restart the peak (VmHWM) for this phase.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Logf("cannot reset the peak RSS (%v): each phase's peak includes the earlier ones", err)
		}
		began := time.Now()
		var wg sync.WaitGroup
		var open, ended atomic.Int64
		var late atomic.Value
		for range conns {
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", s.distAddr, 10*time.Second)
				if err != nil {
					late.Store(fmt.Sprintf("dial: %v", err))
					return
				}
				defer c.Close()
				open.Add(1)
				// Bounded: nothing here outlives the header timeout by much.
				c.SetDeadline(time.Now().Add(headerTimeout + 15*time.Second))
				io.WriteString(c, "GET /distribution/main/acme/hello/x86_64/APKINDEX.tar.gz HTTP/1.1\r\nHost: uplink\r\nX-Filler: ")
				filler := bytes.Repeat([]byte{'a'}, 16<<10)
				for sent := 0; sent < phase.size; sent += len(filler) {
					if _, err := c.Write(filler[:min(len(filler), phase.size-sent)]); err != nil {
						break // the server answered 431 and closed
					}
				}
				// Never finished: wait for the server to end the connection.
				_, err = io.Copy(io.Discard, c)
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					late.Store("a connection with an unfinished header was still open after " + time.Since(began).String())
					return
				}
				ended.Add(1)
			})
		}
		wg.Wait()
		if v := late.Load(); v != nil {
			t.Fatalf("%s: %s", phase.name, v)
		}
		if ended.Load() != conns {
			t.Fatalf("%s: %d of %d connections opened, %d ended by the server", phase.name, open.Load(), conns, ended.Load())
		}
		peak := s.memory(t, "VmHWM")
		t.Logf("%s: %d connections, all ended by the server within %v; RSS %d MiB at rest, peak %d MiB (bound %d MiB)",
			phase.name, conns, time.Since(began).Round(time.Millisecond), before>>20, peak>>20, phase.bound>>20)
		if peak > phase.bound {
			t.Fatalf("%s: the server's peak RSS was %d MiB, over the %d MiB bound", phase.name, peak>>20, phase.bound>>20)
		}
	}
	close(stop)
	p.check(t, 2*time.Second)
}

// TestChaosHTTPSlowClients: slowloris connections trickling their headers
// are closed at the header timeout; readers that stop reading a big
// package are cut at the stall timeout; a reader that keeps going slowly
// gets the whole package although it takes longer than that; other
// clients' requests keep succeeding quickly all the while.
func TestChaosHTTPSlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const (
		headerTimeout = 3 * time.Second
		stall         = 2 * time.Second
		loris         = 200
		stoppers      = 20
	)
	// Bigger than what the kernel buffers between server and client
	// (4 MiB send buffer on loopback), so a stopped reader blocks the server.
	s := startHTTPChaos(t, uplinkBinary(t), 10<<20, "--read-header-timeout", headerTimeout.String(), "--stall-timeout", stall.String())
	stop := make(chan struct{})
	p := startProbe(t, s, stop)

	var wg sync.WaitGroup
	var lorisLate atomic.Value
	for range loris {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", s.distAddr, 10*time.Second)
			if err != nil {
				lorisLate.Store("dial: " + err.Error())
				return
			}
			defer c.Close()
			began := time.Now()
			closed := make(chan struct{})
			go func() {
				c.SetReadDeadline(began.Add(headerTimeout + 10*time.Second))
				io.Copy(io.Discard, c)
				close(closed)
			}()
			// One byte per 100 ms: the headers would take 17 s.
			req := "GET /distribution/main/acme/hello/x86_64/APKINDEX.tar.gz HTTP/1.1\r\nHost: uplink\r\nX-Slow: " + strings.Repeat("s", 100)
		send:
			for i := range len(req) {
				if _, err := c.Write([]byte{req[i]}); err != nil {
					break
				}
				select {
				case <-closed:
					break send
				case <-time.After(100 * time.Millisecond):
				}
			}
			<-closed
			if took := time.Since(began); took > headerTimeout+5*time.Second {
				lorisLate.Store(fmt.Sprintf("a slowloris connection was closed after %v, want within %v of the header timeout", took, 5*time.Second))
			}
		})
	}

	// Readers that stop after the headers.
	var conns []net.Conn
	var readers []*http.Response
	for range stoppers {
		c, err := net.DialTimeout("tcp", s.distAddr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: uplink\r\nUser-Agent: libfetch/2.0\r\n\r\n", strings.TrimPrefix(s.big, "http://"+s.distAddr))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a reader of the big package: %v %v", resp, err)
		}
		conns, readers = append(conns, c), append(readers, resp)
	}
	stopped := time.Now()

	// One slow reader that keeps going: 32 KiB every 15 ms, about 2 MB/s.
	slow := make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp", s.distAddr, 10*time.Second)
		if err != nil {
			slow <- err
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(32 << 10)
		c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: uplink\r\n\r\n", strings.TrimPrefix(s.big, "http://"+s.distAddr))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			slow <- err
			return
		}
		began, n := time.Now(), 0
		buf := make([]byte, 32<<10)
		for {
			k, err := io.ReadFull(resp.Body, buf)
			n += k
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				slow <- fmt.Errorf("cut at %d of %d bytes after %v: %w", n, s.bigSize, time.Since(began), err)
				return
			}
			time.Sleep(15 * time.Millisecond)
		}
		if took := time.Since(began); n != s.bigSize || took < 2*stall {
			slow <- fmt.Errorf("got %d of %d bytes in %v (want all, in more than %v)", n, s.bigSize, took, 2*stall)
			return
		}
		slow <- nil
	}()

	// The server cuts each stopped reader and closes its connection: its
	// count of open connections falls back to the probe's and the slow
	// reader's (and the slowloris ones', closed at the header timeout).
	deadline := stopped.Add(max(stall, headerTimeout) + 10*time.Second)
	for {
		cut := s.metric(t, `uplink_http_stalled_total{listener="distribution"}`)
		open := s.metric(t, `uplink_http_connections{listener="distribution"}`)
		if cut >= stoppers && open <= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after they stopped reading, %v of %d stopped readers were cut and %v connections are open (--stall-timeout %v)",
				time.Since(stopped), cut, stoppers, open, stall)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d stopped readers cut and their connections closed within %v", stoppers, time.Since(stopped).Round(time.Millisecond))
	// None of them gets the whole package: what the kernel buffered, then
	// the end. (How soon the rest arrives is the kernel's business.)
	var short sync.WaitGroup
	for i, resp := range readers {
		short.Go(func() {
			conns[i].SetReadDeadline(time.Now().Add(3 * time.Second))
			if b, err := io.ReadAll(resp.Body); err == nil || len(b) >= s.bigSize {
				t.Errorf("a stopped reader got %d of %d bytes (%v): want the body cut short", len(b), s.bigSize, err)
			}
		})
	}
	short.Wait()
	if err := <-slow; err != nil {
		t.Fatalf("the slow but moving reader: %v", err)
	}
	wg.Wait()
	if v := lorisLate.Load(); v != nil {
		t.Fatal(v)
	}
	close(stop)
	p.check(t, 2*time.Second)
}

// TestValidateListenerLimits: the listener limits' defaults are the
// documented ones, and a value that would disable a limit is refused
// with the flag's name.
func TestValidateListenerLimits(t *testing.T) {
	clearUplinkEnv(t)
	cfg, level, format, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxHeaderBytes != 64<<10 || cfg.ReadHeaderTimeout != 10*time.Second || cfg.IdleTimeout != time.Minute ||
		cfg.StallTimeout != 30*time.Second || cfg.MaxConnections != 4096 || cfg.AdminMaxConnections != 256 || cfg.DrainDelay != 5*time.Second {
		t.Fatalf("listener limit defaults: %+v", cfg)
	}
	if err := validate(&cfg, level, format); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-header-bytes", "1KiB"}, "--max-header-bytes"},
		{[]string{"--max-header-bytes", "2MiB"}, "--max-header-bytes"},
		{[]string{"--read-header-timeout", "0s"}, "--read-header-timeout"},
		{[]string{"--idle-timeout", "-1s"}, "--idle-timeout"},
		{[]string{"--stall-timeout", "100ms"}, "--stall-timeout"},
		{[]string{"--max-connections", "0"}, "--max-connections"},
		{[]string{"--admin-max-connections", "-3"}, "--admin-max-connections"},
		{[]string{"--drain-delay", "-1s"}, "--drain-delay"},
	} {
		cfg, level, format, err := parseServe(t, tc.args...)
		if err == nil {
			err = validate(&cfg, level, format)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// TestParseEnvListenerLimits: each listener limit is read from its
// UPLINK_* variable.
func TestParseEnvListenerLimits(t *testing.T) {
	clearUplinkEnv(t)
	for k, v := range map[string]string{
		"UPLINK_MAX_HEADER_BYTES": "32KiB", "UPLINK_READ_HEADER_TIMEOUT": "4s", "UPLINK_IDLE_TIMEOUT": "90s",
		"UPLINK_STALL_TIMEOUT": "12s", "UPLINK_MAX_CONNECTIONS": "100", "UPLINK_ADMIN_MAX_CONNECTIONS": "7", "UPLINK_DRAIN_DELAY": "0s",
	} {
		t.Setenv(k, v)
	}
	cfg, level, format, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(&cfg, level, format); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxHeaderBytes != 32<<10 || cfg.ReadHeaderTimeout != 4*time.Second || cfg.IdleTimeout != 90*time.Second ||
		cfg.StallTimeout != 12*time.Second || cfg.MaxConnections != 100 || cfg.AdminMaxConnections != 7 || cfg.DrainDelay != 0 {
		t.Fatalf("from the environment: %+v", cfg)
	}
}
