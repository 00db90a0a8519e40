// Package apktest builds real, signed Alpine APK v2 packages and repositories
// in Go and installs from them with an independent client
// (github.com/chainguard-dev/go-apk), for end-to-end tests of APK serving.
//
// The formats follow /work/shared/reference/apk-protocol.md: .apk files are
// three gzip members (signature, control, data) and APKINDEX.tar.gz is a
// signature member followed by the index member. Everything is signed with
// RSA PKCS#1 v1.5 over SHA-1 (".SIGN.RSA."), the only scheme go-apk verifies.
//
// Install and Index add the apk-tools checks go-apk lacks: the signature
// entry must name the trusted key file, a downloaded package's control
// member must hash to the index C: and its data to the .PKGINFO datahash,
// packages are fetched below their own A: arch, and 307/308 redirects fail.
package apktest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"testing"
)

// Key is an APK signing key. Name is the public key file name clients look up
// in /etc/apk/keys; it must end in ".rsa.pub" because go-apk only accepts
// signature entries matching `^\.SIGN\.RSA\.(.*\.rsa\.pub)$`.
type Key struct {
	Private *rsa.PrivateKey
	Name    string
}

var (
	sharedKeyOnce sync.Once
	sharedKey     Key
	sharedKeyErr  error
)

// NewKey returns a 2048-bit RSA key shared by the whole test process, since
// generating one costs noticeable CPU. Use GenerateKey for a distinct key.
func NewKey(t testing.TB) Key {
	t.Helper()
	sharedKeyOnce.Do(func() { sharedKey, sharedKeyErr = generateKey() })
	if sharedKeyErr != nil {
		t.Fatalf("apktest: generate key: %v", sharedKeyErr)
	}
	return sharedKey
}

// GenerateKey returns a fresh 2048-bit RSA key, e.g. for an untrusted signer.
func GenerateKey(t testing.TB) Key {
	t.Helper()
	k, err := generateKey()
	if err != nil {
		t.Fatalf("apktest: generate key: %v", err)
	}
	return k
}

func generateKey() (Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Key{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return Key{}, err
	}
	// abuild names keys <email>-<8 hex>; derive the hex from the key so
	// distinct keys get distinct names.
	sum := sha1.Sum(der)
	return Key{Private: priv, Name: fmt.Sprintf("uplink-test-%x.rsa.pub", sum[:4])}, nil
}

// PublicPEM returns the public key as an SPKI "BEGIN PUBLIC KEY" PEM, the
// only form apk-tools (PEM_read_bio_PUBKEY) and go-apk (ParsePKIXPublicKey) load.
func (k Key) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	if err != nil {
		panic(err) // cannot happen for an *rsa.PublicKey
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// PrivatePEM returns the private key as PKCS#1 "BEGIN RSA PRIVATE KEY", the
// form go-apk's and abuild's signers read.
func (k Key) PrivatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Private)})
}
