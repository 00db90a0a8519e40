package testenv

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestS3StopFreeze checks the failures chaos tests rely on: a frozen S3
// holds requests without answering, a stopped one refuses them, and both
// come back with their objects.
func TestS3StopFreeze(t *testing.T) {
	s := StartS3(t)
	b := s.NewBucket(t)
	if _, err := s.client.PutObject(t.Context(), b, "k", bytes.NewReader([]byte("v")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	stat := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, err := s.client.StatObject(ctx, b, "k", minio.StatObjectOptions{})
		return err
	}

	s.Freeze()
	start := time.Now()
	if err := stat(500 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stat on a frozen S3: %v after %v, want the caller's deadline", err, time.Since(start))
	}
	s.Thaw()
	if err := stat(10 * time.Second); err != nil {
		t.Fatalf("stat after Thaw: %v", err)
	}

	s.Stop()
	if c, err := net.DialTimeout("tcp", s.Endpoint, time.Second); err == nil {
		c.Close()
		t.Fatal("a stopped S3 accepts connections")
	}
	s.Start()
	if err := stat(10 * time.Second); err != nil {
		t.Fatalf("stat after Start: %v", err)
	}
}
