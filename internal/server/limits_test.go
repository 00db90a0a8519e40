package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
)

// rawGet sends a GET over a fresh connection and returns the connection
// and a reader positioned after the status line and headers.
func rawGet(t *testing.T, addr, path string, rcvbuf int) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if rcvbuf > 0 {
		// A small window keeps most of the body on the server's side.
		c.(*net.TCPConn).SetReadBuffer(rcvbuf)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: uplink\r\nUser-Agent: libfetch/2.0\r\n\r\n", path)
	br := bufio.NewReaderSize(c, 4<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	c.SetReadDeadline(time.Time{})
	return c, br, resp
}

// TestHeaderLimit: a request whose headers pass --max-header-bytes gets
// 431 on both listeners; one just under it is served.
func TestHeaderLimit(t *testing.T) {
	cfg := baseConfig(t)
	cfg.MaxHeaderBytes = 16 << 10
	n := start(t, cfg)
	for _, base := range []string{n.dist + "/main/acme/hello/x86_64/APKINDEX.tar.gz", "http://" + n.srv.AdminAddr() + "/healthz"} {
		resp, _ := get(t, base, "X-Filler", strings.Repeat("a", 32<<10))
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%s with 32KiB of headers: %d, want 431", base, resp.StatusCode)
		}
		resp, _ = get(t, base, "X-Filler", strings.Repeat("a", 12<<10))
		if resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge || resp.StatusCode >= 500 {
			t.Fatalf("%s with 12KiB of headers: %d, want it served", base, resp.StatusCode)
		}
	}
}

// TestConnectionCap: beyond --max-connections (and the admin's), a client
// gets 503 with Retry-After at once, not a hang; closing the connections
// that held the cap gives service back.
func TestConnectionCap(t *testing.T) {
	cfg := baseConfig(t)
	cfg.MaxConnections, cfg.AdminMaxConnections = 4, 2
	n := start(t, cfg)
	for _, tc := range []struct {
		addr, url string
		held      int
		json      bool
	}{
		{n.srv.DistributionAddr(), n.dist + "/main/acme/hello/x86_64/APKINDEX.tar.gz", 4, false},
		{n.srv.AdminAddr(), "http://" + n.srv.AdminAddr() + "/healthz", 2, true},
	} {
		var held []net.Conn
		for range tc.held {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			// Half a request: the connection stays open, waiting.
			io.WriteString(c, "GET / HTTP/1.1\r\n")
			held = append(held, c)
		}
		// The held connections are accepted in order; poll until the cap
		// is taken rather than sleep.
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		var resp *http.Response
		var body []byte
		eventually(t, 10*time.Second, tc.url+" refused beyond the cap", func() bool {
			r, err := client.Get(tc.url)
			if err != nil {
				t.Fatalf("beyond the cap: %v, want a 503", err)
			}
			body, _ = io.ReadAll(r.Body)
			r.Body.Close()
			resp = r
			return r.StatusCode == http.StatusServiceUnavailable
		})
		if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "too many connections") {
			t.Fatalf("%s beyond the cap: Retry-After %q, body %q", tc.url, resp.Header.Get("Retry-After"), body)
		}
		if tc.json && !json.Valid(body) {
			t.Fatalf("admin beyond the cap: %q is not the API's JSON error", body)
		}
		for _, c := range held {
			c.Close()
		}
		eventually(t, 10*time.Second, tc.url+" served again", func() bool {
			r, err := client.Get(tc.url)
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode != http.StatusServiceUnavailable
		})
	}
	if got := metric(t, n, `uplink_http_connections_refused_total{how="503",listener="distribution"}`); got < 1 {
		t.Fatalf("refused connections not counted: %v", got)
	}
}

// bigRepository is a repository with one package of about size random
// (incompressible) bytes.
func bigRepository(t *testing.T, key apktest.Key, size int) (map[string][]byte, string) {
	data := make([]byte, size)
	rand.Read(data)
	files := apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{
		Name: "big", Version: "1.0-r0", Files: []apktest.File{{Path: "usr/share/big/data", Data: data}},
	})
	return files, "x86_64/big-1.0-r0.apk"
}

