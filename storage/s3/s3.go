// Package s3 stores objects in an S3 bucket (AWS, MinIO, versitygw, ...)
// through minio-go.
//
// Conditional puts use S3 conditional writes (If-None-Match: * and
// If-Match: <etag> on PutObject), which the server must implement
// atomically; AWS S3, MinIO and versitygw (v1.8.0 checked) do. They are
// always a single PUT and never retried, so ErrConditionFailed always
// means the write did not happen; any other error from a conditional put
// (a connection lost mid-request) leaves the outcome unknown, and callers
// must re-read before deciding.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/uplinkhq/uplink/storage"
)

// Config locates a bucket.
type Config struct {
	// Endpoint is host[:port], without scheme.
	Endpoint string
	Bucket   string
	// Region may be empty: minio-go then asks the server once per bucket.
	Region    string
	AccessKey string
	SecretKey string
	UseTLS    bool
	// PathStyle forces path-style requests (http://host/bucket/key), which
	// most non-AWS servers need; otherwise the style is picked per
	// endpoint.
	PathStyle bool
	// Prefix, if set, is prepended (as a directory) to every key, so
	// several stores can share a bucket.
	Prefix string
}

// defaultPartSize is both the multipart part size and the most an upload
// of unknown size is buffered in memory to find out whether a single PUT
// will do.
const defaultPartSize = 16 << 20

// Driver is a storage.Driver on one S3 bucket. It is safe for concurrent
// use.
type Driver struct {
	client *minio.Client
	core   minio.Core // the same client, for raw object bodies
	// cas sends conditional puts, never retried: if a retry's first
	// attempt had succeeded unseen, the retry would fail its own condition
	// and report ErrConditionFailed for a write that happened.
	cas      *minio.Client
	bucket   string
	region   string
	prefix   string // "" or ends in '/'
	partSize int64
}

var (
	_ storage.Driver    = (*Driver)(nil)
	_ storage.Presigner = (*Driver)(nil)
)

// New returns a Driver for cfg. It does not contact the server.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3: endpoint and bucket are required")
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := storage.ValidKey(prefix); err != nil {
			return nil, fmt.Errorf("s3: prefix: %w", err)
		}
		prefix += "/"
		// Keep prefix+key within S3's 1024-byte key limit.
		if len(prefix)+storage.MaxKeyLength > 1024 {
			return nil, fmt.Errorf("s3: prefix longer than %d bytes", 1024-storage.MaxKeyLength-1)
		}
	}
	tr, err := minio.DefaultTransport(cfg.UseTLS)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	// Many concurrent requests to one host: keep their connections
	// instead of re-dialing (and re-handshaking TLS) per request.
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	tr.IdleConnTimeout = 90 * time.Second
	tr.ExpectContinueTimeout = time.Second
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	opts := &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       cfg.UseTLS,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    tr,
		// minio-go's default (10) spends ~5s per call on a server that is
		// down; a few retries ride out blips and let callers fail fast.
		MaxRetries: 3,
	}
	client, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	opts.MaxRetries = 1 // one attempt
	cas, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return &Driver{client: client, core: minio.Core{Client: client}, cas: cas, bucket: cfg.Bucket, region: cfg.Region, prefix: prefix, partSize: defaultPartSize}, nil
}

