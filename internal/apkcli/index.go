package apkcli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chainguard-dev/go-apk/pkg/apk"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Index cache ages (apk-protocol.md §7.2).
const (
	// defaultCacheMaxAge is apk-tools' cache_max_age (src/database.c),
	// also what `--cache-max-age 0` and plain `apk update` get in 2.14.10.
	defaultCacheMaxAge = 4 * time.Hour
	// updateCacheMaxAge is what -U/--update-cache sets; apk-tools 2.x
	// src/apk.c: "Make it one minute, to avoid updating indexes twice".
	updateCacheMaxAge = time.Minute
)

// maxDownload bounds what one index or package download may hold in memory.
const maxDownload = 512 << 20

// repoIndex is one repository's verified index.
type repoIndex struct {
	url         string // base URL, no trailing slash
	description string
	packages    []*apk.Package
}

// repository is one line of /etc/apk/repositories (or -X).
type repository struct {
	raw string // as written: apk-tools names the cache file after it
	url string // without a trailing slash
}

// repositories returns /etc/apk/repositories (one per line; blank lines
// and # comments ignored; a leading @tag is dropped) followed by -X ones.
func (c *cli) repositories() ([]repository, error) {
	var lines []string
	b, err := os.ReadFile(rootPath(c.opts.root, "etc/apk/repositories"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		lines = append(lines, f[len(f)-1])
	}
	var repos []repository
	for _, r := range append(lines, c.opts.repos...) {
		repos = append(repos, repository{raw: r, url: strings.TrimRight(r, "/")})
	}
	return repos, nil
}

// keys returns the trusted public keys by file name. apk-tools opens the
// key a signature entry names as <keys-dir>/<name>, so only the exact file
// name counts (apk-protocol.md §5, src/package.c); a file that is not an
// SPKI RSA public key is no key (PEM_read_bio_PUBKEY fails on it).
func (c *cli) keys() (map[string]*rsa.PublicKey, error) {
	dir := rootPath(c.opts.root, "etc/apk/keys")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	keys := map[string]*rsa.PublicKey{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if k, err := artifact.ParsePublicKey(b); err == nil {
			keys[e.Name()] = k
		} else if c.opts.verbose {
			c.warnf("%s: not a usable key: %v", e.Name(), err)
		}
	}
	return keys, nil
}

// cacheFile is where the index of repo is cached: APKINDEX.<first 4 bytes
// of the SHA-1 of the repository URL, hex>.tar.gz (apk-protocol.md §7.2,
// src/database.c apk_repo_format_cache_index).
func (c *cli) cacheFile(repo repository) string {
	sum := sha1.Sum([]byte(repo.raw))
	return rootPath(c.opts.root, "var/cache/apk/APKINDEX."+hex.EncodeToString(sum[:4])+".tar.gz")
}

// cacheMaxAge is how old a cached index may be and still be used.
func (c *cli) cacheMaxAge() time.Duration {
	if c.opts.cacheMaxAge > 0 {
		return c.opts.cacheMaxAge
	}
	return defaultCacheMaxAge
}

// loaded is what loading the indexes found.
type loaded struct {
	indexes     []*repoIndex
	unavailable int // repositories without a usable index
	stale       int // refresh failed, the older cached index is used
}

// indexes refreshes and loads the index of every repository, as the
// commands that open the database for writing (add, update) do
// (apk-protocol.md §7.2, src/database.c:1512-1515); del and info read no
// index. As in apk-tools, a repository whose refresh fails is only a
// warning (§7.5): its older cached index is used (stale) or, without one,
// it is left out (unavailable).
func (c *cli) indexes() (*loaded, error) {
	repos, err := c.repositories()
	if err != nil {
		return nil, err
	}
	keys, err := c.keys()
	if err != nil {
		return nil, err
	}
	l := &loaded{}
	for _, repo := range repos {
		ix, updateErr, err := c.index(repo, keys)
		u := apk.IndexURL(repo.url, c.opts.arch)
		if updateErr != nil {
			fmt.Fprintf(c.stderr, "ERROR: %s: %v\n", u, updateErr)
		}
		switch {
		case err != nil:
			c.warnf("Ignoring %s: %v", u, err)
			l.unavailable++
			continue
		case updateErr != nil:
			l.stale++
		}
		l.indexes = append(l.indexes, ix)
	}
	return l, nil
}

// index refreshes and loads one repository's index. updateErr says why the
// refresh failed; err why there is no index to use.
func (c *cli) index(repo repository, keys map[string]*rsa.PublicKey) (ix *repoIndex, updateErr, err error) {
	u := apk.IndexURL(repo.url, c.opts.arch)
	if c.opts.noCache {
		// --no-cache: download on every run, keep nothing (§7.2).
		c.printf("fetch %s\n", u)
		raw, _, err := c.fetch(u, time.Time{})
		if err != nil {
			return nil, nil, err
		}
		ix, err := c.verifyIndex(repo, raw, keys)
		return ix, nil, err
	}
	cache := c.cacheFile(repo)
	ix, updateErr = c.refresh(repo, cache, keys)
	if ix != nil {
		return ix, nil, nil
	}
	raw, err := os.ReadFile(cache)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, updateErr, errors.New("No such file or directory")
	}
	if err != nil {
		return nil, updateErr, err
	}
	ix, err = c.verifyIndex(repo, raw, keys)
	return ix, updateErr, err
}

