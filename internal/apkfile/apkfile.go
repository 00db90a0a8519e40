// Package apkfile reads the APK v2 file formats the way apk-tools checks
// them: a package's gzip members, its control part, and whether a
// downloaded package is the one a signed index names (which go-apk does
// not check). The test fixtures and the test image's apk client share it.
package apkfile

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Members splits b into its raw gzip members. A bytes.Reader is an
// io.ByteReader, so the gzip reader does not read past a member's end.
func Members(b []byte) ([][]byte, error) {
	br := bytes.NewReader(b)
	var zr gzip.Reader
	var members [][]byte
	for br.Len() > 0 {
		start := len(b) - br.Len()
		if err := zr.Reset(br); err != nil {
			return members, err
		}
		zr.Multistream(false)
		if _, err := io.Copy(io.Discard, &zr); err != nil {
			return members, err
		}
		members = append(members, b[start:len(b)-br.Len()])
	}
	return members, nil
}

// FirstEntry returns the name of the first tar entry in a gzip member.
func FirstEntry(member []byte) string {
	zr, err := gzip.NewReader(bytes.NewReader(member))
	if err != nil {
		return ""
	}
	h, err := tar.NewReader(zr).Next()
	if err != nil {
		return ""
	}
	return h.Name
}

// ControlMember returns the index of a package's control member: 1 after
// a signature member, else 0.
func ControlMember(members [][]byte) int {
	if len(members) > 0 && strings.HasPrefix(FirstEntry(members[0]), ".SIGN.") {
		return 1
	}
	return 0
}

// ReadControl returns the .PKGINFO fields (key -> values) and the package
// scripts ("post-install" -> body) of a control member.
func ReadControl(member []byte) (map[string][]string, map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(member))
	if err != nil {
		return nil, nil, err
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	var info map[string][]string
	scripts := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case h.Name == ".PKGINFO":
			info = map[string][]string{}
			s := bufio.NewScanner(bytes.NewReader(b))
			for s.Scan() {
				if k, v, ok := strings.Cut(s.Text(), " = "); ok && !strings.HasPrefix(k, "#") {
					info[k] = append(info[k], v)
				}
			}
		case strings.HasPrefix(h.Name, ".") && !strings.Contains(h.Name, "/"):
			scripts[strings.TrimPrefix(h.Name, ".")] = b
		}
	}
	if info == nil {
		return nil, nil, errors.New("no .PKGINFO")
	}
	return info, scripts, nil
}

// Verify does what apk-tools does to a package fetched from a signed
// index: the control member must hash to the index's C: (checksum, e.g.
// "Q1..."), and the data to the control's datahash.
func Verify(data []byte, checksum string) error {
	members, err := Members(data)
	if err != nil {
		return fmt.Errorf("package integrity: %w", err)
	}
	i := ControlMember(members)
	if len(members) < i+2 {
		return fmt.Errorf("package integrity: %d gzip members", len(members))
	}
	sum := sha1.Sum(members[i])
	if got := "Q1" + base64.StdEncoding.EncodeToString(sum[:]); got != checksum {
		return fmt.Errorf("BAD signature: control member is %s, index C: is %s", got, checksum)
	}
	info, _, err := ReadControl(members[i])
	if err != nil {
		return fmt.Errorf("package integrity: %w", err)
	}
	want := info["datahash"]
	if len(want) != 1 {
		return errors.New("package integrity: .PKGINFO has no datahash")
	}
	if got := sha256.Sum256(bytes.Join(members[i+1:], nil)); hex.EncodeToString(got[:]) != want[0] {
		return fmt.Errorf("package integrity: data hash %x, .PKGINFO datahash %s", got, want[0])
	}
	return nil
}
