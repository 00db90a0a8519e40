package distribution

import (
	"net/url"
	"strings"
)

// RepositoryURL is the line an instance puts in /etc/apk/repositories to
// install app ("<org>/<app>") through ref, served at base (the
// distribution listener's URL). The ref is path-escaped, so a '/' in a
// branch stays in one segment, as ParsePath expects.
func RepositoryURL(base, ref, app string) string {
	return strings.TrimRight(base, "/") + Prefix + url.PathEscape(ref) + "/" + app
}

// IsRepositoryURL reports whether line is a RepositoryURL of app, whatever
// its base and ref.
func IsRepositoryURL(line, app string) bool {
	l := strings.TrimRight(strings.TrimSpace(line), "/")
	return strings.Contains(l, Prefix) && strings.HasSuffix(l, "/"+app)
}
