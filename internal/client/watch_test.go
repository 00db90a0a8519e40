package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestReadEvents: the text/event-stream framing: LF, CRLF or CR line
// ends, a BOM, comments, multi-line data, event names, ids and retry;
// an event cut off by the end of the stream is dropped.
func TestReadEvents(t *testing.T) {
	type ev struct{ name, data string }
	for _, tc := range []struct {
		name, stream string
		want         []ev
		lastID       string
		retry        time.Duration
	}{
		{"lf", "event: operation\ndata: {}\n\n", []ev{{"operation", "{}"}}, "", 0},
		{"crlf and cr", "event: operation\r\ndata: a\r\n\r\ndata: b\r\r", []ev{{"operation", "a"}, {"message", "b"}}, "", 0},
		{"bom, comments, multi-line data", "\xEF\xBB\xBF: hello\nretry: 50\nid: 7\nevent: operation\ndata: {\ndata:   \"x\": 1\ndata: }\n\n: keep-alive\n\n",
			[]ev{{"operation", "{\n  \"x\": 1\n}"}}, "7", 50 * time.Millisecond},
		{"cut in an event", "data: whole\n\nevent: operation\ndata: {\"id\":\"web.1\",\"state\":\"succ", []ev{{"message", "whole"}}, "", 0},
		{"no data, no event", "event: operation\n\nid: 3\n\n", nil, "3", 0},
		{"a NUL in an id is ignored", "id: a\x00b\ndata: x\n\n", []ev{{"message", "x"}}, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &sseState{}
			var got []ev
			lines := 0
			err := readEvents(strings.NewReader(tc.stream), st, func() { lines++ }, func(name string, data []byte) (bool, error) {
				got = append(got, ev{name, string(data)})
				return false, nil
			})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("end of stream: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("events %q, want %q", got, tc.want)
				}
			}
			if st.lastID != tc.lastID || st.retry != tc.retry || lines == 0 {
				t.Fatalf("last id %q retry %v after %d lines", st.lastID, st.retry, lines)
			}
		})
	}
}

// TestReadEventsStop: dispatch ends the reading, and its error is
// returned; an event past maxEvent is a protocol error.
func TestReadEventsStop(t *testing.T) {
	stream := "data: 1\n\ndata: 2\n\ndata: 3\n\n"
	n := 0
	err := readEvents(strings.NewReader(stream), &sseState{}, func() {}, func(string, []byte) (bool, error) {
		n++
		return n == 2, nil
	})
	if err != nil || n != 2 {
		t.Fatalf("stop: %v after %d events", err, n)
	}
	boom := errors.New("boom")
	err = readEvents(strings.NewReader(stream), &sseState{}, func() {}, func(string, []byte) (bool, error) { return false, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("dispatch error: %v", err)
	}
	defer func(n int) { maxEvent = n }(maxEvent)
	maxEvent = 8
	err = readEvents(strings.NewReader("data: 12345\ndata: 67890\n\n"), &sseState{}, func() {}, func(string, []byte) (bool, error) { return false, nil })
	var pe *protocolError
	if !errors.As(err, &pe) || !fatal(err) {
		t.Fatalf("oversized event: %v", err)
	}
}
