package storage

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// What every driver does before touching its backend: refuse what no key
// can name, and a ctx already done.

// CheckKey checks key (ValidKey) and ctx.
func CheckKey(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	return ctx.Err()
}

// CheckPrefix checks a List prefix (ValidPrefix) and ctx.
func CheckPrefix(ctx context.Context, prefix string) error {
	if err := ValidPrefix(prefix); err != nil {
		return err
	}
	return ctx.Err()
}

// CheckPut checks key, cond and ctx; driver names the driver in the
// error.
func CheckPut(ctx context.Context, driver, key string, cond Condition) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if cond.IfAbsent && cond.IfMatch != "" {
		return fmt.Errorf("%s: put %s: IfAbsent and IfMatch are exclusive", driver, key)
	}
	return ctx.Err()
}

// SortByKey sorts infos the way List returns them: by key as a plain
// string.
func SortByKey(infos []Info) {
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
}

// ContextReader reads r until ctx is done, then fails with ctx's error:
// a copy or an upload stops even while r would still give bytes.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
