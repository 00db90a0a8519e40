// Package version is what this build of uplink is: stamped at link time
// (make build, the Dockerfile) with
//
//	-ldflags "-X github.com/uplinkhq/uplink/internal/version.Version=v1.2.3
//	          -X github.com/uplinkhq/uplink/internal/version.Revision=abc123
//	          -X github.com/uplinkhq/uplink/internal/version.BuildDate=2026-11-29T14:00:00Z"
//
// and otherwise read from what the Go toolchain records in the binary
// (module version, VCS revision and commit time), so a plain `go build`
// or `go install` still says something true.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by -ldflags -X; init fills whichever is empty from the build info.
var (
	Version   string
	Revision  string
	BuildDate string
)

// unknown is what a value reads when neither the link nor the toolchain
// recorded it (go test binaries, builds outside a repository).
const unknown = "unknown"

func init() {
	bi, ok := debug.ReadBuildInfo()
	Version, Revision, BuildDate = resolve(Version, Revision, BuildDate, bi, ok)
}

// resolve keeps the stamped values and fills the empty ones from bi.
func resolve(ver, rev, date string, bi *debug.BuildInfo, ok bool) (string, string, string) {
	var fVer, fRev, fDate string
	if ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			fVer = v
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				fRev = s.Value
			case "vcs.time":
				fDate = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(fRev) > 12 {
			fRev = fRev[:12]
		}
		if fRev != "" && dirty {
			fRev += "-dirty"
		}
	}
	if fVer == "" {
		fVer = "devel"
	}
	return first(ver, fVer), first(rev, fRev, unknown), first(date, fDate, unknown)
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }

// String is the one line `uplink --version` prints, e.g.
// "uplink v1.2.3 (abc123, built 2026-11-29T14:00:00Z, go1.26.8)".
func String() string {
	return fmt.Sprintf("uplink %s (%s, built %s, %s)", Version, Revision, BuildDate, GoVersion())
}

// UserAgent is what uplink sends as User-Agent: "uplink/<version>".
func UserAgent() string { return "uplink/" + Version }
