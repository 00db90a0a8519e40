// Package distribution serves APK repositories per git ref: the index and
// packages that apk on every instance fetches.
package distribution

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/cache"
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
	Storage storage.Getter
	Refs    ref.Resolver
	Indexes *cache.Blobs
	// Allow, when not empty, admits only clients whose address is in one
	// of these prefixes.
	Allow []netip.Prefix
	// Authorize, when set, decides per app whether a client may fetch
	// (e.g. only instances leased an address in the app's Incus project).
	// It returns ErrForbidden to refuse; any other error answers 503.
	Authorize func(ctx context.Context, app artifact.App, client netip.Addr) error
	// Clients, when set, remembers which commit's index each client got
	// through a branch, and packages asked for through the branch come
	// from that commit first.
	Clients *ClientIndexes
	// StorageTimeout bounds each storage wait of a response: to the first
	// byte, then per read (DefaultStorageTimeout when zero).
	StorageTimeout time.Duration
	// MaxRanges bounds the ranges of one request, once coalesced
	// (DefaultMaxRanges when zero); beyond it the whole file is answered.
	MaxRanges  int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler serves /distribution/.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	aborted  *prometheus.CounterVec
	series   sync.Map // requestLabels → prometheus.Counter
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StorageTimeout <= 0 {
		cfg.StorageTimeout = DefaultStorageTimeout
	}
	if cfg.MaxRanges <= 0 {
		cfg.MaxRanges = DefaultMaxRanges
	}
	h := &Handler{
		cfg: cfg,
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
	*rw = responseWriter{ResponseWriter: c.Response().Writer}
	fileKind, refKind := "invalid", ref.Kind("none")
	defer func() {
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		c.Response().Status, c.Response().Size, c.Response().Committed = status, rw.written, true
		if rw.aborted {
			status = codeAborted
		}
		h.observe(fileKind, refKind, status, rw.written, time.Since(start))
		*rw = responseWriter{}
		writers.Put(rw)
	}()
	r := c.Request()
	if r.ProtoAtLeast(1, 1) && !r.Close {
		// apk reuses a connection only when told so explicitly.
		rw.Header()["Connection"] = hdrKeepAlive
	}
	addr, ok := h.admit(rw, c)
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
	if !h.authorized(rw, r, req.Application(), addr) {
		return nil
	}
	fileKind = "package"
	if artifact.IsIndex(req.File) {
		fileKind = "index"
	}

	ctx := r.Context()
	res, err := h.cfg.Refs.Resolve(ctx, req.Application(), req.Ref)
	if err != nil {
		h.fail(rw, r, err, "unknown app or ref: "+req.Ref)
		return nil
	}
	refKind = res.Kind
	if fileKind == "index" {
		h.serveIndex(rw, r, req, res, addr)
	} else {
		h.servePackage(rw, r, req, res, h.clientCommit(ctx, addr, req, res))
	}
	return nil
}

func cacheControl(res ref.Resolution) []string {
	if res.Immutable() {
		return hdrImmutable
	}
	return hdrNoCache
}

// indexHeaders are an index response's headers for one resolution,
// computed once and kept with the blob.
type indexHeaders struct {
	etag, length, commit, lastModified []string
	modified                           time.Time
}

type indexHeadersKey struct {
	commit   string
	modified int64
}

func headersFor(blob *cache.Blob, res ref.Resolution) *indexHeaders {
	k := indexHeadersKey{res.Commit, res.Modified.UnixNano()}
	if v, ok := blob.Memo.Load(k); ok {
		return v.(*indexHeaders)
	}
	ih := &indexHeaders{
		etag: []string{blob.ETag}, length: []string{strconv.Itoa(len(blob.Data))}, commit: []string{res.Commit},
		lastModified: []string{res.Modified.UTC().Format(http.TimeFormat)}, modified: res.Modified,
	}
	v, _ := blob.Memo.LoadOrStore(k, ih)
	return v.(*indexHeaders)
}

