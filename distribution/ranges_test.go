package distribution

import (
	"net/http"
	"testing"
)

func TestLimitRanges(t *testing.T) {
	const size = 1000
	cases := []struct {
		in   []string // Range header lines
		want []string // after; nil: removed
	}{
		{[]string{"bytes=0-99"}, []string{"bytes=0-99"}},
		{[]string{"bytes=900-"}, []string{"bytes=900-999"}},
		{[]string{"bytes=-100"}, []string{"bytes=900-999"}},
		{[]string{"bytes=-5000"}, []string{"bytes=0-999"}},
		{[]string{"bytes=990-5000"}, []string{"bytes=990-999"}},
		{[]string{"bytes= 0-9 ,\t10-19, ,30-39"}, []string{"bytes=0-19,30-39"}},
		{[]string{"bytes=500-599,0-9,5-14,550-700"}, []string{"bytes=500-700,0-14"}},
		{[]string{"bytes=0-9,2000-3000"}, []string{"bytes=0-9"}}, // the unsatisfiable one dropped
		{[]string{"bytes=0-0,2-2,4-4,6-6"}, nil},                 // 4 > 3 ranges: the whole file
		{[]string{"bytes=0-0,1-1,2-2,3-3,4-4"}, []string{"bytes=0-4"}},
		{[]string{"bytes=0-9", "bytes=10-19"}, nil},
		// Left for http.ServeContent to answer 416 or ignore.
		{[]string{"bytes=2000-3000"}, []string{"bytes=2000-3000"}},
		{[]string{"bytes=-0"}, []string{"bytes=-0"}},
		{[]string{"bytes=9-1"}, []string{"bytes=9-1"}},
		{[]string{"bytes=a-b"}, []string{"bytes=a-b"}},
		{[]string{"bytes=+1-2"}, []string{"bytes=+1-2"}},
		{[]string{"items=0-9"}, []string{"items=0-9"}},
		{[]string{"bytes=1-2-3"}, []string{"bytes=1-2-3"}},
	}
	for _, c := range cases {
		r := &http.Request{Header: http.Header{"Range": c.in}}
		limitRanges(r, size, 3)
		got := r.Header["Range"]
		if len(got) != len(c.want) || len(got) == 1 && got[0] != c.want[0] {
			t.Errorf("Range %q: %q, want %q", c.in, got, c.want)
		}
	}
	r := &http.Request{Header: http.Header{}}
	limitRanges(r, size, 3)
	if _, ok := r.Header["Range"]; ok {
		t.Error("a Range header appeared")
	}
}
