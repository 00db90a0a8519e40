package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// s3Env is the environment of an `uplink serve` on bucket of gw, reached
// at endpoint (gw.Endpoint, or a proxy in front of it), with Redis at
// redisAddr unless it is empty, and the replicas' token.
func s3Env(gw *testenv.S3, endpoint, bucket, redisAddr string) []string {
	env := []string{
		"UPLINK_STORAGE=s3", "UPLINK_S3_ENDPOINT=" + endpoint, "UPLINK_S3_BUCKET=" + bucket,
		"UPLINK_S3_REGION=" + gw.Region, "UPLINK_S3_ACCESS_KEY=" + gw.AccessKey, "UPLINK_S3_SECRET_KEY=" + gw.SecretKey,
		"UPLINK_S3_TLS=false", "UPLINK_S3_PATH_STYLE=true",
		"UPLINK_ADMIN_TOKEN=" + replicaToken, "UPLINK_DISTRIBUTION_URL=http://uplink:4080", "UPLINK_ACCESS_LOG=false",
	}
	if redisAddr != "" {
		env = append(env, "UPLINK_REDIS=redis://"+redisAddr+"/0")
	}
	return env
}

// listenEnv picks two free loopback ports for the distribution and admin
// listeners: their variables, the distribution's base URL and the admin
// address.
func listenEnv(t *testing.T) (env []string, dist, admin string) {
	dp, ap := twoPorts(t)
	admin = "127.0.0.1:" + strconv.Itoa(ap)
	return []string{"UPLINK_LISTEN=127.0.0.1:" + strconv.Itoa(dp), "UPLINK_ADMIN_LISTEN=" + admin},
		"http://127.0.0.1:" + strconv.Itoa(dp), admin
}

// waitReady waits until p answers /readyz through api, failing the test
// with p's output if it exits or takes over a minute.
func waitReady(t *testing.T, p *serveProc, api *client.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for api.Get(context.Background(), "/readyz", &map[string]string{}) != nil {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("uplink did not start:\n%s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
