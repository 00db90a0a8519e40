package testenv

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CutProxy is a TCP proxy on 127.0.0.1 in front of an HTTP server (S3),
// for tests of what a client of that server does when it fails. It
// forwards bytes unchanged (S3 signatures stay valid), counts the requests
// that pass by method, and on demand resets connections in the middle of
// a response body.
type CutProxy struct {
	Addr string // host:port to point clients at

	target string
	ln     net.Listener
	cutAt  atomic.Int64 // 0: forward everything
	cuts   atomic.Int64
	mu     sync.Mutex
	counts map[string]int
	open   map[net.Conn]struct{}
	closed bool
	conns  sync.WaitGroup
}

// StartCutProxy proxies to target (host:port) until t ends.
func StartCutProxy(t testing.TB, target string) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: cut proxy: %v", err)
	}
	p := &CutProxy{Addr: ln.Addr().String(), target: target, ln: ln, counts: map[string]int{}, open: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		// Idle keep-alive connections would otherwise live as long as
		// their clients keep them.
		p.mu.Lock()
		p.closed = true
		for c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.conns.Wait()
	})
	return p
}

// CutResponsesAfter makes the proxy reset (TCP RST) every connection whose
// response to the latest request has passed n bytes (headers included), as
// a storage server that crashes mid-body would; 0 stops cutting. Keep n
// above the size of a response without a body (about 1 KiB).
func (p *CutProxy) CutResponsesAfter(n int64) { p.cutAt.Store(n) }

// Cuts is how many connections were reset.
func (p *CutProxy) Cuts() int64 { return p.cuts.Load() }

// Requests is how many requests with this method went through.
func (p *CutProxy) Requests(method string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[method]
}

func (p *CutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			p.serve(c.(*net.TCPConn))
		}()
	}
}

// track registers c for closing at cleanup; false once closed.
func (p *CutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *CutProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.open, c)
}

func (p *CutProxy) serve(client *net.TCPConn) {
	defer client.Close()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	upstream := up.(*net.TCPConn)
	defer upstream.Close()
	if !p.track(upstream) {
		return
	}
	defer p.untrack(upstream)
	// Response bytes since the client last sent something, i.e. of the
	// response to its latest request (HTTP/1.1 clients wait for one
	// response before the next request on a connection).
	var sent atomic.Int64
	pr, pw := io.Pipe()
	go p.count(pr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				sent.Store(0)
				pw.Write(buf[:n])
				if _, werr := upstream.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		pw.Close()
		upstream.CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := upstream.Read(buf)
		if n > 0 {
			if at := p.cutAt.Load(); at > 0 && sent.Load()+int64(n) > at {
				// Forward up to the cut, then reset both sides.
				if keep := at - sent.Load(); keep > 0 {
					client.Write(buf[:keep])
				}
				p.cuts.Add(1)
				client.SetLinger(0)
				upstream.SetLinger(0)
				client.Close()
				upstream.Close()
				break
			}
			sent.Add(int64(n))
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	client.Close()
	upstream.Close()
	<-done
}

// count parses a copy of the client's bytes into requests, only to count
// them; the bytes forwarded are the client's own.
func (p *CutProxy) count(r *io.PipeReader) {
	defer io.Copy(io.Discard, r) // never block the forwarding
	br := bufio.NewReader(r)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.counts[req.Method]++
		p.mu.Unlock()
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
	}
}
