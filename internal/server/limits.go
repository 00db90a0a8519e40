package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
)

// Defaults of the listener limits, as a public mirror would run them.
const (
	// DefaultMaxHeaderBytes bounds a request's line and headers; apk sends
	// three short headers, but a Range header of thousands of ranges must
	// still reach the range cap. Beyond it net/http answers 431. A
	// connection holding an unfinished header just under the cap measured
	// ~210 KiB of RSS (~70 KiB at 16 KiB): memory slow clients can pin is
	// about the connection cap times three to four times this.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultReadHeaderTimeout bounds the wait for a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection left unused.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultStallTimeout cuts a client that takes no response bytes, or
	// sends no request-body bytes, for this long; below apk's own 60 s.
	DefaultStallTimeout = 30 * time.Second
	// DefaultMaxConnections and DefaultAdminMaxConnections cap open
	// connections per listener; what a header can hold times the cap
	// bounds the memory clients can pin.
	DefaultMaxConnections      = 4096
	DefaultAdminMaxConnections = 256
	// DefaultDrainDelay is how long /readyz answers 503 after SIGTERM
	// before the listeners close, for a load balancer to notice.
	DefaultDrainDelay = 5 * time.Second

	// StallChunk is the most a single write may carry under one deadline:
	// a client must take StallChunk bytes within the stall timeout (about
	// 4 KiB/s by default) or be cut.
	StallChunk = 128 << 10

	// overCapHeaderTimeout bounds how long a connection beyond the cap may
	// take to send the request its 503 answers.
	overCapHeaderTimeout = 2 * time.Second
)

// listenerLimits are one listener's limits with the defaults filled in.
type listenerLimits struct {
	name              string // distribution or admin, the metrics' label
	maxConns          int
	maxHeaderBytes    int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	stall             time.Duration
	// dotSegments refuses "." and ".." path segments with 400 (the
	// distribution contract); routers would otherwise see a cleaned or
	// miscounted path.
	dotSegments bool
	// jsonErrors answers the over-cap 503 in the admin API's error format.
	jsonErrors bool
	// cork holds each response's partial TCP segments until the handler
	// returns (TCP_CORK, nginx's tcp_nopush): every response here is a
	// whole file or an error, never a stream a client waits on piece by
	// piece. Without it the client's side receives the body in many small
	// segments as the send buffer drains, and spends half again the CPU
	// per response reading them.
	cork bool
}

func (s *Server) limitsFor(name string) listenerLimits {
	c := s.cfg
	l := listenerLimits{
		name: name, maxConns: c.MaxConnections, maxHeaderBytes: int(c.MaxHeaderBytes),
		readHeaderTimeout: c.ReadHeaderTimeout, idleTimeout: c.IdleTimeout, stall: c.StallTimeout,
		dotSegments: name == "distribution", jsonErrors: name == "admin", cork: name == "distribution",
	}
	defConns := DefaultMaxConnections
	if name == "admin" {
		l.maxConns, defConns = c.AdminMaxConnections, DefaultAdminMaxConnections
	}
	orDefault(&l.maxConns, defConns)
	orDefault(&l.maxHeaderBytes, DefaultMaxHeaderBytes)
	orDefault(&l.readHeaderTimeout, DefaultReadHeaderTimeout)
	orDefault(&l.idleTimeout, DefaultIdleTimeout)
	orDefault(&l.stall, DefaultStallTimeout)
	return l
}

func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// httpMetrics count what the limits do, per listener.
type httpMetrics struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
	stalled *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "uplink_http_connections",
			Help: "Open connections within the listener's cap."}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "uplink_http_connections_refused_total",
			Help: "Connections beyond the listener's cap: answered 503, or closed at once when even those are too many."},
			[]string{"listener", "how"}),
		stalled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "uplink_http_stalled_total",
			Help: "Requests cut because the client took no response bytes, or sent no body bytes, within --stall-timeout."},
			[]string{"listener"}),
	}
	if reg != nil {
		reg.MustRegister(m.open, m.refused, m.stalled)
	}
	return m
}

