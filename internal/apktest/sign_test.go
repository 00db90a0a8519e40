package apktest

import (
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

func TestSignIndex(t *testing.T) {
	key, other := NewKey(t), GenerateKey(t)
	index := BuildRepository(t, key, "x86_64", Package{Name: "hello", Version: "1.0-r0"})["x86_64/APKINDEX.tar.gz"]
	pub := func(k Key) *rsa.PublicKey {
		p, err := artifact.ParsePublicKey(k.PublicPEM())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, alg := range []string{"RSA", "RSA256", "RSA512"} {
		signed := SignIndex(t, index, Signer{other, alg}, Signer{key, alg})
		sigs, _, err := artifact.ReadSignatures(signed)
		if err != nil || len(sigs) != 2 || sigs[0].Algorithm != alg || sigs[0].KeyName != other.Name || sigs[1].KeyName != key.Name {
			t.Fatalf("%s: signatures %+v, %v", alg, sigs, err)
		}
		// Each entry verifies on its own.
		for _, k := range []Key{key, other} {
			if name, err := artifact.VerifyIndex(signed, map[string]*rsa.PublicKey{k.Name: pub(k)}); err != nil || name != k.Name {
				t.Errorf("%s by %s: %q, %v", alg, k.Name, name, err)
			}
		}
	}
	var se *artifact.SignatureError
	if _, err := artifact.VerifyIndex(SignIndex(t, index), map[string]*rsa.PublicKey{key.Name: pub(key)}); !errors.As(err, &se) || se.Reason != "unsigned index" {
		t.Errorf("SignIndex without signers: %v", err)
	}
}
