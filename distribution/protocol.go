package distribution

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Protocol is the read side of the repositories, what the /distribution/
// and /keys/ handlers ask for. Repositories answers it from storage;
// decorators wrap it (Access; the index cache in distribution/cache), in
// the manner of athens' download.Protocol.
//
// A request is admitted, then resolved; Index, Package and Received take
// the resolution Resolve gave, so a decorator that guards the app checks
// it in Resolve (and Keys).
type Protocol interface {
	// Admit refuses a client before its request is read (ErrForbidden).
	Admit(client netip.Addr) error
	// Resolve says which commit the request's ref stands for now.
	Resolve(ctx context.Context, req Request) (ref.Resolution, error)
	// Index reads an index of the resolved commit into memory; one larger
	// than MaxIndexSize is ErrIndexTooLarge, and is served as a Package.
	Index(ctx context.Context, req Request, res ref.Resolution) (*Index, error)
	// Package opens a file of the resolution: for a package asked for
	// through a branch, from the commit whose index the client last
	// received first, then the current commit, then the branch's earlier
	// commits.
	Package(ctx context.Context, req Request, res ref.Resolution) (*Package, error)
	// Received records that the client received (200, or 304 keeping its
	// copy) the index of res through a branch.
	Received(ctx context.Context, req Request, res ref.Resolution)
	// Keys returns app's settings and trusted keys; found is false when
	// nothing was ever stored for it.
	Keys(ctx context.Context, app artifact.App, client netip.Addr) (s AppSettings, found bool, err error)
}

// ErrIndexTooLarge is an index too large to hold in memory.
var ErrIndexTooLarge = errors.New("index too large to hold in memory")

// Index is an index file held in memory. It is immutable: the bytes under
// a published commit never change, so one Index serves every request.
type Index struct {
	Data   []byte
	ETag   string // strong, quoted
	Commit string
	// The header values, computed once with the bytes: assigning them to
	// a response costs no allocation on the hot path.
	etag, length, commit []string
	file                 *indexFile // see KeepFile
}

// NewIndex returns the index of commit holding data.
func NewIndex(commit string, data []byte) *Index {
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	return &Index{Data: data, ETag: etag, Commit: commit,
		etag: []string{etag}, length: []string{strconv.Itoa(len(data))}, commit: []string{commit}}
}

// Package is a file opened in storage. Reads run under the storage
// deadline (see guard); Close must be called.
type Package struct {
	Commit  string // the commit that answered
	Size    int64
	ModTime time.Time
	ETag    string // strong, quoted
	body    *guardedObject
}

// NewPackage returns a Package of obj that has no storage deadline: a
// decorator's own object, such as a local file (whose File() *os.File
// File returns) or one that follows a fill.
func NewPackage(commit, etag string, obj storage.Object) *Package {
	info := obj.Info()
	return &Package{Commit: commit, Size: info.Size, ModTime: info.ModTime, ETag: etag,
		body: &guardedObject{g: newGuard(context.Background(), 0), obj: obj}}
}

// Read reads under the storage deadline.
func (p *Package) Read(b []byte) (int, error) { return p.body.Read(b) }

// Seek seeks the object.
func (p *Package) Seek(offset int64, whence int) (int64, error) { return p.body.Seek(offset, whence) }

// Err is the first read error, which http.ServeContent drops.
func (p *Package) Err() error { return p.body.failed() }

// File returns the local file behind the package, if any, and stops the
// storage deadline: there is no remote storage to wait on, and the file is
// sent by sendfile.
func (p *Package) File() *os.File {
	f, ok := p.body.obj.(interface{ File() *os.File })
	if !ok {
		return nil
	}
	p.body.g.stop()
	return f.File()
}

// Sender is an object that sends itself to w better than Read can (a
// fill of the artifact cache, by sendfile from the file being filled). It
// returns the bytes sent and the first error, either its own or w's.
type Sender interface {
	SendTo(w io.Writer) (int64, error)
}

// sender returns the object's Sender; only objects without a storage
// deadline (NewPackage's) may bypass Read.
func (p *Package) sender() Sender {
	s, ok := p.body.obj.(Sender)
	if !ok || p.body.g.timeout != 0 {
		return nil
	}
	return s
}

// Close cancels a read in flight and closes the object.
func (p *Package) Close() error {
	p.body.close()
	return nil
}
