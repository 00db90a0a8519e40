package apkcli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chainguard-dev/go-apk/pkg/apk"

	"github.com/uplinkhq/uplink/internal/apkfile"
)

// repoIndex is one repository's verified index.
type repoIndex struct {
	url         string // base URL, no trailing slash
	description string
	packages    []*apk.Package
}

// repositories returns the repository base URLs: /etc/apk/repositories
// (one per line; blank lines and # comments ignored; a leading @tag is
// dropped) followed by -X ones.
func (c *cli) repositories() ([]string, error) {
	var repos []string
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
		repos = append(repos, f[len(f)-1])
	}
	repos = append(repos, c.opts.repos...)
	for i, r := range repos {
		repos[i] = strings.TrimRight(r, "/")
	}
	return repos, nil
}

// keys returns the trusted public keys, /etc/apk/keys/<name> by name.
func (c *cli) keys() (map[string][]byte, error) {
	dir := rootPath(c.opts.root, "etc/apk/keys")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	keys := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			if e.IsDir() {
				continue
			}
			return nil, err
		}
		keys[e.Name()] = b
	}
	return keys, nil
}

// cacheFile is where the index of repo is cached.
func (c *cli) cacheFile(repo string) string {
	sum := sha1.Sum([]byte(repo))
	return rootPath(c.opts.root, "var/cache/apk/APKINDEX."+hex.EncodeToString(sum[:4])+".tar.gz")
}

// indexes returns the verified index of every repository. With fetch (or
// a missing or stale cache) an index is downloaded; a repository that
// cannot be read is reported, counted as an error and left out.
func (c *cli) indexes(fetch bool) ([]*repoIndex, error) {
	repos, err := c.repositories()
	if err != nil {
		return nil, err
	}
	keys, err := c.keys()
	if err != nil {
		return nil, err
	}
	var out []*repoIndex
	for _, repo := range repos {
		ix, err := c.index(repo, keys, fetch)
		if err != nil {
			fmt.Fprintf(c.stderr, "ERROR: %s: %v\n", apk.IndexURL(repo, c.opts.arch), err)
			c.errors++
			continue
		}
		out = append(out, ix)
	}
	return out, nil
}

func (c *cli) index(repo string, keys map[string][]byte, fetch bool) (*repoIndex, error) {
	cache := c.cacheFile(repo)
	if !c.opts.noCache && !fetch {
		if fi, err := os.Stat(cache); err == nil && time.Since(fi.ModTime()) < cacheMaxAge {
			if raw, err := os.ReadFile(cache); err == nil {
				if ix, err := c.verifyIndex(repo, raw, keys); err == nil {
					return ix, nil
				}
			}
		}
	}
	u := apk.IndexURL(repo, c.opts.arch)
	c.printf("fetch %s\n", u)
	raw, err := c.get(u)
	if err != nil {
		return nil, err
	}
	ix, err := c.verifyIndex(repo, raw, keys)
	if err != nil {
		return nil, err
	}
	if !c.opts.noCache {
		err := os.MkdirAll(filepath.Dir(cache), 0o755)
		if err == nil {
			err = writeFileAtomic(cache, raw, 0o644)
		}
		if err != nil {
			c.warnf("caching %s: %v", u, err)
		}
	}
	return ix, nil
}

// verifyIndex checks the signature of a downloaded APKINDEX.tar.gz as
// apk-tools does (the key named by the signature entry, from
// /etc/apk/keys only) and parses it.
func (c *cli) verifyIndex(repo string, raw []byte, keys map[string][]byte) (*repoIndex, error) {
	name := apkfile.FirstEntry(raw)
	keyName, ok := strings.CutPrefix(name, ".SIGN.RSA.")
	if !ok {
		return nil, fmt.Errorf("UNTRUSTED signature (no .SIGN.RSA. entry, first entry %q)", name)
	}
	key, ok := keys[keyName]
	if !ok {
		return nil, fmt.Errorf("UNTRUSTED signature (signed by %s, not in /etc/apk/keys)", keyName)
	}
	// go-apk verifies signatures only while reading a repository, and
	// caches remote indexes per URL; a local copy is read afresh.
	dir, err := os.MkdirTemp("", "apk-index-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, c.opts.arch), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, c.opts.arch, "APKINDEX.tar.gz"), raw, 0o644); err != nil {
		return nil, err
	}
	if _, err := apk.GetRepositoryIndexes(c.ctx, []string{dir}, map[string][]byte{keyName: key}, c.opts.arch); err != nil {
		return nil, fmt.Errorf("BAD signature: %w", err)
	}
	parsed, err := apk.IndexFromArchive(io.NopCloser(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("bad index: %w", err)
	}
	return &repoIndex{url: repo, description: parsed.Description, packages: parsed.Packages}, nil
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

// get downloads u; any status but 200 is an error.
func (c *cli) get(u string) ([]byte, error) {
	if path, ok := strings.CutPrefix(u, "file://"); ok {
		return os.ReadFile(path)
	}
	if strings.HasPrefix(u, "/") {
		return os.ReadFile(u)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "apk-tools/2.14.4 (uplink test client)")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// update is `apk update`: fetch every index.
func (c *cli) update() error {
	ixs, err := c.indexes(true)
	if err != nil {
		return err
	}
	distinct := map[string]bool{}
	for _, ix := range ixs {
		c.printf("%s [%s]\n", ix.description, ix.url)
		for _, p := range ix.packages {
			distinct[p.Name] = true
		}
	}
	if c.errors > 0 {
		c.printf("%d errors; %d distinct packages available\n", c.errors, len(distinct))
		return nil
	}
	c.printf("OK: %d distinct packages available\n", len(distinct))
	return nil
}
