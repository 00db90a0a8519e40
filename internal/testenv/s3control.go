package testenv

import (
	"sync"
	"syscall"
	"testing"
)

// s3Process is the versitygw behind an S3, so chaos tests can take it away
// the ways production loses S3: killed (connections refused) or frozen
// (SIGSTOP: connections accepted, nothing answered).
type s3Process struct {
	t     testing.TB
	bin   string
	args  []string
	dir   string
	ready func() error

	mu     sync.Mutex
	proc   *process // nil while stopped
	frozen bool
}

// Stop kills the server (as a crash would) and waits until it is gone. The
// objects stay on disk for Start.
func (s *S3) Stop() {
	c := s.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.proc.kill() // SIGKILL ends a stopped process too
		c.proc, c.frozen = nil, false
	}
}

// Start starts the server again after Stop, on the same address and with
// the same objects. It does nothing if the server is running.
func (s *S3) Start() {
	c := s.ctl
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		c.proc = start(c.t, "versitygw", c.bin, c.args, c.dir, c.ready)
	}
}

// Freeze stops the server with SIGSTOP: the kernel still accepts
// connections and requests, and nothing answers them until Thaw.
func (s *S3) Freeze() { s.signal(syscall.SIGSTOP, true) }

// Thaw resumes a frozen server.
func (s *S3) Thaw() { s.signal(syscall.SIGCONT, false) }

func (s *S3) signal(sig syscall.Signal, frozen bool) {
	c := s.ctl
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.frozen == frozen {
		return
	}
	if err := c.proc.Signal(sig); err != nil {
		c.t.Fatalf("testenv: versitygw: %v: %v", sig, err)
	}
	c.frozen = frozen
}