// TestStallTimeout: with --stall-timeout 2s, a client that stops reading
// a package is cut within the bound, while one that keeps reading slowly
// gets the whole multi-MB package although it takes several times the
// bound. Filesystem storage serves by sendfile, S3 by copies.
func TestStallTimeout(t *testing.T) {
	key := apktest.NewKey(t)
	// Larger than the kernel's socket buffers can hold (4 MiB on
	// loopback), so the server must wait for the client.
	files, pkg := bigRepository(t, key, 10<<20)
	drivers(t, func(t *testing.T, cfg server.Config) {
		const stall = 2 * time.Second
		cfg.StallTimeout = stall
		n := start(t, cfg)
		n.publish(t, commitOf("big"), "main", files)
		want := files[pkg]
		path := "/distribution/main/acme/hello/" + pkg
		series := `uplink_http_stalled_total{listener="distribution"}`

		// A slow but moving reader: 32 KiB every 15 ms, about 2 MB/s.
		began := time.Now()
		_, _, resp := rawGet(t, n.srv.DistributionAddr(), path, 32<<10)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(want)) {
			t.Fatalf("slow reader: %d, %d bytes", resp.StatusCode, resp.ContentLength)
		}
		var got bytes.Buffer
		chunk := make([]byte, 32<<10)
		for {
			k, err := io.ReadFull(resp.Body, chunk)
			got.Write(chunk[:k])
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatalf("slow reader cut at %d of %d bytes after %v: %v", got.Len(), len(want), time.Since(began), err)
			}
			time.Sleep(15 * time.Millisecond)
		}
		took := time.Since(began)
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("slow reader got %d of %d bytes in %v", got.Len(), len(want), took)
		}
		if took < 2*stall {
			t.Fatalf("the slow reader took %v, not longer than the stall timeout: the test proves nothing", took)
		}
		if m := metric(t, n, series); m != 0 {
			t.Fatalf("a moving reader was counted as stalled: %v", m)
		}

		// A reader that stops after the headers.
		_, _, resp = rawGet(t, n.srv.DistributionAddr(), path, 16<<10)
		stopped := time.Now()
		eventually(t, 15*time.Second, "the server cuts the stalled reader", func() bool { return metric(t, n, series) >= 1 })
		if cut := time.Since(stopped); cut < stall/2 {
			t.Fatalf("cut after %v, before the stall timeout of %v", cut, stall)
		}
		// What the kernel had buffered arrives, then the body ends short.
		b, err := io.ReadAll(resp.Body)
		if err == nil || len(b) >= len(want) {
			t.Fatalf("the stalled reader got %d of %d bytes, err %v: want a cut body", len(b), len(want), err)
		}
	})
}

// TestStallTimeoutUpload: an upload whose body stops coming is cut after
// --stall-timeout on the admin listener; one that keeps coming slowly for
// longer than that is stored.
func TestStallTimeoutUpload(t *testing.T) {
	const stall = time.Second
	cfg := baseConfig(t)
	cfg.StallTimeout = stall
	n := start(t, cfg)
	upload := func(name string, size int, pace time.Duration, stopAt int) (int, time.Duration) {
		c, err := net.Dial("tcp", n.srv.AdminAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "PUT /api/v1/apps/%s/builds/%s/x86_64/%s HTTP/1.1\r\nHost: uplink\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", testApp, commitOf("up"), name, testToken, size)
		began := time.Now()
		part := bytes.Repeat([]byte{'x'}, 16<<10)
		for sent := 0; sent < size && sent < stopAt; sent += len(part) {
			if _, err := c.Write(part[:min(len(part), size-sent)]); err != nil {
				break
			}
			time.Sleep(pace)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, time.Since(began) // closed without an answer
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(began)
	}
	// 512 KiB at 16 KiB per 100 ms: about 3 s, three times the bound.
	if code, took := upload("slow-1.0-r0.apk", 512<<10, 100*time.Millisecond, 1<<30); code/100 != 2 || took < 2*stall {
		t.Fatalf("slow upload: %d after %v, want it stored after more than %v", code, took, 2*stall)
	}
	// 64 KiB of 512 KiB, then nothing.
	code, took := upload("stuck-1.0-r0.apk", 512<<10, 0, 64<<10)
	if code/100 == 2 || took > 10*time.Second {
		t.Fatalf("stuck upload: %d after %v, want it cut within the bound", code, took)
	}
	if m := metric(t, n, `uplink_http_stalled_total{listener="admin"}`); m < 1 {
		t.Fatalf("the stuck upload was not counted: %v", m)
	}
}

// TestStallTimeoutUnreadBody: a request whose body the handler never
// reads, trickled or stopped, does not keep its connection past the stall
// timeout (net/http reads what is left of it after the answer).
func TestStallTimeoutUnreadBody(t *testing.T) {
	const stall = time.Second
	cfg := baseConfig(t)
	cfg.StallTimeout = stall
	n := start(t, cfg)
	for _, te := range []string{"Content-Length: 100000", "Transfer-Encoding: chunked"} {
		c, err := net.Dial("tcp", n.srv.DistributionAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /distribution/main/acme/hello/x86_64/APKINDEX.tar.gz HTTP/1.1\r\nHost: uplink\r\n%s\r\n\r\n", te)
		if strings.HasPrefix(te, "Transfer") {
			io.WriteString(c, "10\r\n0123456789abcdef\r\n")
		} else {
			io.WriteString(c, "0123456789")
		}
		// The answer may come or not (a body never finished is read before
		// it); either way the server must end the connection.
		began := time.Now()
		c.SetReadDeadline(began.Add(stall + 10*time.Second))
		_, err = io.Copy(io.Discard, c)
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s, body never finished: connection still open after %v, want it closed within the stall timeout (%v)", te, time.Since(began), stall)
		}
	}
}

// TestReadyz: each dependency is checked with its own deadline, so a
// frozen S3 shows as storage unreachable (503) while Redis still reads ok;
// Redis down alone keeps 200. While draining, 503 while the listeners
// still serve.
func TestReadyz(t *testing.T) {
	gw := testenv.StartS3(t)
	rdb := testenv.StartRedis(t)
	cfg := baseConfig(t)
	cfg.Storage = "s3"
	cfg.S3 = s3.Config{Endpoint: gw.Endpoint, Bucket: gw.NewBucket(t), Region: gw.Region,
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true}
	cfg.Redis = "redis://" + rdb.Addr + "/0"
	n := start(t, cfg)
	readyz := func() (int, map[string]string, time.Duration) {
		began := time.Now()
		resp, body := get(t, "http://"+n.srv.AdminAddr()+"/readyz")
		var out map[string]string
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("/readyz: %q: %v", body, err)
		}
		return resp.StatusCode, out, time.Since(began)
	}
	if code, out, _ := readyz(); code != http.StatusOK || out["storage"] != "ok" || out["redis"] != "ok" {
		t.Fatalf("all up: %d %v", code, out)
	}

	gw.Freeze()
	code, out, took := readyz()
	gw.Thaw()
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(out["storage"], "unreachable") || out["redis"] != "ok" {
		t.Fatalf("S3 frozen: %d %v, want 503 with storage unreachable and redis ok", code, out)
	}
	if took > 8*time.Second {
		t.Fatalf("S3 frozen: /readyz took %v", took)
	}
	eventually(t, 15*time.Second, "ready after S3 thaws", func() bool { c, _, _ := readyz(); return c == http.StatusOK })

	rdb.Stop()
	code, out, _ = readyz()
	if code != http.StatusOK || out["storage"] != "ok" || !strings.HasPrefix(out["redis"], "unreachable") {
		t.Fatalf("Redis down: %d %v, want 200 with redis unreachable", code, out)
	}

	// Draining: /readyz says so while both listeners still serve, and
	// distribution answers ask clients to reconnect elsewhere.
	go n.srv.Drain(3 * time.Second)
	eventually(t, 2*time.Second, "/readyz 503 while draining", func() bool {
		c, out, _ := readyz()
		return c == http.StatusServiceUnavailable && out["status"] == "draining"
	})
	resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusNotFound || !resp.Close {
		t.Fatalf("distribution while draining: %d, close %v; want served (404, nothing published) with Connection: close", resp.StatusCode, resp.Close)
	}
}

