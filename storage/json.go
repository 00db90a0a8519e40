package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ReadJSON decodes the JSON object under key into v and returns its ETag.
// A read that overlapped a write (the driver reports the object changed
// under it) is retried.
func ReadJSON(ctx context.Context, g Getter, key string, v any) (etag string, err error) {
	for range 5 {
		if etag, err = readJSON(ctx, g, key, v); !errors.Is(err, ErrConditionFailed) {
			break
		}
	}
	return etag, err
}

func readJSON(ctx context.Context, g Getter, key string, v any) (string, error) {
	obj, err := g.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	if err := json.NewDecoder(obj).Decode(v); err != nil {
		return "", fmt.Errorf("decoding %s: %w", key, err)
	}
	return obj.Info().ETag, nil
}

// WriteJSON stores v as JSON under key.
func WriteJSON(ctx context.Context, p Putter, key string, v any, cond Condition) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.Put(ctx, key, bytes.NewReader(b), int64(len(b)), cond)
	return err
}

// UpdateJSON is a compare-and-swap loop on one JSON object: fn sees the
// current value (exists is false when there is none) and says whether to
// write it back; when another writer got there first, it runs again on
// what that writer stored.
func UpdateJSON[T any](ctx context.Context, d Driver, key string, fn func(cur *T, exists bool) (bool, error)) error {
	for attempt := 0; ; attempt++ {
		var cur T
		etag, err := ReadJSON(ctx, d, key, &cur)
		exists := err == nil
		switch {
		case err == nil, IsNotFound(err):
			write, err := fn(&cur, exists)
			if err != nil || !write {
				return err
			}
			err = WriteJSON(ctx, d, key, &cur, Condition{IfAbsent: !exists, IfMatch: etag})
			if !errors.Is(err, ErrConditionFailed) {
				return err
			}
		case !errors.Is(err, ErrConditionFailed):
			return err
		}
		// Lost the race: back off a little, with jitter, and read again.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(1+rand.IntN(1<<min(attempt, 6))) * time.Millisecond):
		}
	}
}
