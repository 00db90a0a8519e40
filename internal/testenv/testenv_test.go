package testenv

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d not usable: %v", p, err)
	}
	l.Close()
}

func TestRedisStopStart(t *testing.T) {
	r := StartRedis(t)
	if err := PingRedis(r.Addr); err != nil {
		t.Fatalf("PING after StartRedis: %v", err)
	}
	r.Stop()
	if err := PingRedis(r.Addr); err == nil {
		t.Fatal("PING answered after Stop")
	}
	r.Start()
	if err := PingRedis(r.Addr); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

func TestS3(t *testing.T) {
	s := StartS3(t)
	b1, b2 := s.NewBucket(t), s.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket returned %q twice", b1)
	}
	ctx := t.Context()
	if _, err := s.client.PutObject(ctx, b1, "k", bytes.NewReader([]byte("v")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := s.client.GetObject(ctx, b1, "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if b, err := io.ReadAll(obj); err != nil || string(b) != "v" {
		t.Fatalf("GetObject = %q, %v", b, err)
	}
	if _, err := s.client.StatObject(ctx, b2, "k", minio.StatObjectOptions{}); err == nil {
		t.Fatal("buckets are not isolated")
	}
}
