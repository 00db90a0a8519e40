package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrkThreads matches the 2-core machine the targets are set for.
const wrkThreads = 2

// wrkDone prints wrk's summary as one machine-readable line.
const wrkDone = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d bytes=%.0f duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\n",
    summary.requests, summary.bytes, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
`

// load is what one run measured: wrk's, or the package set's Go client's.
type load struct {
	requests  int64
	bytes     float64
	elapsed   time.Duration
	p50, p99  time.Duration
	errors    int64
	clientCPU float64         // cores the client (wrk, or the harness's Go client) kept busy
	took      []time.Duration // each complete download's time, from the Go client
}

func (l load) rps() float64 { return float64(l.requests) / l.elapsed.Seconds() }

func (l load) mbps() float64 { return l.bytes / l.elapsed.Seconds() / 1e6 }

// wrkRun is one wrk invocation; every contender gets the same settings.
type wrkRun struct {
	url     string
	conns   int
	d       time.Duration
	timeout time.Duration
}

func (b *bench) wrk(ctx context.Context, r wrkRun) (load, error) {
	script := filepath.Join(b.tmp, "done.lua")
	if err := os.WriteFile(script, []byte(wrkDone), 0o644); err != nil {
		return load{}, err
	}
	args := []string{
		"-t", strconv.Itoa(min(wrkThreads, r.conns)), "-c", strconv.Itoa(r.conns),
		"-d", fmt.Sprintf("%ds", int(r.d.Seconds())), "--timeout", fmt.Sprintf("%ds", int(r.timeout.Seconds())),
		"-s", script, r.url,
	}
	cmd := exec.CommandContext(ctx, b.tools.wrk, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return load{}, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	l, err := parseWrk(string(out))
	busy := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	l.clientCPU = busy.Seconds() / l.elapsed.Seconds()
	return l, err
}

func parseWrk(out string) (load, error) {
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(line, "WRKRESULT ")
		if !ok {
			continue
		}
		var l load
		var us, p50, p99 float64
		_, err := fmt.Sscanf(strings.TrimSpace(rest), "requests=%d bytes=%g duration_us=%g p50_us=%g p99_us=%g errors=%d",
			&l.requests, &l.bytes, &us, &p50, &p99, &l.errors)
		if err != nil {
			return load{}, fmt.Errorf("wrk result %q: %w", rest, err)
		}
		l.elapsed, l.p50, l.p99 = micros(us), micros(p50), micros(p99)
		return l, nil
	}
	return load{}, fmt.Errorf("no WRKRESULT line in wrk output:\n%s", out)
}

func micros(us float64) time.Duration { return time.Duration(us * float64(time.Microsecond)) }
