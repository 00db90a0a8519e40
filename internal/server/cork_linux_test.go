package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
)

func corked(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v != 0
}

// TestCork: the distribution listener corks a response while the handler
// writes it and releases the cork before net/http's last flush; the admin
// listener, whose event stream must leave at each flush, never corks.
func TestCork(t *testing.T) {
	s := &Server{httpm: newHTTPMetrics(nil), log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		listener string
		want     bool
	}{{"distribution", true}, {"admin", false}} {
		t.Run(tc.listener, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			conns := make(chan *capConn, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cc := r.Context().Value(connKey{}).(*capConn)
				select {
				case conns <- cc:
				default:
				}
				io.WriteString(w, strconv.FormatBool(corked(t, cc.Conn)))
			})
			srv, cl := s.newHTTPServer(ln, h, s.limitsFor(tc.listener))
			go srv.Serve(cl)
			t.Cleanup(func() { srv.Close() })
			resp, err := http.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := string(body); got != strconv.FormatBool(tc.want) {
				t.Fatalf("corked while the handler wrote: %s, want %v", got, tc.want)
			}
			if corked(t, (<-conns).Conn) {
				t.Fatal("still corked after the response")
			}
		})
	}
}
