package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// IndexEntry is one package listed in an APKINDEX.
type IndexEntry struct {
	Name    string
	Version string
	Arch    string
	// Checksum is the C: field: "Q1" + base64(SHA-1 of the package's
	// control member), what apk checks a downloaded package against.
	Checksum string
	// Size is the S: field, the size of the .apk file; -1 when absent.
	Size int64
}

// Filename is the package's file name in the repository.
func (e IndexEntry) Filename() string { return e.Name + "-" + e.Version + ".apk" }

// MaxIndexText bounds the APKINDEX text read from an index.
const MaxIndexText = 256 << 20

// ReadIndex lists the packages of an APKINDEX.tar.gz. It does not check
// the signature (instances do, with their keys); it reads what the index
// names, to tell an operator before any instance tries.
func ReadIndex(r io.Reader) ([]IndexEntry, error) {
	zr, err := gzip.NewReader(r) // multistream: signature member, then the index
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("index: no APKINDEX entry")
		}
		if err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		if h.Name == "APKINDEX" {
			return parseIndexText(io.LimitReader(tr, MaxIndexText))
		}
	}
}

func parseIndexText(r io.Reader) ([]IndexEntry, error) {
	var out []IndexEntry
	cur := IndexEntry{Size: -1}
	flush := func() {
		if cur.Name != "" {
			out = append(out, cur)
		}
		cur = IndexEntry{Size: -1}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20) // provides lines can be long
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			flush()
			continue
		}
		if len(line) < 2 || line[1] != ':' {
			return nil, fmt.Errorf("index: malformed line %q", truncate(line))
		}
		v := string(bytes.TrimSpace(line[2:]))
		switch line[0] {
		case 'P':
			cur.Name = v
		case 'V':
			cur.Version = v
		case 'A':
			cur.Arch = v
		case 'C':
			cur.Checksum = v
		case 'S':
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("index: package %s: bad S: %q", cur.Name, v)
			}
			cur.Size = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	flush()
	return out, nil
}

func truncate(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}
