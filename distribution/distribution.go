// Package distribution serves APK repositories per git ref: the index and
// packages that apk on every instance fetches.
//
// Protocol is the read side that the HTTP handlers (this file, keys.go)
// call; Repositories answers it from storage, and decorators wrap it:
// Access here, the index cache in distribution/cache. Publisher (Builds)
// is the write side that the admin API calls.
package distribution

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Prefix is where the repositories are mounted.
const Prefix = "/distribution/"

// MaxIndexSize bounds an index held in memory; a larger one is streamed
// from storage like a package.
const MaxIndexSize = 64 << 20

// RetryAfter is what a 503 asks clients to wait, in seconds.
const RetryAfter = "5"

// Config wires a Handler.
type Config struct {
	// Protocol answers the requests: Repositories, decorated.
	Protocol Protocol
	// MaxRanges bounds the ranges of one request, once coalesced
	// (DefaultMaxRanges when zero); beyond it the whole file is answered.
	MaxRanges int
	// Redirect, when set, answers package requests with a 302 to a
	// presigned URL instead of their bytes (see Redirect).
	Redirect   *Redirect
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler serves /distribution/ and /keys/: it parses the path, admits
// the client, asks the Protocol, and writes the headers and the body.
type Handler struct {
	cfg      Config
	p        Protocol
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	aborted  *prometheus.CounterVec
	series   sync.Map // requestLabels → prometheus.Counter
	// lastModified holds formatted Last-Modified values by time: a ref's
	// time is the same on every request until it moves.
	lastModified *lru.Cache[int64, []string]
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRanges <= 0 {
		cfg.MaxRanges = DefaultMaxRanges
	}
	lastModified, _ := lru.New[int64, []string](4096)
	h := &Handler{
		cfg: cfg,
		p:   cfg.Protocol,
		log: cfg.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_distribution_requests_total",
			Help: "Distribution requests by file kind (index, package, invalid), ref kind and status code; code \"aborted\" for a response cut after its headers (see uplink_distribution_aborted_total).",
		}, []string{"file", "ref_kind", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "uplink_distribution_request_duration_seconds",
			Help:    "Time to answer a distribution request, to the last byte.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"file"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_distribution_bytes_total",
			Help: "Body bytes sent by distribution responses.",
		}, []string{"file"}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_distribution_aborted_total",
			Help: "Responses aborted after their headers because storage failed mid-body, by file kind and reason (timeout, error): the client saw a cut connection.",
		}, []string{"file", "reason"}),
		lastModified: lastModified,
	}
	// Export zeros, so an alert on the rate works before the first abort.
	for _, file := range []string{"index", "package"} {
		for _, reason := range []string{"timeout", "error"} {
			h.aborted.WithLabelValues(file, reason)
		}
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(h.requests, h.duration, h.bytes, h.aborted)
	}
	return h
}

// Register mounts the handler on e.
func (h *Handler) Register(e *echo.Echo) {
	e.Any(Prefix+"*", h.Serve)
}

// Shared, never modified header values: assigning them costs no
// allocation on the hot path.
var (
	hdrKeepAlive = []string{"keep-alive"}
	hdrImmutable = []string{"public, max-age=31536000, immutable"}
	hdrNoCache   = []string{"no-cache"}
	hdrGzip      = []string{"application/gzip"}
	hdrOctets    = []string{"application/octet-stream"}
	hdrBytes     = []string{"bytes"}
)

var writers = sync.Pool{New: func() any { return new(responseWriter) }}

// Serve answers one distribution request.
func (h *Handler) Serve(c echo.Context) error {
	start := time.Now()
	rw := writers.Get().(*responseWriter)
	*rw = responseWriter{Response: c.Response()}
	fileKind, refKind := "invalid", ref.Kind("none")
	defer func() {
		status := rw.Status
		if rw.aborted {
			status = codeAborted
		}
		h.observe(fileKind, refKind, status, rw.Size, time.Since(start))
		*rw = responseWriter{}
		writers.Put(rw)
	}()
	r := c.Request()
	if r.ProtoAtLeast(1, 1) && !r.Close {
		// apk reuses a connection only when told so explicitly.
		rw.Header()["Connection"] = hdrKeepAlive
	}
	addr, ok := h.admit(rw, r)
	if !ok {
		return nil
	}
	req, err := ParsePath(r.URL.EscapedPath()[len(Prefix):])
	if err != nil {
		var pe *PathError
		errors.As(err, &pe)
		plain(rw, pe.Status, pe.Reason)
		return nil
	}
	req.Client = addr
	res, err := h.p.Resolve(r.Context(), req)
	if h.refused(rw, r, err) {
		return nil
	}
	fileKind = "package"
	if artifact.IsIndex(req.File) {
		fileKind = "index"
	}
	if err != nil {
		h.fail(rw, r, err, "unknown app or ref: "+req.Ref)
		return nil
	}
	refKind = res.Kind
	if fileKind == "index" {
		h.serveIndex(rw, r, req, res)
	} else if h.cfg.Redirect != nil {
		h.redirect(rw, r, req, res)
	} else {
		h.servePackage(rw, r, req, res)
	}
	return nil
}

