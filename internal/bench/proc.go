package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/uplinkhq/uplink/internal/testenv"
)

const (
	startTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
)

// proc is one server process that the harness started.
type proc struct {
	*testenv.Proc
	name string
	log  string
}

// procs remembers every running proc, so that close stops them all.
type procs struct {
	mu   sync.Mutex
	live map[*proc]bool
}

func (ps *procs) add(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.live == nil {
		ps.live = map[*proc]bool{}
	}
	ps.live[p] = true
}

func (ps *procs) stop(p *proc) {
	ps.mu.Lock()
	delete(ps.live, p)
	ps.mu.Unlock()
	p.stop()
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := ps.live
	ps.live = nil
	ps.mu.Unlock()
	for p := range all {
		p.stop()
	}
}

// start runs bin with its output in logDir/<name>.log and waits until
// ready reports nil.
func (ps *procs) start(ctx context.Context, name, logDir, bin string, args []string, ready func() error) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// The server dies with the harness even if the harness is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, err := testenv.StartProc(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{Proc: started, name: name, log: logPath}
	ps.add(p)
	if err := p.WaitReady(ctx, startTimeout, 20*time.Millisecond, ready); err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("%s %v:\n%s", p.name, err, p.tail())
		}
		ps.stop(p)
		return nil, err
	}
	return p, nil
}

// stop asks the process to stop (SIGTERM), kills it if it does not, and
// waits until it is gone.
func (p *proc) stop() {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done:
	case <-time.After(stopTimeout):
		p.Cmd.Process.Kill()
		<-p.Done
	}
}

func (p *proc) pid() int { return p.Cmd.Process.Pid }

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 3000 {
		s = "..." + s[len(s)-3000:]
	}
	return s
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// httpReady reports nil once url answers anything that check accepts.
func httpReady(url string, check func(*http.Response) error) func() error {
	hc := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return check(resp)
	}
}

func anyAnswer(*http.Response) error { return nil }

func statusOK(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
