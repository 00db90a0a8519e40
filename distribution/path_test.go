package distribution

import (
	"net/http"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	r, err := ParsePath("feature%2Fx/acme/web/x86_64/hello+extra-1.0-r0.apk")
	if err != nil {
		t.Fatal(err)
	}
	want := Request{Ref: "feature/x", Org: "acme", App: "web", Arch: "x86_64", File: "hello+extra-1.0-r0.apk"}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if r, err = ParsePath("main/acme/web/aarch64/APKINDEX.tar.gz"); err != nil || r.Ref != "main" || r.File != "APKINDEX.tar.gz" {
		t.Fatalf("index: %+v %v", r, err)
	}
}

// Every hostile path is refused before anything is looked up, with 400 for
// a malformed one and 404 for one that is well formed but cannot exist.
func TestParsePathHostile(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"main/../../etc/passwd", http.StatusBadRequest},
		{"main/acme/web/x86_64/..", http.StatusBadRequest},
		{"main/acme/../x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/%2e%2e/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/%2e%2e%2f%2e%2e%2fsecret.apk", http.StatusBadRequest},
		{"main/acme%2f..%2f..%2fetc/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/sub%2Fhello-1.0-r0.apk", http.StatusBadRequest},
		{"..%2F..%2Fetc/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"%2e%2e/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/hello%00-1.0-r0.apk", http.StatusBadRequest},
		{"main%00/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/..%5C..%5Chello-1.0.apk", http.StatusBadRequest},
		{"main/acme\\evil/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/.hidden.apk", http.StatusBadRequest},
		{"main/.acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme//web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/", http.StatusBadRequest},
		{"/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/%zz.apk", http.StatusBadRequest},
		{"main/acme/web/x86_64/hello%20world.apk", http.StatusBadRequest},
		{"main/" + long + "/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/" + strings.Repeat("a", 3000) + ".apk", http.StatusBadRequest},
		{strings.Repeat("a", 256) + "/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"ma~in/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main.lock/acme/web/x86_64/APKINDEX.tar.gz", http.StatusBadRequest},
		{"main/acme/web/x86_64/hello.txt", http.StatusNotFound},
		{"main/acme/web/x86_64/APKINDEX.tar", http.StatusNotFound},
		{"main/acme/web/x86_64", http.StatusNotFound},
		{"feature/x/acme/web/x86_64/APKINDEX.tar.gz", http.StatusNotFound},
		{"main/acme/web/x86_64/a/APKINDEX.tar.gz", http.StatusNotFound},
	} {
		_, err := ParsePath(tc.path)
		pe, ok := err.(*PathError)
		if !ok || pe.Status != tc.status || pe.Reason == "" {
			t.Errorf("ParsePath(%q) = %v, want a %d", tc.path, err, tc.status)
		}
	}
}

// FuzzParsePath checks that whatever parses is safe to join into a
// storage key: no traversal, no separators or control bytes in a name.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"main/acme/web/x86_64/APKINDEX.tar.gz",
		"feature%2Fx/acme/web/x86_64/hello-1.0-r0.apk",
		"main/acme/web/%2e%2e/APKINDEX.tar.gz",
		"0123456789abcdef0123456789abcdef01234567/a/b/c/d.apk",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r, err := ParsePath(path)
		if err != nil {
			pe, ok := err.(*PathError)
			if !ok || (pe.Status != http.StatusBadRequest && pe.Status != http.StatusNotFound) {
				t.Fatalf("ParsePath(%q): unexpected error %v", path, err)
			}
			return
		}
		for _, s := range []string{r.Org, r.App, r.Arch, r.File} {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") || s[0] == '.' {
				t.Fatalf("ParsePath(%q) let through the name %q", path, s)
			}
		}
		if strings.Contains(r.Ref, "..") || strings.ContainsAny(r.Ref, "\\\x00") || r.Ref[0] == '/' {
			t.Fatalf("ParsePath(%q) let through the ref %q", path, r.Ref)
		}
	})
}
