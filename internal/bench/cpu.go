package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux architecture Go runs on.
const clockTicks = 100

// cpuSeconds is the user and system time of p and of its children
// (nginx's workers); 0 for no process.
func cpuSeconds(p *proc) float64 {
	if p == nil {
		return 0
	}
	pid := p.pid()
	total := procCPU(pid)
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(children)) {
		if child, err := strconv.Atoi(f); err == nil {
			total += procCPU(child)
		}
	}
	return total
}

func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndexByte(string(b), ')')
	if err != nil || i < 0 {
		return 0
	}
	// Fields 14 and 15 of stat (utime, stime) are 11 and 12 after ")".
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	return (atof(f[11]) + atof(f[12])) / clockTicks
}

// machineBusy is the CPU time the whole machine spent on anything but
// idling, steal (taken by the hypervisor) included, in seconds.
func machineBusy() float64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	// user nice system idle iowait irq softirq steal
	busy := 0.0
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		busy += atof(f[i])
	}
	return busy / clockTicks
}

func atof(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// settleLoad is how busy the machine may be, in cores, before a
// measurement starts.
const settleLoad = 0.15

// settle flushes dirty pages and waits, up to a bound, until the machine
// is nearly idle, so that one contender's aftermath does not slow the
// next one.
func (b *bench) settle(ctx context.Context) {
	syscall.Sync()
	const window, bound = 250 * time.Millisecond, 10 * time.Second
	var load float64
	var busiest string
	for deadline := time.Now().Add(bound); time.Now().Before(deadline) && ctx.Err() == nil; {
		machine, ours := machineBusy(), b.procs.cpu()
		time.Sleep(window)
		if load = (machineBusy() - machine) / window.Seconds(); load < settleLoad {
			return
		}
		busiest = b.procs.busiest(ours, window)
	}
	b.logf("  WARNING: the machine stayed busy (%.2f of %d cores; %s) for %v before this measurement",
		load, runtime.NumCPU(), busiest, bound)
}

// cpu is the CPU time of every running proc.
func (ps *procs) cpu() map[*proc]float64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	m := map[*proc]float64{}
	for p := range ps.live {
		m[p] = cpuSeconds(p)
	}
	return m
}

// busiest names the proc that used the most CPU since before.
func (ps *procs) busiest(before map[*proc]float64, d time.Duration) string {
	name, most := "none of the harness's servers", 0.0
	for p, cpu := range ps.cpu() {
		if used := (cpu - before[p]) / d.Seconds(); used > most {
			name, most = fmt.Sprintf("%s %.2f", p.name, used), used
		}
	}
	return "busiest: " + name
}
