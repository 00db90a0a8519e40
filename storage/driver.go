package storage

import (
	"context"
	"errors"
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

// SeekOffset is the new offset of a seek on an object of size bytes read
// up to cur, for Objects that only track an offset.
func SeekOffset(cur, size, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += cur
	case io.SeekEnd:
		offset += size
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, errors.New("seek: negative offset")
	}
	return offset, nil
}
