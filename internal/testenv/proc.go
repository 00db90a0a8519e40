package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a started server process; Done is closed once it has exited.
type Proc struct {
	Cmd  *exec.Cmd
	Done chan struct{}
}

// StartProc starts cmd and watches for its exit.
func StartProc(cmd *exec.Cmd) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, Done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.Done)
	}()
	return p, nil
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// WaitReady calls ready every interval until it reports nil. It gives up
// once the process has exited, after timeout, or when ctx ends (returning
// ctx.Err()).
func (p *Proc) WaitReady(ctx context.Context, timeout, interval time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		switch {
		case err == nil:
			return nil
		case p.Exited():
			return fmt.Errorf("exited during start-up: %v", p.Cmd.ProcessState)
		case time.Now().After(deadline):
			return fmt.Errorf("not ready after %v: %v", timeout, err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		time.Sleep(interval)
	}
}

// Signal sends sig to the process. After SIGSTOP it waits (up to a second)
// until every thread has stopped: kill returns before they do, and a
// thread still running could answer a request sent after Signal returned.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.Cmd.Process.Signal(sig); err != nil {
		return err
	}
	if sig == syscall.SIGSTOP {
		for deadline := time.Now().Add(time.Second); !allStopped(p.Cmd.Process.Pid) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
