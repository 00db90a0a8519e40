package distribution

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// DefaultMaxRanges is how many ranges, once coalesced, one request may
// ask for. apk never sends Range (apk-protocol.md §7.1); curl, wget and
// download managers send one, rarely a few.
const DefaultMaxRanges = 16

// byteRange is [start, end], both inclusive, within the file.
type byteRange struct{ start, end int64 }

// limitRanges rewrites r's Range header before http.ServeContent sees it,
// since ServeContent reads storage once per range (a remote object seeks,
// so 5,000 ranges were 5,000 GETs): overlapping and adjacent ranges are
// merged (RFC 9110 §14.2 and §15.3.7.2 allow it), and beyond limit merged
// ranges the header is dropped, so the whole file is answered with a 200
// (§14.2: a server MAY ignore Range). A 200 rather than a 416: a client
// that asks for many pieces still gets correct bytes, and the whole file
// costs one storage read, the same as any download. A header this parser
// does not understand, or whose ranges are all unsatisfiable, is left for
// ServeContent to answer (416 or 200, as before).
func limitRanges(r *http.Request, size int64, limit int) {
	v := r.Header["Range"]
	if v == nil {
		return
	}
	if len(v) != 1 || limit <= 0 {
		delete(r.Header, "Range")
		return
	}
	ranges, ok := parseRanges(v[0], size)
	if !ok || len(ranges) == 0 {
		return
	}
	ranges = coalesce(ranges)
	if len(ranges) > limit {
		delete(r.Header, "Range")
		return
	}
	var b strings.Builder
	b.WriteString("bytes=")
	for i, br := range ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(br.start, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(br.end, 10))
	}
	r.Header["Range"] = []string{b.String()}
}

// parseRanges parses a bytes ranges-specifier (RFC 9110 §14.1.2) against a
// file of size bytes, leaving out unsatisfiable ranges. ok is false for
// anything malformed.
func parseRanges(s string, size int64) (ranges []byteRange, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	if !found {
		return nil, false
	}
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.Trim(part, " \t")
		if part == "" {
			continue // empty list elements are allowed (RFC 9110 §5.6.1)
		}
		first, last, found := strings.Cut(part, "-")
		if !found {
			return nil, false
		}
		if first == "" {
			// A suffix: the last n bytes.
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 || !digits(last) {
				return nil, false
			}
			if n == 0 || size == 0 {
				continue
			}
			ranges = append(ranges, byteRange{max(size-n, 0), size - 1})
			continue
		}
		start, err := strconv.ParseInt(first, 10, 64)
		if err != nil || !digits(first) {
			return nil, false
		}
		end := size - 1
		if last != "" {
			if end, err = strconv.ParseInt(last, 10, 64); err != nil || !digits(last) || end < start {
				return nil, false
			}
			end = min(end, size-1)
		}
		if start >= size {
			continue
		}
		ranges = append(ranges, byteRange{start, end})
	}
	return ranges, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// coalesce merges overlapping and adjacent ranges. The merged ranges keep
// the order in which the first of their pieces was asked for, as RFC 9110
// §15.3.7.2 asks of a multipart response.
func coalesce(ranges []byteRange) []byteRange {
	type piece struct {
		byteRange
		first int // position of the earliest piece in the request
	}
	sorted := make([]piece, len(ranges))
	for i, br := range ranges {
		sorted[i] = piece{br, i}
	}
	slices.SortFunc(sorted, func(a, b piece) int {
		if a.start != b.start {
			return cmp.Compare(a.start, b.start)
		}
		return cmp.Compare(a.end, b.end)
	})
	merged := sorted[:1]
	for _, p := range sorted[1:] {
		last := &merged[len(merged)-1]
		if p.start > last.end+1 {
			merged = append(merged, p)
			continue
		}
		last.end = max(last.end, p.end)
		last.first = min(last.first, p.first)
	}
	slices.SortFunc(merged, func(a, b piece) int { return a.first - b.first })
	out := make([]byteRange, len(merged))
	for i, p := range merged {
		out[i] = p.byteRange
	}
	return out
}
