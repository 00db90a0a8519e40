package storage

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestContextReader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := ContextReader(ctx, strings.NewReader("abcdef"))
	p := make([]byte, 3)
	if n, err := r.Read(p); n != 3 || err != nil {
		t.Fatalf("read before cancel: %d, %v", n, err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
}

func TestCheckPut(t *testing.T) {
	ctx := context.Background()
	if err := CheckPut(ctx, "x", "a/b", Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	if err := CheckPut(ctx, "x", "../a", Condition{}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad key: %v", err)
	}
	if err := CheckPut(ctx, "x", "a", Condition{IfAbsent: true, IfMatch: "e"}); err == nil || !strings.HasPrefix(err.Error(), "x: put a:") {
		t.Fatalf("both conditions: %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := CheckKey(done, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("done ctx: %v", err)
	}
	if err := CheckPrefix(ctx, ""); err != nil {
		t.Fatalf("empty prefix: %v", err)
	}
}

func TestSortByKey(t *testing.T) {
	infos := []Info{{Key: "a/b"}, {Key: "a.b"}, {Key: "a"}}
	SortByKey(infos)
	if infos[0].Key != "a" || infos[1].Key != "a.b" || infos[2].Key != "a/b" {
		t.Fatalf("order: %v", infos)
	}
}
