package artifact_test

import (
	"bytes"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/apktest"
)

func TestReadIndex(t *testing.T) {
	key := apktest.NewKey(t)
	files := apktest.BuildRepository(t, key, "x86_64",
		apktest.Package{Name: "hello", Version: "1.0-r0", Depends: []string{"libhello"}},
		apktest.Package{Name: "libhello", Version: "2.1-r3", Arch: "noarch"},
	)
	got, err := artifact.ReadIndex(bytes.NewReader(files["x86_64/APKINDEX.tar.gz"]))
	if err != nil {
		t.Fatal(err)
	}
	hello, lib := files["x86_64/hello-1.0-r0.apk"], files["noarch/libhello-2.1-r3.apk"]
	want := []artifact.IndexEntry{
		{Name: "hello", Version: "1.0-r0", Arch: "x86_64", Checksum: controlChecksum(t, hello), Size: int64(len(hello))},
		{Name: "libhello", Version: "2.1-r3", Arch: "noarch", Checksum: controlChecksum(t, lib), Size: int64(len(lib))},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range [][]byte{nil, []byte("not gzip"), files["x86_64/hello-1.0-r0.apk"]} {
		if _, err := artifact.ReadIndex(bytes.NewReader(bad)); err == nil {
			t.Errorf("ReadIndex(%.10q) accepted", bad)
		}
	}
}