func (h *Handler) serveIndex(w *responseWriter, r *http.Request, req Request, res ref.Resolution, client netip.Addr) {
	key := cache.BlobKey{App: req.Application(), Commit: res.Commit, Arch: req.Arch, File: req.File}
	blob, err := h.cfg.Indexes.Get(r.Context(), key)
	if errors.Is(err, errTooLarge) {
		if h.servePackage(w, r, req, res, "") == res.Commit {
			h.received(r, req, res, client, w.status)
		}
		return
	}
	if err != nil {
		h.fail(w, r, err, "no "+req.Arch+" repository in commit "+res.Commit)
		return
	}
	ih := headersFor(blob, res)
	hdr := w.Header()
	hdr["X-Uplink-Commit"] = ih.commit
	hdr["Cache-Control"] = cacheControl(res)
	hdr["Content-Type"] = hdrGzip
	hdr["Etag"] = ih.etag
	// Last-Modified is when the ref moved to this commit, never the file's
	// time: apk compares it with when it downloaded its copy.
	if !simple(r) {
		limitRanges(r, int64(len(blob.Data)), h.cfg.MaxRanges)
		http.ServeContent(w, r, "", res.Modified, bytes.NewReader(blob.Data))
		h.received(r, req, res, client, w.status)
		return
	}
	hdr["Last-Modified"] = ih.lastModified
	// Recorded before answering: the client's next request, for a package,
	// may reach another replica right after.
	if notModified(r, ih.modified) {
		h.received(r, req, res, client, http.StatusNotModified)
		delete(hdr, "Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr["Content-Length"] = ih.length
	h.received(r, req, res, client, http.StatusOK)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(blob.Data)
	}
}

// received records the commit of an index a client got through a branch:
// a 200, or a 304, which leaves the client with its copy of the branch's
// current commit since a branch's move times strictly increase. A HEAD
// gives the client no index.
func (h *Handler) received(r *http.Request, req Request, res ref.Resolution, client netip.Addr, status int) {
	if h.cfg.Clients == nil || res.Kind != ref.KindBranch || r.Method != http.MethodGet ||
		(status != http.StatusOK && status != http.StatusNotModified) {
		return
	}
	h.cfg.Clients.Received(r.Context(), client, req.Application(), req.Ref, res.Commit)
}

// clientCommit is the commit a package asked for through a branch is
// served from first: the one whose index the client last received through
// the branch, when that is not the current commit and is still within the
// branch's fallback window (so a published build of this app's branch).
func (h *Handler) clientCommit(ctx context.Context, client netip.Addr, req Request, res ref.Resolution) string {
	c := h.cfg.Clients
	// Without earlier commits, or when the branch moved longer ago than
	// any client remembers, the current commit is every client's.
	if c == nil || res.Kind != ref.KindBranch || len(res.Fallback) == 0 || time.Since(res.Modified) > c.Horizon() {
		return ""
	}
	commit := c.Commit(ctx, client, req.Application(), req.Ref)
	if commit == "" || commit == res.Commit {
		return ""
	}
	if !slices.Contains(res.Fallback, commit) {
		c.hitOutOfRange.Inc()
		return ""
	}
	return commit
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

var errTooLarge = errors.New("index too large to hold in memory")

// LoadIndex reads an index into memory for the index cache. Storage has
// timeout to answer, and as long again for each read after that
// (DefaultStorageTimeout when zero); the cache answers the requests waiting
// on a load that failed 503, while indexes already cached keep being
// served.
func LoadIndex(s storage.Getter, timeout time.Duration) cache.Loader {
	if timeout <= 0 {
		timeout = DefaultStorageTimeout
	}
	return func(ctx context.Context, key cache.BlobKey) (*cache.Blob, error) {
		g := newGuard(ctx, timeout)
		defer g.stop()
		obj, err := g.open(s, key.String())
		if err != nil {
			return nil, err
		}
		defer obj.Close()
		info := obj.Info()
		if info.Size > MaxIndexSize {
			return nil, errTooLarge
		}
		data := make([]byte, info.Size)
		for n := 0; n < len(data); {
			m, err := g.read(obj, data[n:])
			n += m
			if err == io.EOF && n < len(data) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && err != io.EOF {
				return nil, fmt.Errorf("reading %s: %w", key, err)
			}
		}
		sum := sha256.Sum256(data)
		return &cache.Blob{Data: data, ETag: `"` + hex.EncodeToString(sum[:16]) + `"`, ModTime: info.ModTime}, nil
	}
}

// servePackage answers a file from first (when not empty, see
// clientCommit), else from the current commit, else from the newest
// earlier commit of the branch that has it. It returns the commit that
// answered, "" if none did.
//
// Storage gets the storage timeout to the first byte (every Open of the
// fallback chain and the first read together), which is read before the
// headers so that storage that stops answering gets a 503, then the same
// timeout per read; a failure after the headers aborts the response.
func (h *Handler) servePackage(w *responseWriter, r *http.Request, req Request, res ref.Resolution, first string) string {
	g := newGuard(r.Context(), h.cfg.StorageTimeout)
	defer g.stop()
	app := req.Application()
	var obj storage.Object
	var err error
	commit := first
	if first != "" {
		obj, err = g.open(h.cfg.Storage, artifact.Key(app, first, req.Arch, req.File))
		if err == nil {
			h.cfg.Clients.hitServed.Inc()
		} else if storage.IsNotFound(err) {
			h.cfg.Clients.hitMissing.Inc()
		}
	}
	if first == "" || storage.IsNotFound(err) {
		commit = res.Commit
		obj, err = g.open(h.cfg.Storage, artifact.Key(app, commit, req.Arch, req.File))
	}
	// The branch moved between the client's index and this request: the
	// package is still in an earlier commit of the branch.
	for _, c := range res.Fallback {
		if !storage.IsNotFound(err) {
			break
		}
		if c == first {
			continue
		}
		commit = c
		obj, err = g.open(h.cfg.Storage, artifact.Key(app, commit, req.Arch, req.File))
	}
	notFound := "no " + req.Arch + "/" + req.File + " in commit " + res.Commit
	if err != nil {
		h.fail(w, r, err, notFound)
		return ""
	}
	o := &guardedObject{g: g, obj: obj}
	defer o.close()
	info := obj.Info()
	hdr := w.Header()
	hdr["X-Uplink-Commit"] = []string{commit}
	hdr["Cache-Control"] = cacheControl(res)
	hdr["Content-Type"] = hdrOctets
	hdr["Etag"] = []string{strconv.Quote(commit[:12] + "-" + info.ETag)}
	limitRanges(r, info.Size, h.cfg.MaxRanges)
	if f, ok := obj.(interface{ File() *os.File }); ok {
		// A local file, sent by sendfile: no remote storage to wait on.
		g.stop()
		http.ServeContent(w, r, "", info.ModTime, f.File()) // net/http uses sendfile
		return commit
	}
	if !simple(r) {
		http.ServeContent(w, r, "", info.ModTime, o)
		if err := o.failed(); err != nil && r.Context().Err() == nil {
			if w.status == 0 {
				h.fail(w, r, err, notFound)
				return ""
			}
			h.abort(w, r, req, err)
		}
		return commit
	}
	// A remote object: copied with a larger buffer than io.Copy's, which
	// halves the read and write system calls per package.
	hdr["Accept-Ranges"] = hdrBytes
	hdr["Last-Modified"] = []string{info.ModTime.UTC().Format(http.TimeFormat)}
	if notModified(r, info.ModTime) {
		delete(hdr, "Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return commit
	}
	var buf []byte
	n, rerr := 0, error(nil)
	if r.Method != http.MethodHead && info.Size > 0 {
		b := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(b)
		buf = *b
		for n == 0 && rerr == nil {
			n, rerr = o.Read(buf)
		}
		if rerr != nil && rerr != io.EOF {
			h.fail(w, r, rerr, notFound)
			return ""
		}
	}
	hdr["Content-Length"] = []string{strconv.FormatInt(info.Size, 10)}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead || info.Size == 0 {
		return commit
	}
	sent := int64(0)
	for {
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return commit // the client went away or stopped reading
			}
			sent += int64(n)
		}
		if rerr != nil {
			break
		}
		n, rerr = o.Read(buf)
	}
	if rerr == io.EOF && sent == info.Size || r.Context().Err() != nil {
		return commit
	}
	if rerr == io.EOF {
		rerr = fmt.Errorf("storage: %w after %d of %d bytes", io.ErrUnexpectedEOF, sent, info.Size)
	}
	h.abort(w, r, req, rerr)
	return commit
}

// CopyBuffer is the buffer size of package copies from remote storage:
// larger means fewer system calls, and this much memory per download.
const CopyBuffer = 64 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, CopyBuffer); return &b }}

