package console

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Failed sign-ins are throttled per client address: after maxFailures
// within failureWindow, sign-in from there is refused until the window
// has passed. Tokens are long and random; this keeps a guessing client
// from using the console as a fast oracle. The memory is a bounded LRU:
// an attacker with many addresses evicts entries, and gets no more than
// without the throttle.
const (
	maxFailures   = 10
	failureWindow = 5 * time.Minute
	throttleSize  = 4096
)

type failures struct {
	count int
	since time.Time
}

type throttle struct {
	mu    sync.Mutex
	addrs *lru.Cache[string, failures]
}

func newThrottle() *throttle {
	c, _ := lru.New[string, failures](throttleSize)
	return &throttle{addrs: c}
}

// blocked reports whether addr has failed too often lately.
func (t *throttle) blocked(addr string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.addrs.Get(addr)
	return ok && f.count >= maxFailures && now.Sub(f.since) < failureWindow
}

func (t *throttle) fail(addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.addrs.Get(addr)
	if !ok || now.Sub(f.since) >= failureWindow {
		f = failures{since: now}
	}
	f.count++
	t.addrs.Add(addr, f)
}