func cacheControl(res ref.Resolution) []string {
	if res.Immutable() {
		return hdrImmutable
	}
	return hdrNoCache
}

func (h *Handler) serveIndex(w *responseWriter, r *http.Request, req Request, res ref.Resolution) {
	idx, err := h.p.Index(r.Context(), req, res)
	if errors.Is(err, ErrIndexTooLarge) {
		if h.servePackage(w, r, req, res) == res.Commit {
			h.received(r, req, res, w.Status)
		}
		return
	}
	if err != nil {
		h.fail(w, r, err, "no "+req.Arch+" repository in commit "+res.Commit)
		return
	}
	hdr := w.Header()
	hdr["X-Uplink-Commit"] = idx.commit
	hdr["Cache-Control"] = cacheControl(res)
	hdr["Content-Type"] = hdrGzip
	hdr["Etag"] = idx.etag
	// Last-Modified is when the ref moved to this commit, never the file's
	// time: apk compares it with when it downloaded its copy.
	if !simple(r) {
		limitRanges(r, int64(len(idx.Data)), h.cfg.MaxRanges)
		http.ServeContent(w, r, "", res.Modified, bytes.NewReader(idx.Data))
		h.received(r, req, res, w.Status)
		return
	}
	hdr["Last-Modified"] = h.lastModifiedHeader(res.Modified)
	// Recorded before answering: the client's next request, for a package,
	// may reach another replica right after.
	if notModified(r, res.Modified) {
		h.received(r, req, res, http.StatusNotModified)
		delete(hdr, "Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr["Content-Length"] = idx.length
	h.received(r, req, res, http.StatusOK)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if r.TLS == nil { // TLS encrypts in user space: no sendfile
		if f := idx.open(); f != nil {
			defer idx.done(f)
			io.Copy(w, f) // sendfile
			return
		}
	}
	w.Write(idx.Data)
}

// received tells the Protocol that a client got an index: a 200, or a
// 304, which leaves the client with its copy of the branch's current
// commit since a branch's move times strictly increase. A HEAD gives the
// client no index.
func (h *Handler) received(r *http.Request, req Request, res ref.Resolution, status int) {
	if res.Kind != ref.KindBranch || r.Method != http.MethodGet ||
		(status != http.StatusOK && status != http.StatusNotModified) {
		return
	}
	h.p.Received(r.Context(), req, res)
}

// lastModifiedHeader formats t for Last-Modified, once per second of t.
func (h *Handler) lastModifiedHeader(t time.Time) []string {
	k := t.Unix()
	if v, ok := h.lastModified.Get(k); ok {
		return v
	}
	v := []string{t.UTC().Format(http.TimeFormat)}
	h.lastModified.Add(k, v)
	return v
}

// simple reports a request that needs no more than If-Modified-Since,
// which is all apk sends; anything else goes through http.ServeContent.
func simple(r *http.Request) bool {
	h := r.Header
	return h["Range"] == nil && h["If-None-Match"] == nil && h["If-Match"] == nil &&
		h["If-Unmodified-Since"] == nil && h["If-Range"] == nil
}

// notModified is http.ServeContent's If-Modified-Since rule.
func notModified(r *http.Request, modified time.Time) bool {
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" || modified.IsZero() || modified.Equal(time.Unix(0, 0)) {
		return false
	}
	t, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	return !modified.Truncate(time.Second).After(t)
}

// servePackage answers a file the Protocol opens (see
// Repositories.Package). It returns the commit that answered, "" if none
// did. A failure after the headers aborts the response.
func (h *Handler) servePackage(w *responseWriter, r *http.Request, req Request, res ref.Resolution) string {
	notFound := "no " + req.Arch + "/" + req.File + " in commit " + res.Commit
	pkg, err := h.p.Package(r.Context(), req, res)
	if err != nil {
		h.fail(w, r, err, notFound)
		return ""
	}
	defer pkg.Close()
	hdr := w.Header()
	hdr["X-Uplink-Commit"] = []string{pkg.Commit}
	hdr["Cache-Control"] = cacheControl(res)
	hdr["Content-Type"] = hdrOctets
	hdr["Etag"] = []string{pkg.ETag}
	limitRanges(r, pkg.Size, h.cfg.MaxRanges)
	if f := pkg.File(); f != nil {
		http.ServeContent(w, r, "", pkg.ModTime, f) // net/http uses sendfile
		return pkg.Commit
	}
	if !simple(r) {
		http.ServeContent(w, r, "", pkg.ModTime, pkg)
		if err := pkg.Err(); err != nil && r.Context().Err() == nil {
			if !w.Committed {
				h.fail(w, r, err, notFound)
				return ""
			}
			h.abort(w, r, req, err)
		}
		return pkg.Commit
	}
	return h.copyPackage(w, r, req, pkg, notFound)
}

// copyPackage answers a remote object to a simple request. The first
// byte is read before the headers, so that storage that stops answering
// gets a 503. The copy has a larger buffer than io.Copy's, which halves
// the read and write system calls per package.
func (h *Handler) copyPackage(w *responseWriter, r *http.Request, req Request, pkg *Package, notFound string) string {
	hdr := w.Header()
	hdr["Accept-Ranges"] = hdrBytes
	hdr["Last-Modified"] = h.lastModifiedHeader(pkg.ModTime)
	if notModified(r, pkg.ModTime) {
		delete(hdr, "Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return pkg.Commit
	}
	var buf []byte
	n, rerr := 0, error(nil)
	if r.Method != http.MethodHead && pkg.Size > 0 {
		b := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(b)
		buf = *b
		for n == 0 && rerr == nil {
			n, rerr = pkg.Read(buf)
		}
		if rerr != nil && rerr != io.EOF {
			h.fail(w, r, rerr, notFound)
			return ""
		}
	}
	hdr["Content-Length"] = []string{strconv.FormatInt(pkg.Size, 10)}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead || pkg.Size == 0 {
		return pkg.Commit
	}
	sent := int64(0)
	for {
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return pkg.Commit // the client went away or stopped reading
			}
			sent += int64(n)
		}
		if rerr != nil {
			break
		}
		if s := pkg.sender(); s != nil {
			sw := &sendWriter{responseWriter: w}
			k, err := s.SendTo(sw)
			sent += k
			if sw.err != nil {
				return pkg.Commit
			}
			if rerr = err; rerr == nil {
				rerr = io.EOF
			}
			break
		}
		n, rerr = pkg.Read(buf)
	}
	if rerr == io.EOF && sent == pkg.Size || r.Context().Err() != nil {
		return pkg.Commit
	}
	if rerr == io.EOF {
		rerr = fmt.Errorf("storage: %w after %d of %d bytes", io.ErrUnexpectedEOF, sent, pkg.Size)
	}
	h.abort(w, r, req, rerr)
	return pkg.Commit
}

