package distribution

import (
	"context"
	"net/http"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// DefaultRedirectExpiry is how long a presigned URL of a redirect stays
// valid: long enough for apk to follow it, short enough that a URL
// copied out of a log is soon useless.
const DefaultRedirectExpiry = 5 * time.Minute

// Redirect makes the handler answer package requests with a 302 to a
// presigned URL of the object (S3's, where instances reach the object
// store), the way distribution/distribution's storage redirect works: the
// bytes go from the object store to the client, not through uplink.
// Never 307/308: apk fails on those. Indexes are still served by the
// handler (they are small and cached in memory).
type Redirect struct {
	// Packages finds the commit whose file answers, with the client-index
	// and branch fallbacks: Fallbacks over the storage-backed
	// Repositories, with no cache under it, so that the local artifact
	// cache neither reads nor fills for a request that is redirected. Only
	// its Package is called, and the object it opens is never read.
	Packages interface {
		Package(ctx context.Context, req Request, res ref.Resolution) (*Package, error)
	}
	// Presigner signs the URL of the object: the storage driver itself,
	// not a wrapper of it.
	Presigner storage.Presigner
	// Expiry is how long the URL is valid (DefaultRedirectExpiry when
	// zero).
	Expiry time.Duration
	// Timeout bounds the signing, which may ask the server for the
	// bucket's region once (DefaultStorageTimeout when zero).
	Timeout time.Duration
}

var hdrNoStore = []string{"no-store"}

// redirect answers a package request with 302 Found to a presigned URL
// of the object of the commit that answers (see Fallbacks.Package),
// GET and HEAD alike. Access was checked before (Admit, Resolve). The
// answer carries X-Uplink-Commit and Cache-Control: no-store (the URL
// expires), and no body.
func (h *Handler) redirect(w *responseWriter, r *http.Request, req Request, res ref.Resolution) {
	rd := h.cfg.Redirect
	notFound := "no " + req.Arch + "/" + req.File + " in commit " + res.Commit
	pkg, err := rd.Packages.Package(r.Context(), req, res)
	if err != nil {
		h.fail(w, r, err, notFound)
		return
	}
	commit := pkg.Commit
	pkg.Close()
	timeout, expiry := rd.Timeout, rd.Expiry
	if timeout <= 0 {
		timeout = DefaultStorageTimeout
	}
	if expiry <= 0 {
		expiry = DefaultRedirectExpiry
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	u, err := rd.Presigner.PresignGet(ctx, artifact.Key(req.Application(), commit, req.Arch, req.File), expiry)
	cancel()
	if err != nil {
		h.fail(w, r, err, notFound)
		return
	}
	hdr := w.Header()
	hdr["X-Uplink-Commit"] = []string{commit}
	hdr["Cache-Control"] = hdrNoStore
	hdr["Location"] = []string{u.String()}
	hdr["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusFound)
}
