package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
)

// Signature is one ".SIGN.<algorithm>.<key name>" entry at the front of a
// signed index or package (apk-protocol.md §5).
type Signature struct {
	Algorithm string // RSA (SHA-1), RSA256, RSA512
	KeyName   string // the file name apk opens in /etc/apk/keys
	Value     []byte
}

// maxControl bounds what is decompressed of a signature or control member:
// both are small (a signature, a .PKGINFO and scripts).
const maxControl = 16 << 20

var hashes = map[string]crypto.Hash{"RSA": crypto.SHA1, "RSA256": crypto.SHA256, "RSA512": crypto.SHA512}

// ReadSignatures splits a signed APKINDEX.tar.gz into its signature
// entries and the bytes they sign: everything after the first gzip member
// (abuild-sign signs the whole index before prepending its signature).
// An index without a signature member returns no signatures and the
// whole input as signed.
func ReadSignatures(raw []byte) ([]Signature, []byte, error) {
	br := bytes.NewReader(raw) // an io.ByteReader: gzip stops at the member's end
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, nil, fmt.Errorf("index: %w", err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(io.LimitReader(zr, maxControl))
	var sigs []Signature
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) || err == nil && !strings.HasPrefix(h.Name, ".SIGN.") {
			break
		}
		if err != nil {
			if len(sigs) > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				break // the signature tar is cut: no end-of-archive blocks
			}
			return nil, nil, fmt.Errorf("index: %w", err)
		}
		alg, key, ok := strings.Cut(strings.TrimPrefix(h.Name, ".SIGN."), ".")
		if !ok || key == "" {
			return nil, nil, fmt.Errorf("index: signature entry %q names no key", h.Name)
		}
		v, err := io.ReadAll(io.LimitReader(tr, 64<<10))
		if err != nil {
			return nil, nil, fmt.Errorf("index: %w", err)
		}
		sigs = append(sigs, Signature{Algorithm: alg, KeyName: key, Value: v})
	}
	if len(sigs) == 0 {
		return nil, raw, nil
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, nil, fmt.Errorf("index: signature member: %w", err)
	}
	return sigs, raw[len(raw)-br.Len():], nil
}

// ParsePublicKey reads a key as apk-tools loads it (PEM_read_bio_PUBKEY):
// one "BEGIN PUBLIC KEY" block holding an RSA key.
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New(`want one PEM block "-----BEGIN PUBLIC KEY-----" (apk does not load "RSA PUBLIC KEY")`)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	rsaKey, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("apk signatures need an RSA key, this is %T", key)
	}
	return rsaKey, nil
}

// SignatureError says why an index is not trusted.
type SignatureError struct {
	Signers []string // the key names the index's signatures name
	Trusted []string // the key names it was checked against
	Reason  string
}

func (e *SignatureError) Error() string {
	signers := "no signature"
	if len(e.Signers) > 0 {
		signers = "signed by " + strings.Join(e.Signers, ", ")
	}
	trusted := "no keys"
	if len(e.Trusted) > 0 {
		trusted = strings.Join(e.Trusted, ", ")
	}
	return fmt.Sprintf("%s (%s; trusted: %s)", e.Reason, signers, trusted)
}

// VerifyIndex checks a signed index as apk-tools does (apk-protocol.md
// §5): the first signature whose key name is one of keys (exact file
// names) must verify over the signed bytes. It returns that key's name.
// No usable key is "UNTRUSTED signature"; a failed check "BAD signature".
func VerifyIndex(raw []byte, keys map[string]*rsa.PublicKey) (string, error) {
	sigs, signed, err := ReadSignatures(raw)
	if err != nil {
		return "", err
	}
	trusted := make([]string, 0, len(keys))
	for name := range keys {
		trusted = append(trusted, name)
	}
	slices.Sort(trusted)
	signers := make([]string, 0, len(sigs))
	for _, s := range sigs {
		signers = append(signers, s.KeyName)
	}
	for _, s := range sigs {
		key, ok := keys[s.KeyName]
		if !ok {
			continue
		}
		h, ok := hashes[s.Algorithm]
		if !ok {
			return "", &SignatureError{Signers: signers, Trusted: trusted, Reason: "unsupported signature algorithm " + s.Algorithm}
		}
		if err := rsa.VerifyPKCS1v15(key, h, digest(h, signed), s.Value); err != nil {
			return "", &SignatureError{Signers: signers, Trusted: trusted, Reason: "BAD signature by " + s.KeyName}
		}
		return s.KeyName, nil
	}
	if len(sigs) == 0 {
		return "", &SignatureError{Trusted: trusted, Reason: "unsigned index"}
	}
	return "", &SignatureError{Signers: signers, Trusted: trusted, Reason: "UNTRUSTED signature"}
}

func digest(h crypto.Hash, b []byte) []byte {
	var d hash.Hash
	switch h {
	case crypto.SHA1:
		d = sha1.New()
	case crypto.SHA256:
		d = sha256.New()
	default:
		d = sha512.New()
	}
	d.Write(b)
	return d.Sum(nil)
}

// PackageChecksum returns a package's identity as an index's C: field
// names it: "Q1" + base64(SHA-1 of the compressed control member), the
// member after an optional signature member. It reads only the front of
// the package, up to the end of the control member.
func PackageChecksum(r io.Reader) (string, error) {
	hr := &hashingReader{r: bufio.NewReaderSize(r, 32<<10)}
	first, err := hr.member()
	if err != nil {
		return "", fmt.Errorf("package: %w", err)
	}
	if !strings.HasPrefix(first.firstEntry, ".SIGN.") {
		return checksum(first.sum), nil
	}
	control, err := hr.member()
	if err != nil {
		return "", fmt.Errorf("package: control member: %w", err)
	}
	return checksum(control.sum), nil
}

func checksum(sum []byte) string { return "Q1" + base64.StdEncoding.EncodeToString(sum) }

// hashingReader hashes every byte the gzip reader consumes. Being an
// io.ByteReader, it is used as is, so gzip never reads past a member.
type hashingReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashingReader) ReadByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err == nil {
		h.h.Write([]byte{b})
	}
	return b, err
}

type member struct {
	firstEntry string
	sum        []byte
}

// member reads one gzip member, returning the name of its first tar entry
// and the SHA-1 of its compressed bytes.
func (h *hashingReader) member() (member, error) {
	h.h = sha1.New()
	zr, err := gzip.NewReader(h)
	if err != nil {
		return member{}, err
	}
	zr.Multistream(false)
	lr := io.LimitReader(zr, maxControl)
	var m member
	if hd, err := tar.NewReader(lr).Next(); err == nil {
		m.firstEntry = hd.Name
	}
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return member{}, err
	}
	var one [1]byte
	if n, err := zr.Read(one[:]); n > 0 {
		return member{}, fmt.Errorf("a signature or control member larger than %d bytes", maxControl)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return member{}, err
	}
	m.sum = h.h.Sum(nil)
	return m, nil
}