// sendWriter tells a Sender's failures to write to the client from its
// own.
type sendWriter struct {
	*responseWriter
	err error
}

func (w *sendWriter) Write(p []byte) (int, error) {
	n, err := w.responseWriter.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

func (w *sendWriter) ReadFrom(src io.Reader) (int64, error) {
	// A Sender hands over a local file (the fill's temporary): an error
	// here is the client's.
	n, err := w.responseWriter.ReadFrom(src)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// CopyBuffer is the buffer size of package copies from remote storage:
// larger means fewer system calls, and this much memory per download.
const CopyBuffer = 64 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, CopyBuffer); return &b }}

// fail answers 404 for what does not exist and 503 when storage cannot say.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	if h.refused(w, r, err) {
		return
	}
	if errors.Is(err, ref.ErrNotFound) || storage.IsNotFound(err) {
		plain(w, http.StatusNotFound, notFound)
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	h.log.Error("distribution: storage unavailable", "id", requestID(w, r), "path", r.URL.Path,
		"timeout", errors.Is(err, ErrStorageTimeout), "err", err)
	w.Header().Set("Retry-After", RetryAfter)
	plain(w, http.StatusServiceUnavailable, "storage unavailable, try again later")
}

// refused answers an access check's refusal 403, and 503 when it cannot
// tell; it reports whether err was one.
func (h *Handler) refused(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrUndecided):
		client, _ := clientAddr(r)
		h.log.Error("distribution: cannot decide access", "path", r.URL.Path, "client", client.String(), "err", err)
		w.Header().Set("Retry-After", RetryAfter)
		plain(w, http.StatusServiceUnavailable, "cannot check access now, try again later")
	case errors.Is(err, ErrForbidden):
		plain(w, http.StatusForbidden, "forbidden")
	default:
		return false
	}
	return true
}

