package distribution

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// MaxPathLength bounds the escaped path after /distribution/.
const MaxPathLength = 2048

// Request is a parsed distribution path, and who asks for it.
type Request struct {
	Ref, Org, App, Arch, File string
	// Client is the address the request came from (set by the handler):
	// what the client-index fallback and the access checks go by.
	Client netip.Addr
}

// Application returns the requested app.
func (r Request) Application() artifact.App { return artifact.App{Org: r.Org, Name: r.App} }

// PathError is a path that names nothing servable; Status is 400 for a
// malformed path, 404 for a well-formed one that cannot exist.
type PathError struct {
	Status int
	Reason string
}

func (e *PathError) Error() string { return e.Reason }

func malformed(reason string) error { return &PathError{Status: http.StatusBadRequest, Reason: reason} }

// ParsePath parses the escaped path that follows "/distribution/":
// "<ref>/<org>/<app>/<arch>/<file>". Each segment is unescaped on its own,
// so a '/' in a branch arrives as %2F and stays in the ref, while a '/'
// decoded anywhere else is refused. '+' is a plus, never a space.
func ParsePath(escaped string) (Request, error) {
	if len(escaped) > MaxPathLength {
		return Request{}, malformed("path too long")
	}
	// Split by hand into a fixed array: this runs on every request.
	var parts [5]string
	n := 0
	for seg := range strings.SplitSeq(escaped, "/") {
		if seg == "" {
			return Request{}, malformed("empty path segment")
		}
		if n < len(parts) {
			parts[n] = seg
		}
		n++
	}
	if n != len(parts) {
		reason := "not found: the path is /distribution/<ref>/<org>/<app>/<arch>/<file>"
		if n > len(parts) {
			reason += " (a '/' in a branch name is sent as %2F)"
		}
		return Request{}, &PathError{Status: http.StatusNotFound, Reason: reason}
	}
	for i, seg := range parts {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return Request{}, malformed("bad percent-encoding in the path")
		}
		parts[i] = u
	}
	r := Request{Ref: parts[0], Org: parts[1], App: parts[2], Arch: parts[3], File: parts[4]}
	if err := ref.ValidName("ref", r.Ref); err != nil {
		return Request{}, malformed(err.Error())
	}
	for _, n := range []struct{ what, v string }{{"org", r.Org}, {"app", r.App}, {"arch", r.Arch}} {
		if err := artifact.ValidName(n.what, n.v); err != nil {
			return Request{}, malformed(err.Error())
		}
	}
	if err := artifact.ValidFile(r.File); err != nil {
		if artifact.ValidName("file", r.File) == nil {
			return Request{}, &PathError{Status: http.StatusNotFound, Reason: err.Error()}
		}
		return Request{}, malformed(err.Error())
	}
	return r, nil
}
