package testenv

import "syscall"

// Freeze stops the server with SIGSTOP: the kernel still accepts
// connections and commands, and nothing answers them until Thaw (a Redis
// stuck as production sees it: no error, only silence). Stop still kills
// a frozen server.
func (r *Redis) Freeze() { r.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (r *Redis) Thaw() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	if err := r.proc.Signal(sig); err != nil {
		r.t.Fatalf("testenv: redis-server: %v: %v", sig, err)
	}
}
