package distribution

import "testing"

func TestRepositoryURL(t *testing.T) {
	got := RepositoryURL("http://uplink:4080/", "feature/x", "acme/hello")
	if want := "http://uplink:4080/distribution/feature%2Fx/acme/hello"; got != want {
		t.Fatalf("RepositoryURL = %q, want %q", got, want)
	}
	r, err := ParsePath("feature%2Fx/acme/hello/x86_64/APKINDEX.tar.gz")
	if err != nil || r.Ref != "feature/x" || r.Org != "acme" || r.App != "hello" {
		t.Fatalf("ParsePath of the URL's path: %+v, %v", r, err)
	}
	for line, want := range map[string]bool{
		got: true,
		"  http://other/distribution/v1/acme/hello/":       true,
		"http://other/distribution/v1/acme/hello2":         false,
		"https://dl-cdn.alpinelinux.org/alpine/v3.20/main": false,
	} {
		if IsRepositoryURL(line, "acme/hello") != want {
			t.Errorf("IsRepositoryURL(%q) = %v, want %v", line, !want, want)
		}
	}
}
