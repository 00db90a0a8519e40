// Package s3test opens the S3 driver on a versitygw that testenv started,
// for the tests of packages that store through it. (testenv cannot: the
// s3 package's own tests import testenv.)
package s3test

import (
	"testing"

	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
)

// New is the S3 driver on bucket of gw.
func New(t testing.TB, gw *testenv.S3, bucket string) *s3.Driver {
	t.Helper()
	d, err := s3.New(t.Context(), s3.Config{Endpoint: gw.Endpoint, Bucket: bucket, Region: gw.Region,
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