// EnsureBucket creates the bucket if it does not exist.
func (d *Driver) EnsureBucket(ctx context.Context) error {
	ok, err := d.client.BucketExists(ctx, d.bucket)
	if err != nil {
		return fmt.Errorf("s3: bucket %s: %w", d.bucket, err)
	}
	if ok {
		return nil
	}
	err = d.client.MakeBucket(ctx, d.bucket, minio.MakeBucketOptions{Region: d.region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" {
		err = nil // created concurrently
	}
	if err != nil {
		return fmt.Errorf("s3: create bucket %s: %w", d.bucket, err)
	}
	return nil
}

// Object is an open object. Reads are lazy ranged GETs from the current
// offset, so Seek costs nothing and a Range read fetches only its bytes.
// Every GET carries If-Match with the ETag seen by Open: if the key is
// overwritten meanwhile, reads fail with storage.ErrConditionFailed rather
// than mixing two versions. Reads use the context given to Open. The body
// is read straight from the HTTP response (minio.Core), not through
// minio.Object, whose per-Read goroutine hand-off costs a core at speed.
type Object struct {
	d    *Driver
	ctx  context.Context
	info storage.Info
	off  int64

	body    io.ReadCloser // nil, or a stream positioned at bodyOff
	bodyOff int64
}

var _ storage.Object = (*Object)(nil)

// Info returns what Open saw.
func (o *Object) Info() storage.Info { return o.info }

func (o *Object) Read(p []byte) (int, error) {
	if o.off >= o.info.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if o.body == nil || o.bodyOff != o.off {
		if err := o.open(); err != nil {
			return 0, err
		}
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	o.bodyOff = o.off
	if err != nil && err != io.EOF {
		o.closeBody()
		return n, o.d.readErr(o.info.Key, err)
	}
	if err == io.EOF {
		o.closeBody()
		if o.off < o.info.Size {
			return n, fmt.Errorf("s3: read %s: %w", o.info.Key, io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

// open starts a GET from the current offset.
func (o *Object) open() error {
	o.closeBody()
	opts := minio.GetObjectOptions{}
	if err := opts.SetMatchETag(o.info.ETag); err != nil {
		return err
	}
	if o.off > 0 {
		if err := opts.SetRange(o.off, 0); err != nil {
			return err
		}
	}
	body, st, _, err := o.d.core.GetObject(o.ctx, o.d.bucket, o.d.prefix+o.info.Key, opts)
	if err != nil {
		return o.d.readErr(o.info.Key, err)
	}
	// Not every server honours If-Match on GET (versitygw's posix backend
	// may not): check the version that answered, too.
	if strings.Trim(st.ETag, `"`) != o.info.ETag || o.off == 0 && st.Size != o.info.Size {
		body.Close()
		return fmt.Errorf("%w: %s changed since Open", storage.ErrConditionFailed, o.info.Key)
	}
	o.body, o.bodyOff = body, o.off
	return nil
}

// Seek only moves the offset; the next Read fetches from there.
func (o *Object) Seek(offset int64, whence int) (int64, error) {
	off, err := storage.SeekOffset(o.off, o.info.Size, offset, whence)
	if err != nil {
		return 0, fmt.Errorf("s3: %s: %w", o.info.Key, err)
	}
	o.off = off
	return off, nil
}

func (o *Object) Close() error {
	o.closeBody()
	return nil
}

func (o *Object) closeBody() {
	if o.body != nil {
		o.body.Close()
		o.body = nil
	}
}

// Open stats key (so a missing key fails here) and returns a lazy reader.
func (d *Driver) Open(ctx context.Context, key string) (storage.Object, error) {
	info, err := d.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return &Object{d: d, ctx: ctx, info: info}, nil
}

// Stat returns key's Info.
func (d *Driver) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(ctx, key); err != nil {
		return storage.Info{}, err
	}
	oi, err := d.client.StatObject(ctx, d.bucket, d.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return storage.Info{}, d.headErr(ctx, key, err)
	}
	return d.info(oi), nil
}

// PresignGet returns a presigned GET URL of key (SigV4 query string,
// valid for expiry, at most 7 days) on the configured endpoint. It
// signs locally; only a Config without Region asks the server for the
// bucket's region, once.
func (d *Driver) PresignGet(ctx context.Context, key string, expiry time.Duration) (*url.URL, error) {
	if err := storage.CheckKey(ctx, key); err != nil {
		return nil, err
	}
	u, err := d.client.PresignedGetObject(ctx, d.bucket, d.prefix+key, expiry, nil)
	if err != nil {
		return nil, fmt.Errorf("s3: presign %s: %w", key, err)
	}
	return u, nil
}

// Put uploads r to key, honouring cond.
func (d *Driver) Put(ctx context.Context, key string, r io.Reader, size int64, cond storage.Condition) (storage.Info, error) {
	if err := storage.CheckPut(ctx, "s3", key, cond); err != nil {
		return storage.Info{}, err
	}
	opts := minio.PutObjectOptions{PartSize: uint64(d.partSize)}
	conditional := cond.IfAbsent || cond.IfMatch != ""
	switch {
	case cond.IfAbsent:
		opts.SetMatchETagExcept("*")
	case cond.IfMatch != "":
		opts.SetMatchETag(cond.IfMatch)
	}
	// minio-go drops these headers from CompleteMultipartUpload, so a
	// conditional multipart upload would silently be unconditional: a
	// conditional put must be a single PUT, which needs the size.
	opts.DisableMultipart = conditional

	r, size, done, err := d.body(ctx, r, size, conditional)
	if err != nil {
		return storage.Info{}, fmt.Errorf("s3: put %s: %w", key, err)
	}
	defer done()
	if conditional && size > precheckSize {
		if err := d.precheck(ctx, key, cond); err != nil {
			return storage.Info{}, err
		}
	}
	if size == 0 {
		// minio-go's streaming signature (plain HTTP) sends a final
		// aws-chunk even for an empty body while announcing none; the
		// server reads those bytes as a bogus next request, whose 400 can
		// be taken as the answer to our next real request on that
		// connection. There is no payload to sign anyway.
		opts.DisableContentSha256 = true
	}
	client := d.client
	if conditional {
		client = d.cas
	}
	ui, err := d.putObject(ctx, client, key, r, size, opts)
	if err != nil {
		return storage.Info{}, putErr(key, cond, err)
	}
	// PutObject's response has no Last-Modified; now is within a request
	// of the server's time.
	return storage.Info{Key: key, Size: ui.Size, ModTime: time.Now(), ETag: strings.Trim(ui.ETag, `"`)}, nil
}

// dirRaceRetries bounds the retries of a PUT that versitygw's posix
// backend refused with ExistingObjectIsDirectory.
const dirRaceRetries = 4

// putObject is PutObject, retried when versitygw's posix backend loses a
// race: a concurrent DELETE of a sibling key prunes the (empty) parent
// directory between the PUT's mkdir and its link, and the PUT fails with
// ExistingObjectIsDirectory although no directory stands at the key (the
// filesystem driver retries the same race in mkdirAll). Only a body that
// can be rewound is retried; a real directory at the key fails every try.
func (d *Driver) putObject(ctx context.Context, client *minio.Client, key string, r io.Reader, size int64, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	seeker, rewindable := r.(io.Seeker)
	for attempt := 1; ; attempt++ {
		ui, err := client.PutObject(ctx, d.bucket, d.prefix+key, r, size, opts)
		if err == nil || !rewindable || attempt > dirRaceRetries ||
			minio.ToErrorResponse(err).Code != "ExistingObjectIsDirectory" {
			return ui, err
		}
		if _, serr := seeker.Seek(0, io.SeekStart); serr != nil {
			return ui, err
		}
		select {
		case <-ctx.Done():
			return ui, err
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

// body prepares what Put sends: r as it stops once ctx is done, with its
// size known where it can be; done releases what body made.
func (d *Driver) body(ctx context.Context, r io.Reader, size int64, conditional bool) (io.Reader, int64, func(), error) {
	if _, ok := r.(io.ReaderAt); !ok {
		// A stream may block or be slow; stop reading it once ctx is done,
		// even while minio-go is filling a part buffer. ReaderAts (files,
		// byte slices) pass as is: minio-go uses them to retry and to
		// upload parts in parallel.
		r = storage.ContextReader(ctx, r)
	}
	nothing := func() {}
	if size >= 0 {
		return r, size, nothing, nil
	}
	// Small bodies of unknown size (most metadata) go as one PUT rather
	// than a three-request multipart upload.
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, d.partSize+1)
	switch {
	case err == io.EOF:
		return bytes.NewReader(buf.Bytes()), n, nothing, nil
	case err != nil:
		return nil, 0, nil, err
	case conditional:
		f, n, err := spool(io.MultiReader(&buf, r))
		if err != nil {
			return nil, 0, nil, err
		}
		return f, n, func() { f.Close() }, nil
	}
	return io.MultiReader(&buf, r), size, nothing, nil
}

// putErr maps a failed PutObject to storage's errors.
func putErr(key string, cond storage.Condition, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "PreconditionFailed" || resp.Code == "ConditionalRequestConflict" ||
		resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s: %s", storage.ErrConditionFailed, key, resp.Code)
	case cond.IfMatch != "" && resp.Code == minio.NoSuchKey:
		// S3 answers If-Match on a missing key with 404.
		return fmt.Errorf("%w: %s does not exist", storage.ErrConditionFailed, key)
	}
	return fmt.Errorf("s3: put %s: %w", key, err)
}

// precheckSize is the body size above which a conditional put first
// checks its condition with a HEAD.
const precheckSize = 64 << 10

// precheck fails a conditional put early when its condition already does
// not hold. Besides not uploading a large body for nothing, it avoids a
// versitygw behaviour: a PUT whose precondition fails is answered 412
// before its body is read and the connection closed, so with a body larger
// than the socket buffers the client gets "connection reset" instead of
// the 412. The PUT's own condition stays the authoritative check: if the
// key changes between the two, the put fails with ErrConditionFailed or,
// on versitygw with a large body, a plain error.
func (d *Driver) precheck(ctx context.Context, key string, cond storage.Condition) error {
	info, err := d.Stat(ctx, key)
	switch {
	case storage.IsNotFound(err):
		if cond.IfMatch != "" {
			return fmt.Errorf("%w: %s does not exist", storage.ErrConditionFailed, key)
		}
		return nil
	case err != nil:
		return err
	case cond.IfAbsent:
		return fmt.Errorf("%w: %s exists", storage.ErrConditionFailed, key)
	case info.ETag != cond.IfMatch:
		return fmt.Errorf("%w: %s changed", storage.ErrConditionFailed, key)
	}
	return nil
}

// spool copies r into an unlinked temp file, so a conditional put of
// unknown size can still be one PUT of known size.
func spool(r io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "uplink-s3-put-*")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// List returns the objects whose key starts with prefix, sorted.
func (d *Driver) List(ctx context.Context, prefix string) ([]storage.Info, error) {
	if err := storage.CheckPrefix(ctx, prefix); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx) // stops the lister if we return early
	defer cancel()
	var out []storage.Info
	for oi := range d.client.ListObjects(ctx, d.bucket, minio.ListObjectsOptions{Prefix: d.prefix + prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("s3: list %q: %w", prefix, oi.Err)
		}
		in := d.info(oi)
		// Skip what no key can name: directory markers ("dir/") and
		// hidden entries other tools may leave.
		if storage.ValidKey(in.Key) != nil {
			continue
		}
		out = append(out, in)
	}
	storage.SortByKey(out)
	return out, nil
}

// Delete removes key; a missing key is not an error (S3 says so too).
func (d *Driver) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(ctx, key); err != nil {
		return err
	}
	if err := d.client.RemoveObject(ctx, d.bucket, d.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3: delete %s: %w", key, err)
	}
	return nil
}

// maxAbortsPerCall bounds one AbortIncompleteUploads call; the rest wait
// for the next.
const maxAbortsPerCall = 1000

// AbortIncompleteUploads aborts the multipart uploads under each key prefix
// that were initiated more than olderThan ago and never completed or
// aborted: what a process killed in the middle of a large Put leaves
// behind, its parts kept (and billed) by S3 forever. It returns how many
// it aborted.
func (d *Driver) AbortIncompleteUploads(ctx context.Context, olderThan time.Duration, prefixes ...string) (int, error) {
	ctx, cancel := context.WithCancel(ctx) // stops the lister if we return early
	defer cancel()
	aborted := 0
	var errs []error
	for _, prefix := range prefixes {
		if err := storage.ValidPrefix(prefix); err != nil {
			return aborted, err
		}
		for u := range d.client.ListIncompleteUploads(ctx, d.bucket, d.prefix+prefix, true) {
			if u.Err != nil {
				errs = append(errs, fmt.Errorf("s3: listing multipart uploads under %q: %w", prefix, u.Err))
				break
			}
			if u.UploadID == "" || time.Since(u.Initiated) < olderThan {
				continue
			}
			if aborted >= maxAbortsPerCall {
				return aborted, errors.Join(errs...)
			}
			err := d.core.AbortMultipartUpload(ctx, d.bucket, u.Key, u.UploadID)
			if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" { // completed or aborted meanwhile
				errs = append(errs, fmt.Errorf("s3: aborting the multipart upload of %s: %w", u.Key, err))
				continue
			}
			aborted++
		}
	}
	return aborted, errors.Join(errs...)
}

func (d *Driver) info(oi minio.ObjectInfo) storage.Info {
	return storage.Info{
		Key:     strings.TrimPrefix(oi.Key, d.prefix),
		Size:    oi.Size,
		ModTime: oi.LastModified,
		ETag:    strings.Trim(oi.ETag, `"`),
	}
}

// headErr maps a HEAD error. A HEAD response has no body, so minio-go
// reports a missing bucket as NoSuchKey too; ask about the bucket before
// claiming the key is missing.
func (d *Driver) headErr(ctx context.Context, key string, err error) error {
	if minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return fmt.Errorf("s3: stat %s: %w", key, err)
	}
	ok, berr := d.client.BucketExists(ctx, d.bucket)
	switch {
	case berr != nil:
		return fmt.Errorf("s3: stat %s: %w (bucket check: %w)", key, err, berr)
	case !ok:
		return fmt.Errorf("s3: stat %s: bucket %s does not exist", key, d.bucket)
	}
	return &storage.PathNotFoundError{Key: key}
}

// readErr maps an error from a GET, whose error body is exact.
func (d *Driver) readErr(key string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey:
		return &storage.PathNotFoundError{Key: key}
	case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s changed since Open", storage.ErrConditionFailed, key)
	}
	return fmt.Errorf("s3: read %s: %w", key, err)
}
