package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolveKeepsStampedValues(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "ffffffffffffffffffffffffffffffffffffffff"},
		{Key: "vcs.time", Value: "2020-01-01T00:00:00Z"},
	}}
	v, r, d := resolve("v1.2.3", "abc123", "2026-11-29T14:00:00Z", bi, true)
	if v != "v1.2.3" || r != "abc123" || d != "2026-11-29T14:00:00Z" {
		t.Fatalf("stamped values replaced: %q %q %q", v, r, d)
	}
}

func TestResolveFallsBackToBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261129140000-0123456789ab+dirty"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-11-29T14:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	v, r, d := resolve("", "", "", bi, true)
	if v != "v0.0.0-20261129140000-0123456789ab+dirty" {
		t.Errorf("version %q, want the module version", v)
	}
	if r != "0123456789ab-dirty" {
		t.Errorf("revision %q, want the short vcs.revision marked dirty", r)
	}
	if d != "2026-11-29T14:00:00Z" {
		t.Errorf("date %q, want vcs.time", d)
	}

	// Only the date stamped: the rest still comes from the build info.
	_, r, d = resolve("", "", "2030-01-01", bi, true)
	if r != "0123456789ab-dirty" || d != "2030-01-01" {
		t.Errorf("partly stamped: revision %q date %q", r, d)
	}
}

func TestResolveWithoutBuildInfo(t *testing.T) {
	for _, bi := range []*debug.BuildInfo{nil, {Main: debug.Module{Version: "(devel)"}}} {
		v, r, d := resolve("", "", "", bi, bi != nil)
		if v != "devel" || r != unknown || d != unknown {
			t.Errorf("build info %+v: got %q %q %q, want devel unknown unknown", bi, v, r, d)
		}
	}
	// A clean tree is not marked dirty.
	bi := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}}
	if _, r, _ := resolve("", "", "", bi, true); r != "abc" {
		t.Errorf("clean revision %q, want abc", r)
	}
}

func TestStringAndUserAgent(t *testing.T) {
	old := [3]string{Version, Revision, BuildDate}
	t.Cleanup(func() { Version, Revision, BuildDate = old[0], old[1], old[2] })
	Version, Revision, BuildDate = "v1.2.3", "abc123", "2026-11-29T14:00:00Z"

	want := "uplink v1.2.3 (abc123, built 2026-11-29T14:00:00Z, " + runtime.Version() + ")"
	if got := String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := UserAgent(); got != "uplink/v1.2.3" {
		t.Errorf("UserAgent() = %q", got)
	}
}

// The test binary itself is not stamped: the package still reads as
// something, never empty strings.
func TestInitFillsEveryValue(t *testing.T) {
	for name, v := range map[string]string{"Version": Version, "Revision": Revision, "BuildDate": BuildDate} {
		if strings.TrimSpace(v) == "" {
			t.Errorf("%s is empty", name)
		}
	}
}