// abort ends a response whose headers are sent when storage fails
// mid-body: net/http closes the connection without completing the body
// (short of its Content-Length, or without the last chunk), so the client
// sees a failed download rather than a complete-looking truncated one.
// Echo's Recover middleware re-panics http.ErrAbortHandler and net/http
// logs nothing for it: the line here is the record, with the request id
// the client got in X-Request-Id.
func (h *Handler) abort(w *responseWriter, r *http.Request, req Request, err error) {
	file, reason := "package", "error"
	if artifact.IsIndex(req.File) {
		file = "index"
	}
	if errors.Is(err, ErrStorageTimeout) {
		reason = "timeout"
	}
	h.aborted.WithLabelValues(file, reason).Inc()
	h.log.Error("distribution: storage failed mid-body, response aborted", "id", requestID(w, r),
		"method", r.Method, "path", r.URL.Path, "sent", w.Size, "reason", reason, "err", err)
	w.aborted = true
	panic(http.ErrAbortHandler)
}

// requestID is the id of the request (Echo's RequestID middleware sets the
// response header; a client may send its own).
func requestID(w http.ResponseWriter, r *http.Request) string {
	if id := w.Header().Get(echo.HeaderXRequestID); id != "" {
		return id
	}
	return r.Header.Get(echo.HeaderXRequestID)
}

// admit answers what every request of this listener is refused for
// before its path is read: a method other than GET or HEAD, an address
// the Protocol does not admit. It returns the client's address.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (netip.Addr, bool) {
	if m := r.Method; m != http.MethodGet && m != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		plain(w, http.StatusMethodNotAllowed, "method not allowed")
		return netip.Addr{}, false
	}
	addr, ok := clientAddr(r)
	if !ok || h.p.Admit(addr) != nil {
		plain(w, http.StatusForbidden, "forbidden")
		return addr, false
	}
	return addr, true
}

// clientAddr is the address the request came from.
func clientAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

func plain(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	for _, k := range []string{"ETag", "Last-Modified", "Cache-Control", "X-Uplink-Commit", "Content-Length", "Accept-Ranges"} {
		h.Del(k)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// responseWriter is Echo's response, so that Echo and its middleware see
// the status and size as usual, with a ReadFrom: Echo's has none, and
// net/http's is what gives sendfile.
type responseWriter struct {
	*echo.Response
	aborted bool // cut after the headers (Handler.abort)
}

// codeAborted is the status recorded for an aborted response: it is
// counted as code "aborted", never as the 200 its headers said.
const codeAborted = -1

func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.Writer.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w.Response}, src)
	}
	if !w.Committed {
		w.WriteHeader(http.StatusOK)
	}
	n, err := rf.ReadFrom(src)
	w.Size += n // what Echo's Write would have counted
	return n, err
}

type requestLabels struct {
	file string
	kind ref.Kind
	code int
}

// observe records a request; the labelled series are looked up once and
// kept, since WithLabelValues costs on every call.
func (h *Handler) observe(file string, kind ref.Kind, code int, written int64, took time.Duration) {
	k := requestLabels{file, kind, code}
	c, ok := h.series.Load(k)
	if !ok {
		label := strconv.Itoa(code)
		if code == codeAborted {
			label = "aborted"
		}
		c, _ = h.series.LoadOrStore(k, h.requests.WithLabelValues(file, string(kind), label))
	}
	c.(prometheus.Counter).Inc()
	h.duration.WithLabelValues(file).Observe(took.Seconds())
	if written > 0 {
		h.bytes.WithLabelValues(file).Add(float64(written))
	}
}