// fail answers 404 for what does not exist and 503 when storage cannot say.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error, notFound string) {
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
		"method", r.Method, "path", r.URL.Path, "sent", w.written, "reason", reason, "err", err)
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
// outside the allow-list. It returns the client's address.
func (h *Handler) admit(w http.ResponseWriter, c echo.Context) (netip.Addr, bool) {
	if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		plain(w, http.StatusMethodNotAllowed, "method not allowed")
		return netip.Addr{}, false
	}
	addr, ok := h.allowed(c)
	if !ok {
		plain(w, http.StatusForbidden, "forbidden")
	}
	return addr, ok
}

// authorized asks Config.Authorize whether client may fetch app's files,
// answering 403 for a refusal and 503 when it cannot tell.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request, app artifact.App, client netip.Addr) bool {
	if h.cfg.Authorize == nil {
		return true
	}
	err := h.cfg.Authorize(r.Context(), app, client)
	if errors.Is(err, ErrForbidden) {
		plain(w, http.StatusForbidden, "forbidden")
		return false
	}
	if err != nil {
		h.log.Error("distribution: cannot decide access", "path", r.URL.Path, "client", client.String(), "err", err)
		w.Header().Set("Retry-After", RetryAfter)
		plain(w, http.StatusServiceUnavailable, "cannot check access now, try again later")
		return false
	}
	return true
}

// ErrForbidden is what Config.Authorize returns to refuse a client.
var ErrForbidden = errors.New("forbidden")

// allowed checks the client's address against the allow-list.
func (h *Handler) allowed(c echo.Context) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	addr = addr.Unmap()
	if len(h.cfg.Allow) == 0 {
		return addr, true
	}
	for _, p := range h.cfg.Allow {
		if p.Contains(addr) {
			return addr, true
		}
	}
	return addr, false
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

// responseWriter records the status and body size while keeping the
// underlying writer's ReadFrom, which is what gives sendfile.
type responseWriter struct {
	http.ResponseWriter
	status  int
	written int64
	aborted bool // cut after the headers (Handler.abort)
}

// codeAborted is the status recorded for an aborted response: it is
// counted as code "aborted", never as the 200 its headers said.
const codeAborted = -1

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(w.ResponseWriter, src)
	}
	w.written += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