// newHTTPServer is one listener's http.Server and the listener to serve,
// both bounded by l.
func (s *Server) newHTTPServer(ln net.Listener, h http.Handler, l listenerLimits) (*http.Server, net.Listener) {
	cl := &capListener{Listener: ln, max: int64(l.maxConns), overflow: int64(max(l.maxConns/8, 8)),
		overTimeout: min(l.readHeaderTimeout, overCapHeaderTimeout),
		open:        s.httpm.open.WithLabelValues(l.name), answered: s.httpm.refused.WithLabelValues(l.name, "503"),
		dropped: s.httpm.refused.WithLabelValues(l.name, "closed")}
	srv := &http.Server{
		Handler:           &limitHandler{next: h, l: l, stalled: s.httpm.stalled.WithLabelValues(l.name)},
		MaxHeaderBytes:    l.maxHeaderBytes,
		ReadHeaderTimeout: l.readHeaderTimeout,
		IdleTimeout:       l.idleTimeout,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return srv, cl
}

// capListener caps open connections. Beyond the cap it still accepts a
// few more (overflow), each marked so that its one request is answered
// 503 with Retry-After and the connection closed: a clear answer, where
// not accepting would leave clients waiting in the kernel's backlog until
// they time out. Beyond cap and overflow a connection is closed at once.
// net/http, not a hand-written reply, answers the overflow, so the 503 is
// correct HTTP over TLS too and is flushed before the close.
type capListener struct {
	net.Listener
	max, overflow int64
	overTimeout   time.Duration
	conns, over   atomic.Int64

	open              prometheus.Gauge
	answered, dropped prometheus.Counter
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.conns.Add(1) <= l.max {
			l.open.Inc()
			return &capConn{Conn: c, l: l}, nil
		}
		l.conns.Add(-1)
		if l.over.Add(1) <= l.overflow {
			l.answered.Inc()
			return &capConn{Conn: c, l: l, overUntil: time.Now().Add(l.overTimeout)}, nil
		}
		l.over.Add(-1)
		l.dropped.Inc()
		c.Close()
	}
}

// capConn gives its slot back when closed.
type capConn struct {
	net.Conn
	l *capListener
	// overUntil, set on a connection beyond the cap, bounds every read.
	overUntil time.Time
	closed    atomic.Bool
}

func (c *capConn) overCap() bool { return !c.overUntil.IsZero() }

func (c *capConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		if c.overCap() {
			c.l.over.Add(-1)
		} else {
			c.l.conns.Add(-1)
			c.l.open.Dec()
		}
	}
	return c.Conn.Close()
}

func (c *capConn) clamp(t time.Time) time.Time {
	if c.overCap() && (t.IsZero() || t.After(c.overUntil)) {
		return c.overUntil
	}
	return t
}

func (c *capConn) SetDeadline(t time.Time) error {
	if c.overCap() {
		c.Conn.SetWriteDeadline(t)
		return c.Conn.SetReadDeadline(c.clamp(t))
	}
	return c.Conn.SetDeadline(t)
}

func (c *capConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

// ReadFrom keeps the TCP connection's sendfile for net/http.
func (c *capConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// CloseWrite lets net/http send its FIN before closing, so that a client
// still sending reads the response rather than a reset.
func (c *capConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type writerOnly struct{ io.Writer }

type overCapKey struct{}

type connKey struct{}

// connContext marks a connection beyond the cap and keeps the connection
// in reach of the handler (for cork).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, ok := c.(*capConn)
	if !ok {
		return ctx
	}
	if cc.overCap() {
		ctx = context.WithValue(ctx, overCapKey{}, true)
	}
	return context.WithValue(ctx, connKey{}, cc)
}

// limitHandler applies the per-request limits in front of a listener's
// router.
type limitHandler struct {
	next    http.Handler
	l       listenerLimits
	stalled prometheus.Counter
}

var stallWriters = sync.Pool{New: func() any { return new(stallWriter) }}

func (h *limitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Context().Value(overCapKey{}) != nil {
		h.overCap(w)
		return
	}
	if h.l.dotSegments && dotSegment(r.URL.Path) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "bad request: '.' and '..' are not path segments here\n")
		return
	}
	sw := stallWriters.Get().(*stallWriter)
	*sw = stallWriter{ResponseWriter: w, stall: h.l.stall}
	if d, ok := w.(deadliner); ok {
		sw.dl = d
	}
	defer func() {
		if sw.cut {
			h.stalled.Inc()
		}
		*sw = stallWriter{}
		stallWriters.Put(sw)
	}()
	// The write deadline outlives the request on a kept-alive
	// connection: start each request with a fresh one.
	sw.push()
	if cc, ok := r.Context().Value(connKey{}).(*capConn); ok && h.l.cork {
		// Released before net/http flushes what it still buffers, which
		// then leaves at once.
		setCork(cc.Conn, true)
		defer setCork(cc.Conn, false)
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && sw.dl != nil {
		// Also bounds net/http's read of what the handler left of the body,
		// after it returns. Only with a body: without one, net/http is
		// already reading the connection in the background, and a deadline
		// would end that read and cancel the request.
		sw.dl.SetReadDeadline(time.Now().Add(h.l.stall))
		r.Body = &stallBody{ReadCloser: r.Body, dl: sw.dl, stall: h.l.stall, cut: &sw.cut}
	}
	h.next.ServeHTTP(sw, r)
}

func (h *limitHandler) overCap(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Retry-After", distribution.RetryAfter)
	hdr.Set("Connection", "close")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if h.l.jsonErrors {
		hdr.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":"unavailable","message":"too many connections, try again later"}}`+"\n")
		return
	}
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, "too many connections, try again later\n")
}

