package main

import (
	"strings"
	"testing"
)

// TestPublishRefusesNamesJSONWouldMangle: a branch or tag that is not
// valid UTF-8 would reach the server as U+FFFD, a valid name; the CLI
// refuses it before uploading anything (the address is never dialled).
func TestPublishRefusesNamesJSONWouldMangle(t *testing.T) {
	dir := t.TempDir()
	for _, flag := range []string{"--branch", "--tag"} {
		_, stderr, code := runCmd(cmdPublish, dir, "--app", "acme/hello", "--commit", strings.Repeat("a", 40),
			flag, "rel\xffease", "--addr", "http://127.0.0.1:1", "--token", "0123456789abcdef0123")
		if code == 0 || !strings.Contains(stderr, flag) || !strings.Contains(stderr, "UTF-8") {
			t.Errorf("publish %s with invalid UTF-8: exit %d, stderr %q; want a refusal naming %s", flag, code, stderr, flag)
		}
	}
}
