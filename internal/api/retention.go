package api

import "time"

// CodeInUse answers a delete of a branch, tag or build that something
// still uses (409); the error's UsedBy names each user.
const CodeInUse = "in_use"

// Retention is an app's retention policy; an absent field takes the
// server's default (uplink serve --keep-builds, --keep-age,
// --keep-operations). KeepAge is a Go duration such as "720h".
type Retention struct {
	KeepBuilds     *int   `json:"keep_builds,omitempty"`
	KeepAge        string `json:"keep_age,omitempty"`
	KeepOperations *int   `json:"keep_operations,omitempty"`
}

// PruneRequest is the body of POST .../prune.
type PruneRequest struct {
	DryRun bool `json:"dry_run"`
}

// PrunedBuild is a build a prune deleted (or, dry, would delete).
type PrunedBuild struct {
	Commit      string    `json:"commit"`
	Branch      string    `json:"branch,omitempty"`
	PublishedAt time.Time `json:"published_at"`
	// Bytes is the size of its artifacts.
	Bytes int64 `json:"bytes"`
	// Reason says why no rule of the policy kept it.
	Reason string `json:"reason"`
}

// PruneReport is the answer of POST .../prune: what went (or would go),
// how many builds stay, and the bytes freed.
type PruneReport struct {
	DryRun  bool          `json:"dry_run"`
	Deleted []PrunedBuild `json:"deleted"`
	Kept    int           `json:"kept"`
	Bytes   int64         `json:"bytes"`
}

// SetTagRequest is the body of PUT .../tags/<tag>.
type SetTagRequest struct {
	Commit string `json:"commit"`
}
