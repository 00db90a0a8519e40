package apktest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha512" // RSA512 signatures
	"fmt"
	"slices"
	"testing"

	"github.com/uplinkhq/uplink/internal/apkfile"
)

// Signer is one signature entry of an index: ".SIGN.<Algorithm>.<Key.Name>".
// Algorithm is "RSA" (SHA-1, abuild's default), "RSA256" (abuild-sign -t
// RSA256) or "RSA512" (apk-protocol.md §5).
type Signer struct {
	Key       Key
	Algorithm string
}

var signHashes = map[string]crypto.Hash{"RSA": crypto.SHA1, "RSA256": crypto.SHA256, "RSA512": crypto.SHA512}

// SignIndex returns a signed index (from BuildIndex or BuildRepository)
// with its signature replaced by one entry per signer, in order, all in
// one cut signature member, each over the index member. apk uses the
// first entry whose key file it has (apk-protocol.md §5). No signers gives
// an unsigned index.
func SignIndex(t testing.TB, index []byte, signers ...Signer) []byte {
	t.Helper()
	members, err := apkfile.Members(index)
	if err != nil || len(members) == 0 {
		t.Fatalf("apktest: SignIndex: not an index (%d members, %v)", len(members), err)
	}
	indexMember := members[len(members)-1]
	if len(signers) == 0 {
		return slices.Clone(indexMember)
	}
	entries := make([]*entry, 0, len(signers))
	for _, s := range signers {
		h, ok := signHashes[s.Algorithm]
		if !ok {
			t.Fatalf("apktest: SignIndex: unknown algorithm %q", s.Algorithm)
		}
		d := h.New()
		d.Write(indexMember)
		sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key.Private, h, d.Sum(nil))
		if err != nil {
			t.Fatalf("apktest: SignIndex: %v", err)
		}
		entries = append(entries, regular(fmt.Sprintf(".SIGN.%s.%s", s.Algorithm, s.Key.Name), 0o644, sig))
	}
	sigTar, err := tarBytes(true, entries...)
	if err != nil {
		t.Fatalf("apktest: SignIndex: %v", err)
	}
	return slices.Concat(gzipBytes(sigTar), indexMember)
}
