package artifact_test

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/apkfile"
	"github.com/uplinkhq/uplink/internal/apktest"
)

func controlChecksum(t *testing.T, apk []byte) string {
	t.Helper()
	got, err := artifact.PackageChecksum(bytes.NewReader(apk))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestPackageChecksumIsIndexC(t *testing.T) {
	key := apktest.NewKey(t)
	b := apktest.BuildPackage(t, key, apktest.Package{Name: "hello", Version: "1.0-r0", Arch: "x86_64"})
	if got := controlChecksum(t, b.APK); got != b.Checksum() {
		t.Fatalf("PackageChecksum = %s, the index C: is %s", got, b.Checksum())
	}
	// Without its signature member the control member is the first.
	members, err := apkfile.Members(b.APK)
	if err != nil {
		t.Fatal(err)
	}
	if got := controlChecksum(t, bytes.Join(members[1:], nil)); got != b.Checksum() {
		t.Fatalf("unsigned: PackageChecksum = %s, want %s", got, b.Checksum())
	}
	for _, bad := range [][]byte{nil, []byte("not gzip at all"), b.APK[:40]} {
		if _, err := artifact.PackageChecksum(bytes.NewReader(bad)); err == nil {
			t.Errorf("PackageChecksum(%.12q) accepted", bad)
		}
	}
}

func TestVerifyIndex(t *testing.T) {
	key, other := apktest.NewKey(t), apktest.GenerateKey(t)
	index := apktest.BuildRepository(t, key, "x86_64", apktest.Package{Name: "hello", Version: "1.0-r0"})["x86_64/APKINDEX.tar.gz"]
	pub := func(k apktest.Key) *rsa.PublicKey {
		p, err := artifact.ParsePublicKey(k.PublicPEM())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	name, err := artifact.VerifyIndex(index, map[string]*rsa.PublicKey{other.Name: pub(other), key.Name: pub(key)})
	if err != nil || name != key.Name {
		t.Fatalf("VerifyIndex = %q, %v; want %q", name, err, key.Name)
	}
	var se *artifact.SignatureError
	// apk opens the key by the exact name the signature names.
	_, err = artifact.VerifyIndex(index, map[string]*rsa.PublicKey{"renamed.rsa.pub": pub(key)})
	if !errors.As(err, &se) || se.Reason != "UNTRUSTED signature" || len(se.Signers) != 1 || se.Signers[0] != key.Name {
		t.Fatalf("a key under another name: %v", err)
	}
	// The right name with another key's bytes.
	if _, err := artifact.VerifyIndex(index, map[string]*rsa.PublicKey{key.Name: pub(other)}); !errors.As(err, &se) || se.Reason != "BAD signature by "+key.Name {
		t.Fatalf("another key under the signature's name: %v", err)
	}
	if _, err := artifact.VerifyIndex(apktest.Tamper(index), map[string]*rsa.PublicKey{key.Name: pub(key)}); !errors.As(err, &se) {
		t.Fatalf("a tampered index: %v", err)
	}
	members, _ := apkfile.Members(index)
	if _, err := artifact.VerifyIndex(members[1], map[string]*rsa.PublicKey{key.Name: pub(key)}); !errors.As(err, &se) || se.Reason != "unsigned index" {
		t.Fatalf("an unsigned index: %v", err)
	}
	if _, err := artifact.ParsePublicKey([]byte("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n")); err == nil {
		t.Fatal("ParsePublicKey accepted an RSA PUBLIC KEY block, which apk does not load")
	}
}