// TestDotSegments: an unencoded "." or ".." segment is a malformed path,
// 400 as API.md says, not a 404 from a miscounted path.
func TestDotSegments(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	for _, p := range []string{
		"/distribution/main/acme/hello/../x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/hello/x86_64/../../hello/x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/./hello/x86_64/APKINDEX.tar.gz",
		"/distribution/../etc/passwd",
		"/../distribution/main/acme/hello/x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/hello/x86_64/%2e%2e",
	} {
		_, _, resp := rawGet(t, n.srv.DistributionAddr(), p, 0)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", p, resp.StatusCode)
		}
	}
	if _, _, resp := rawGet(t, n.srv.DistributionAddr(), "/distribution/main/acme/hello/x86_64/hello-1.0-r0.apk", 0); resp.StatusCode != http.StatusOK {
		t.Fatalf("a package whose name has dots: %d", resp.StatusCode)
	}
}

// TestLastModifiedNotAfterDate: publishes in quick succession move the
// branch's time ahead of the clock; Last-Modified is still never later
// than Date (RFC 9110 §8.8.2), on plain and ranged requests, and a client
// whose copy is from now still gets the newest index, never a 304.
func TestLastModifiedNotAfterDate(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	var last string
	for i := range 8 {
		v := fmt.Sprintf("%d.0-r0", i+1)
		last = commitOf(fmt.Sprint("quick", i))
		n.publish(t, last, "main", hello(t, key, v, v))
	}
	refs, err := n.api.Refs(t.Context(), testApp)
	if err != nil {
		t.Fatal(err)
	}
	moved := refs.Branches["main"].UpdatedAt
	if !moved.After(time.Now().Add(time.Second)) {
		t.Fatalf("main moved at %v, not ahead of the clock: the test proves nothing", moved)
	}
	url := n.repo("main") + "/x86_64/APKINDEX.tar.gz"
	for _, hdr := range [][]string{nil, {"Range", "bytes=0-9"}} {
		resp, _ := get(t, url, hdr...)
		lm, err1 := http.ParseTime(resp.Header.Get("Last-Modified"))
		date, err2 := http.ParseTime(resp.Header.Get("Date"))
		if resp.StatusCode/100 != 2 || err1 != nil || err2 != nil || lm.After(date) {
			t.Fatalf("%v: %d, Last-Modified %q, Date %q", hdr, resp.StatusCode, resp.Header.Get("Last-Modified"), resp.Header.Get("Date"))
		}
	}
	now := time.Now()
	resp, _ := get(t, url, "If-Modified-Since", now.UTC().Format(http.TimeFormat))
	// Once the clock has passed main's move a 304 would be right.
	if now.Before(moved) && (resp.StatusCode != http.StatusOK || resp.Header.Get("X-Uplink-Commit") != last) {
		t.Fatalf("a copy from now, main moved ahead of the clock: %d from %s, want 200 from %s", resp.StatusCode, resp.Header.Get("X-Uplink-Commit"), last)
	}
}
