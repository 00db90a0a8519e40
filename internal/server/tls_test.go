package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"

	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestAdminTLS: with --admin-tls-cert/--admin-tls-key the admin listener
// speaks TLS only.
func TestAdminTLS(t *testing.T) {
	cfg := baseConfig(t)
	var cert *x509.Certificate
	cfg.AdminTLSCert, cfg.AdminTLSKey, cert = testenv.SelfSigned(t, cfg.DataDir)
	n := start(t, cfg)

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + n.srv.AdminAddr() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("https /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := http.Get("http://" + n.srv.AdminAddr() + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("the TLS admin listener answered plain HTTP")
	}
}