// dotSegment reports a "." or ".." segment in a request path. net/http
// leaves them in place and the distribution router would count them as
// path segments, answering 404 where the contract says 400.
func dotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// stallWriter pushes the connection's write deadline forward before each
// piece of a response, so a client that keeps reading, however slowly, is
// served to the end and one that stops reading is cut after the stall
// timeout. It also keeps Last-Modified from passing Date.
type stallWriter struct {
	http.ResponseWriter
	dl      deadliner
	stall   time.Duration
	started bool // the status line and headers are decided
	cut     bool // a write missed its deadline
	lr      io.LimitedReader
}

func (w *stallWriter) push() {
	if w.dl != nil {
		w.dl.SetWriteDeadline(time.Now().Add(w.stall))
	}
}

func (w *stallWriter) start() {
	if !w.started {
		w.started = true
		clampLastModified(w.ResponseWriter.Header())
	}
}

func (w *stallWriter) failed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.cut = true
	}
}

func (w *stallWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.start()
	}
	w.push()
	w.ResponseWriter.WriteHeader(code)
}

func (w *stallWriter) Write(b []byte) (int, error) {
	w.start()
	var n int
	for len(b) > 0 {
		k := min(len(b), StallChunk)
		w.push()
		m, err := w.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			w.failed(err)
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// ReadFrom sends src in StallChunk pieces, each under a fresh deadline,
// keeping net/http's sendfile: the file is handed down in an
// io.LimitedReader directly, which is what the TCP connection unwraps.
func (w *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	w.start()
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.CopyBuffer(writerOnly{w}, src, make([]byte, 32<<10))
	}
	limit := int64(-1)
	outer, _ := src.(*io.LimitedReader)
	if outer != nil {
		limit, src = outer.N, outer.R
	}
	var total int64
	for limit < 0 || total < limit {
		n := int64(StallChunk)
		if limit >= 0 {
			n = min(n, limit-total)
		}
		w.lr = io.LimitedReader{R: src, N: n}
		w.push()
		k, err := rf.ReadFrom(&w.lr)
		total += k
		if err != nil {
			w.failed(err)
			if outer != nil {
				outer.N -= total
			}
			return total, err
		}
		if k < n {
			break // src ended
		}
	}
	if outer != nil {
		outer.N -= total
	}
	w.lr = io.LimitedReader{}
	return total, nil
}

func (w *stallWriter) FlushError() error {
	w.start()
	w.push()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *stallWriter) Flush() { w.FlushError() }

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// clampLastModified keeps Last-Modified at or before Date (RFC 9110
// §8.8.2): a ref's move time is rounded up to the next second, and up
// again past the previous move, so after publishes in quick succession it
// lies ahead of the clock. Only the header is clamped; freshness checks
// keep the true time, so a client never gets a 304 it should not.
func clampLastModified(h http.Header) {
	v := h["Last-Modified"]
	if len(v) != 1 {
		return
	}
	t, ok := parseHTTPDate(v[0])
	// net/http takes Date from the clock after this, so now is never
	// after it.
	if now := time.Now().UTC(); ok && t.After(now) {
		h["Last-Modified"] = []string{now.Format(http.TimeFormat)}
	}
}

// parseHTTPDate reads the IMF-fixdate that http.TimeFormat writes,
// "Mon, 02 Jan 2006 15:04:05 GMT", without time.Parse's allocation of a
// GMT zone: this runs on every response that has a Last-Modified.
func parseHTTPDate(s string) (time.Time, bool) {
	if len(s) != len("Mon, 02 Jan 2006 15:04:05 GMT") || s[3] != ',' || s[25:] != " GMT" {
		return time.Time{}, false
	}
	num := func(a, b int) int {
		n := 0
		for _, c := range []byte(s[a:b]) {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	month := strings.Index("JanFebMarAprMayJunJulAugSepOctNovDec", s[8:11])
	day, year, hh, mm, ss := num(5, 7), num(12, 16), num(17, 19), num(20, 22), num(23, 25)
	if month < 0 || month%3 != 0 || day < 1 || year < 0 || hh < 0 || mm < 0 || ss < 0 {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month/3+1), day, hh, mm, ss, 0, time.UTC), true
}

// stallBody pushes the read deadline forward before each read of a
// request body: an upload that keeps coming is read to the end, one that
// stops for the stall timeout fails.
type stallBody struct {
	io.ReadCloser
	dl    deadliner
	stall time.Duration
	eof   bool
	cut   *bool
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.eof {
		// net/http has started its own read of the connection, with no
		// deadline; a deadline now would end it and cancel the request.
		return 0, io.EOF
	}
	b.dl.SetReadDeadline(time.Now().Add(b.stall))
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		*b.cut = true
	}
	return n, err
}
