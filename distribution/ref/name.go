package ref

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// MaxNameLength bounds branch and tag names.
const MaxNameLength = 255

// ValidName checks a branch or tag name by git's check-ref-format rules
// (what a CI system can send us), plus a length bound.
func ValidName(what, s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s %q %s", artifact.ErrInvalid, what, s, why)
	}
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", artifact.ErrInvalid, what)
	case len(s) > MaxNameLength:
		return bad(fmt.Sprintf("is longer than %d bytes", MaxNameLength))
	case !utf8.ValidString(s):
		// Storage keys are UTF-8; anything else would be mangled, not kept.
		return bad("is not valid UTF-8")
	case s == "@":
		return bad("is not a name")
	case s[0] == '-':
		return bad("starts with '-'")
	case strings.HasSuffix(s, ".lock"), strings.HasSuffix(s, "."):
		return bad("ends with '.lock' or '.'")
	case strings.Contains(s, ".."), strings.Contains(s, "@{"):
		return bad("contains '..' or '@{'")
	}
	for part := range strings.SplitSeq(s, "/") {
		if part == "" {
			return bad("has an empty path component")
		}
		if part[0] == '.' {
			return bad("has a component starting with '.'")
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || strings.IndexByte(" ~^:?*[\\", c) >= 0 {
			return bad(fmt.Sprintf("contains the forbidden character %q", c))
		}
	}
	return nil
}
