//go:build !chaoshook

package server

import "github.com/uplinkhq/uplink/storage"

// chaosStorage is the identity outside the chaos tests' build (see
// chaos_on.go).
func chaosStorage(d storage.Driver) storage.Driver { return d }
