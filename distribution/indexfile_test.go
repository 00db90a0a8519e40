package distribution_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
)

// A cached index sent from its file (by sendfile over a real connection)
// reaches every one of many concurrent clients whole, again and again,
// and leaves nothing in the directory.
func TestIndexSentFromFile(t *testing.T) {
	dir := t.TempDir()
	e, path := setupIndexFiles(t, 1<<20, dir)
	srv := httptest.NewServer(e)
	defer srv.Close()
	want := bytes.Repeat([]byte{0x5a}, 1<<20)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan string, 32*8)
	for range 32 {
		wg.Go(func() {
			for range 8 {
				resp, err := client.Get(srv.URL + path)
				if err != nil {
					errs <- err.Error()
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
					errs <- resp.Status + ": not the index's bytes"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("the index cache left %v in its directory (%v)", ents, err)
	}
}