// refresh downloads the index into the cache unless the cached one is
// young enough, as apk-tools 2.14's apk_cache_download does (§7.2,
// src/database.c:656-668):
//   - a cache no older than the max age is used without a request;
//   - --force-refresh always downloads, with Cache-Control: no-cache and
//     no If-Modified-Since;
//   - otherwise an existing cache's mtime is sent as If-Modified-Since
//     (not with -U), and a 304 touches the cache and reuses it;
//   - a new index that fails its signature check is discarded and the
//     cache is not replaced (§7.5).
//
// It returns the new index when one was downloaded, nil when the cache is
// to be used.
func (c *cli) refresh(repo repository, cache string, keys map[string]*rsa.PublicKey) (*repoIndex, error) {
	u := apk.IndexURL(repo.url, c.opts.arch)
	var ims time.Time
	if !c.opts.forceRefresh {
		if fi, err := os.Stat(cache); err == nil {
			if time.Since(fi.ModTime()) <= c.cacheMaxAge() {
				return nil, nil
			}
			if !c.opts.updateCache {
				ims = fi.ModTime()
			}
		}
	}
	// apk 2 prints this before its request, so a 304 shows it too.
	c.printf("fetch %s\n", u)
	raw, notModified, err := c.fetch(u, ims)
	if err != nil {
		return nil, err
	}
	if notModified {
		now := time.Now()
		if err := os.Chtimes(cache, now, now); err != nil {
			return nil, err
		}
		return nil, nil
	}
	ix, err := c.verifyIndex(repo, raw, keys)
	if err != nil {
		return nil, err
	}
	err = os.MkdirAll(filepath.Dir(cache), 0o755)
	if err == nil {
		err = writeFileAtomic(cache, raw, 0o644)
	}
	if err != nil {
		c.warnf("caching %s: %v", u, err)
	}
	return ix, nil
}

// verifyIndex checks the signature of an APKINDEX.tar.gz as apk-tools
// does (§5, src/package.c): the first .SIGN.RSA/RSA256/RSA512 entry whose
// key file exists in /etc/apk/keys must verify; none is "UNTRUSTED
// signature", a failed check "BAD signature". It parses only the signed
// part.
func (c *cli) verifyIndex(repo repository, raw []byte, keys map[string]*rsa.PublicKey) (*repoIndex, error) {
	if _, err := artifact.VerifyIndex(raw, keys); err != nil {
		var se *artifact.SignatureError
		if errors.As(err, &se) && se.Reason == "unsigned index" {
			// apk has no other word for it than an untrusted signature.
			return nil, fmt.Errorf("UNTRUSTED signature (%v)", err)
		}
		return nil, err
	}
	_, signed, err := artifact.ReadSignatures(raw)
	if err != nil {
		return nil, err
	}
	parsed, err := apk.IndexFromArchive(io.NopCloser(bytes.NewReader(signed)))
	if err != nil {
		return nil, fmt.Errorf("bad index: %w", err)
	}
	return &repoIndex{url: repo.url, description: parsed.Description, packages: parsed.Packages}, nil
}

// httpClient follows redirects like libfetch: 301/302/303 only, at most 5.
var httpClient = &http.Client{
	Timeout: 5 * time.Minute,
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if c := req.Response.StatusCode; c == http.StatusTemporaryRedirect || c == http.StatusPermanentRedirect {
			return fmt.Errorf("apk does not follow HTTP %d", c)
		}
		if len(via) > 5 {
			return errors.New("more than 5 redirects")
		}
		return nil
	},
}

// httpError is a response other than 200 (or an expected 304).
type httpError struct {
	code   int
	status string
}

func (e *httpError) Error() string { return "HTTP " + e.status }

// get downloads u; any status but 200 is an error.
func (c *cli) get(u string) ([]byte, error) {
	b, _, err := c.fetch(u, time.Time{})
	return b, err
}

// fetch downloads u with the headers apk sends (§7.1): If-Modified-Since
// when ims is set (a 304 then returns notModified), Cache-Control:
// no-cache with --force-refresh.
func (c *cli) fetch(u string, ims time.Time) (data []byte, notModified bool, err error) {
	if path, ok := strings.CutPrefix(u, "file://"); ok {
		u = path
	}
	if strings.HasPrefix(u, "/") {
		b, err := os.ReadFile(u)
		return b, false, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("User-Agent", "libfetch/2.0")
	if !ims.IsZero() {
		req.Header.Set("If-Modified-Since", ims.UTC().Format(http.TimeFormat))
	}
	if c.opts.forceRefresh {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && !ims.IsZero():
		return nil, true, nil
	case resp.StatusCode != http.StatusOK:
		return nil, false, &httpError{code: resp.StatusCode, status: resp.Status}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDownload+1))
	if err == nil && len(b) > maxDownload {
		err = fmt.Errorf("larger than %d bytes", maxDownload)
	}
	return b, false, err
}

// update is `apk update`: refresh every index. As in apk-tools
// (src/app_update.c), the exit status is the number of unavailable and
// stale repositories.
func (c *cli) update() error {
	l, err := c.indexes()
	if err != nil {
		return err
	}
	distinct := map[string]bool{}
	for _, ix := range l.indexes {
		c.printf("%s [%s]\n", ix.description, ix.url)
		for _, p := range ix.packages {
			distinct[p.Name] = true
		}
	}
	if l.unavailable+l.stale > 0 {
		c.printf("%d unavailable, %d stale; %d distinct packages available\n", l.unavailable, l.stale, len(distinct))
		c.errors += l.unavailable + l.stale
		return nil
	}
	c.printf("OK: %d distinct packages available\n", len(distinct))
	return nil
}
