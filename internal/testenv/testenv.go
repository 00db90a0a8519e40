// Package testenv starts real external components (redis-server, an S3
// server) for tests: on loopback, with state in t.TempDir(), stopped by
// t.Cleanup. A missing component fails the test loudly; it never skips.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// startTimeout bounds how long a component may take to answer.
const startTimeout = 10 * time.Second

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is one run of a server binary.
type process struct {
	*Proc
	log *bytes.Buffer // stdout+stderr, for failure messages
	mu  sync.Mutex    // guards log
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := strings.TrimSpace(p.log.String())
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// kill stops the process and waits until it is gone (its port is free).
func (p *process) kill() {
	p.Cmd.Process.Kill()
	<-p.Done
}

// start runs bin and waits until ready reports nil, failing t otherwise.
func start(t testing.TB, name, bin string, args []string, dir string, ready func() error) *process {
	t.Helper()
	p := &process{log: new(bytes.Buffer)}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = p
	cmd.Stderr = p
	cmd.SysProcAttr = sysProcAttr()
	var err error
	if p.Proc, err = StartProc(cmd); err != nil {
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	if err := p.WaitReady(context.Background(), startTimeout, 20*time.Millisecond, ready); err != nil {
		if !p.Exited() {
			p.kill()
		}
		t.Fatalf("testenv: %s %v\ncommand: %s\noutput:\n%s", name, err, p.Cmd, p.output())
	}
	return p
}

// Redis is a redis-server on 127.0.0.1 without persistence.
type Redis struct {
	Addr string

	t    testing.TB
	bin  string
	port int
	dir  string
	mu   sync.Mutex
	proc *process // nil while stopped
}

// StartRedis starts a redis-server, stopped when t ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found in PATH (%v); run `make test`, which installs it", err)
	}
	port := FreePort(t)
	r := &Redis{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		t:    t,
		bin:  bin,
		port: port,
		dir:  t.TempDir(),
	}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// Start starts the server again after Stop, on the same address, empty.
// It does nothing if the server is running.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return
	}
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
	}
	r.proc = start(r.t, "redis-server", r.bin, args, r.dir, func() error { return PingRedis(r.Addr) })
}

// Stop kills the server (as a crash would) and waits until it is gone.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.kill()
		r.proc = nil
	}
}

// PingRedis speaks just enough RESP to check that Redis at addr serves
// commands.
func PingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// S3 is an S3 server (versitygw with its posix backend) on 127.0.0.1,
// plain HTTP, path-style.
type S3 struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Region    string

	client *minio.Client
	ctl    *s3Process // Stop, Start, Freeze, Thaw (s3control.go)
}

// StartS3 starts versitygw, stopped when t ends. Start-up takes ~0.1s, so
// each caller gets its own server; NewBucket isolates tests sharing one.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := findVersitygw()
	if bin == "" {
		t.Fatalf("testenv: versitygw not found in PATH or $(go env GOPATH)/bin; run `make test`, which installs it")
	}
	s := &S3{
		Endpoint:  net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		AccessKey: "uplinktest",
		SecretKey: rand.Text(),
		Region:    "us-east-1",
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	args := versitygwArgs(s, data)
	endpoint := "http://" + s.Endpoint + "/"
	hc := &http.Client{Timeout: time.Second}
	ready := func() error {
		// Any S3 answer (403 to an anonymous request) means it serves.
		resp, err := hc.Get(endpoint)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.Header.Get("X-Amz-Request-Id") == "" {
			return fmt.Errorf("not an S3 answer: %s", resp.Status)
		}
		return nil
	}
	p := start(t, "versitygw", bin, args, dir, ready)
	s.ctl = &s3Process{t: t, bin: bin, args: args, dir: dir, ready: ready, proc: p}
	t.Cleanup(s.Stop)

	client, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatalf("testenv: s3 client: %v", err)
	}
	s.client = client
	return s
}

// versitygwArgs is the command line, for v1.8.0.
func versitygwArgs(s *S3, dir string) []string {
	return []string{
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--port", s.Endpoint,
		"--keep-alive", // off by default; without it every request re-dials
		"--quiet",
		"posix", dir,
	}
}

func findVersitygw() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		dirs = filepath.SplitList(gopath)
	}
	dirs = append(dirs, filepath.SplitList(build.Default.GOPATH)...)
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.SplitList(strings.TrimSpace(string(out)))...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *S3) NewBucket(t testing.TB) string {
	t.Helper()
	name := "uplink-" + strings.ToLower(rand.Text())
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("testenv: create bucket %s: %v", name, err)
	}
	return name
}
