package cache

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/uplinkhq/uplink/storage"
)

// DeploymentKey is where a deployment's storage keeps its identity.
const DeploymentKey = "meta/deployment-id"

// StorageIdentity returns RefsConfig.Identity for drv: a random id kept in
// drv at DeploymentKey, created on first use. The put is conditional, so
// replicas starting at once on an empty store agree on one id; a bucket
// reached through another endpoint or a copy restored elsewhere keeps its
// identity only if the object comes along, which is what decides whether
// two deployments may share pointers.
func StorageIdentity(drv storage.Driver) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		for range 2 {
			id, err := readIdentity(ctx, drv)
			if !storage.IsNotFound(err) {
				return id, err
			}
			id = strings.ToLower(rand.Text())
			_, err = drv.Put(ctx, DeploymentKey, strings.NewReader(id), int64(len(id)), storage.Condition{IfAbsent: true})
			if err == nil {
				return id, nil
			}
			if !errors.Is(err, storage.ErrConditionFailed) {
				return "", fmt.Errorf("creating %s: %w", DeploymentKey, err)
			}
			// Another replica created it first: read theirs.
		}
		return "", fmt.Errorf("%s: created and gone again", DeploymentKey)
	}
}

func readIdentity(ctx context.Context, drv storage.Driver) (string, error) {
	obj, err := drv.Open(ctx, DeploymentKey)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, 129))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", DeploymentKey, err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" || len(id) > 128 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return "", fmt.Errorf("%s holds %q: want 1-128 printable ASCII characters (delete it to make a new one)", DeploymentKey, b)
	}
	return id, nil
}
