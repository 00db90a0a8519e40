package client_test

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/version"
)

// TestUserAgent: every request says which uplink sends it.
func TestUserAgent(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("User-Agent")
		w.Write([]byte(`{"installations":[]}`))
	}))
	defer srv.Close()
	if _, err := client.New(srv.URL, "t").Installations(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ua := <-got; ua != "uplink/"+version.Version || version.Version == "" {
		t.Fatalf("User-Agent %q, want uplink/%s", ua, version.Version)
	}
}

// TestUnreachable: a refused connection, an unknown host and an untrusted
// certificate are unreachable; an answer of the server, even an error,
// is not. TrustCA makes the certificate trusted.
func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, err = client.New(closed, "t").Installations(ctx)
	if err == nil || !client.Unreachable(err) {
		t.Fatalf("a closed port: %v", err)
	}
	// Watch does not wait for a server it never reached.
	start := time.Now()
	if _, err := client.New(closed, "t").Watch(ctx, "web.1", nil); !client.Unreachable(err) || time.Since(start) > 5*time.Second {
		t.Fatalf("Watch on a closed port: %v after %s", err, time.Since(start))
	}
	_, err = client.New("http://nowhere.invalid:4040", "t").Installations(ctx)
	if err == nil || !client.Unreachable(err) {
		t.Fatalf("an unknown host: %v", err)
	}

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"unauthorized","message":"no"}}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	c := client.New(srv.URL, "t")
	_, err = c.Installations(ctx)
	if err == nil || !client.Unreachable(err) {
		t.Fatalf("an untrusted certificate: %v", err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := c.TrustCA(ca); err != nil {
		t.Fatal(err)
	}
	_, err = c.Installations(ctx)
	if err == nil || client.Unreachable(err) {
		t.Fatalf("an answer (401) through a trusted CA: %v", err)
	}
	if err := c.TrustCA([]byte("not PEM")); err == nil {
		t.Fatal("TrustCA took no certificate")
	}
}
