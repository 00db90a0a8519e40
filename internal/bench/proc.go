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
)

const (
	startTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
)

// proc is one server process that the harness started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
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
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{}), log: logPath}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// The server dies with the harness even if the harness is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	ps.add(p)
	if err := p.waitReady(ctx, ready); err != nil {
		ps.stop(p)
		return nil, err
	}
	return p, nil
}

func (p *proc) waitReady(ctx context.Context, ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := ready()
		switch {
		case err == nil:
			return nil
		case p.exited():
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.cmd.ProcessState, p.tail())
		case time.Now().After(deadline):
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, startTimeout, err, p.tail())
		case ctx.Err() != nil:
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to stop (SIGTERM), kills it if it does not, and
// waits until it is gone.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

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
